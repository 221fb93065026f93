"""Run `beansproxy` in front of a production-shaped cluster of real `beansdb` nodes.

* `Cluster`: N_MAINS storage nodes plus backups, each from its own conf dir (global.yaml with its
  own ports and home; route.yaml = the whole cluster route, so every node serves exactly its
  buckets). Default layout = the spread route of proxy.md §4.8: bucket b lives on nodes b mod 5,
  (b+1) mod 5, (b+2) mod 5, so no node holds every bucket; one backup.
* `Proxy`: writes DIR/proxy.yaml + DIR/route.yaml, starts `beansproxy -confdir DIR` on ephemeral
  ports, waits until `version` answers; helpers for the HTTP admin and /buffer/.
* Hash helpers mirroring proxy.md §3.3/§3.4 (signed FNV-1a buckets, rendezvous replica order), so
  tests can predict where a key must live.

The binary is $BEANSPROXY_BIN or <repo>/target/debug/beansproxy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import Dict, List, Optional, Tuple

import yaml

import nodeproc
from nodeproc import BUFFER_KINDS, RawClient, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def find_proxy_binary() -> Optional[str]:
    path = os.environ.get("BEANSPROXY_BIN") or os.path.join(REPO, "target", "debug", "beansproxy")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


# The spread route of proxy.md §4.8 on its fixed example ports (config tests that never
# start the nodes).
SPREAD_ROUTE_YAML = """numbucket: 16
main:
- {addr: 127.0.0.1:7910, buckets: [0, 3, 4, 5, 8, 9, a, d, e, f]}
- {addr: 127.0.0.1:7920, buckets: [0, 1, 4, 5, 6, 9, a, b, e, f]}
- {addr: 127.0.0.1:7930, buckets: [0, 1, 2, 5, 6, 7, a, b, c, f]}
- {addr: 127.0.0.1:7940, buckets: [1, 2, 3, 6, 7, 8, b, c, d]}
- {addr: 127.0.0.1:7950, buckets: [2, 3, 4, 7, 8, 9, c, d, e]}
backup: [127.0.0.1:7960]
"""


# ----- hashing (proxy.md §3.3, §3.4)

def fnv1a_signed(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        sb = b - 256 if b >= 128 else b
        h ^= sb & 0xFFFFFFFF
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def fmix64(k: int) -> int:
    m = 0xFFFFFFFFFFFFFFFF
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & m
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & m
    k ^= k >> 33
    return k


def real_key(key: bytes) -> bytes:
    if key.startswith(b"@"):
        return key
    if key.startswith(b"??"):
        return key[2:]
    if key.startswith(b"?"):
        return key[1:]
    return key


def bucket_of(key: bytes, numbucket: int = 16) -> int:
    if numbucket == 1:
        return 0
    w = 4 if numbucket == 16 else 8
    return fnv1a_signed(real_key(key)) >> (32 - w)


def natural_order(key: bytes, addrs: List[str]) -> List[str]:
    kh = fnv1a64(real_key(key))
    weighted = [(fmix64(kh ^ fnv1a64(a.encode())), a) for a in addrs]
    weighted.sort(key=lambda x: (-x[0], x[1].encode()))
    return [a for _, a in weighted]


# ----- processes

def default_proxy_yaml(port: int, webport: int, workdir: str) -> dict:
    """A complete proxy.yaml with test-friendly health timings (fast probes)."""
    return {
        "proxy": {
            "listen": "127.0.0.1", "port": port, "webport": webport, "threads": 4,
            "errorlog": os.path.join(workdir, "proxy-error.log"),
            "accesslog": os.path.join(workdir, "proxy-access.log"),
            "hostname": "127.0.0.1", "staticdir": "/var/lib/gobeansproxy",
            "zkservers": [], "zkpath": "",
        },
        "mc": {
            "max_key_len": 250, "max_req": 64, "body_max_str": "50M", "body_big_str": "5M",
            "body_c_str": "0K", "timeout_ms": 3000,
        },
        "dstore": {
            "n": 3, "w": 2, "r": 1, "max_free_conns_per_host": 20, "connect_timeout_ms": 300,
            "write_timeout_ms": 2000, "read_timeout_ms": 2000, "dial_fail_silence_ms": 300,
            "response_time_seconds": 10, "error_seconds": 10, "max_connect_errors": 10,
            "score_deviation": 10000, "item_size_stats": 4096, "response_time_min": 4000,
            "probe_interval_ms": 200, "probe_max_interval_ms": 1000, "enable": True,
        },
        "cassandra": {"enable": False},
    }


class Proxy:
    """One `beansproxy` process with its own conf dir and ports."""

    def __init__(self, binary: str, workdir: str, route: dict, overrides: Optional[dict] = None,
                 env: Optional[Dict[str, str]] = None):
        self.binary, self.workdir, self.route = binary, workdir, route
        self.overrides = overrides or {}
        self.env = dict(env or {})
        self.confdir = os.path.join(workdir, "conf")
        self.proc: Optional[subprocess.Popen] = None
        self.port = self.webport = 0
        os.makedirs(self.confdir, exist_ok=True)

    @property
    def route_path(self) -> str:
        return os.path.join(self.confdir, "route.yaml")

    @property
    def errorlog(self) -> str:
        return os.path.join(self.workdir, "proxy-error.log")

    @property
    def accesslog(self) -> str:
        return os.path.join(self.workdir, "proxy-access.log")

    def write_route(self, route: dict) -> None:
        with open(self.route_path, "w") as f:
            yaml.safe_dump(route, f, default_flow_style=False, sort_keys=False)

    def write_conf(self) -> None:
        conf = nodeproc.deep_merge(default_proxy_yaml(self.port, self.webport, self.workdir), self.overrides)
        with open(os.path.join(self.confdir, "proxy.yaml"), "w") as f:
            yaml.safe_dump(conf, f, default_flow_style=False, sort_keys=False)
        self.write_route(self.route)

    def log_tail(self, n: int = 40) -> str:
        out = []
        for p in (self.errorlog, os.path.join(self.workdir, "proxy.stderr")):
            if os.path.exists(p):
                with open(p, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()[-n:]
                out.append("--- %s\n%s" % (os.path.basename(p), "\n".join(lines)))
        return "\n".join(out)

    def start(self, timeout: float = 30.0, keep_ports: bool = False) -> "Proxy":
        if not (keep_ports and self.port):
            self.port, self.webport = free_port(), free_port()
            while self.webport == self.port:
                self.webport = free_port()
        self.write_conf()
        out = open(os.path.join(self.workdir, "proxy.stdout"), "ab")
        err = open(os.path.join(self.workdir, "proxy.stderr"), "ab")
        penv = dict(os.environ)
        penv.update(self.env)
        self.proc = subprocess.Popen([self.binary, "-confdir", self.confdir], cwd=self.workdir,
                                     stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=penv)
        out.close()
        err.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("beansproxy exited with %s\n%s" % (self.proc.returncode, self.log_tail()))
            try:
                with RawClient(self.port, timeout=2.0) as c:
                    if c.cmd(b"version").startswith(b"VERSION "):
                        return self
            except (OSError, ConnectionError):
                time.sleep(0.05)
        raise RuntimeError("beansproxy not ready\n%s" % self.log_tail())

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> Optional[int]:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def raw(self, timeout: float = 10.0) -> RawClient:
        return RawClient(self.port, timeout=timeout)

    def mc(self, **kw):
        return nodeproc.mc_client(self.port, **kw)

    def http(self, path: str, method: str = "GET", timeout: float = 10.0) -> Tuple[int, bytes]:
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.webport, path), method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def http_json(self, path: str):
        status, body = self.http(path)
        assert status == 200, (path, status, body[:200])
        return json.loads(body)

    def buffers(self) -> dict:
        return self.http_json("/buffer/")

    def assert_buffers_zero(self, timeout: float = 2.0) -> None:
        deadline = time.time() + timeout
        while True:
            b = self.buffers()
            ok = set(b) == set(BUFFER_KINDS) and all(b[k]["Count"] == 0 and b[k]["Size"] == 0 for k in BUFFER_KINDS)
            if ok:
                return
            if time.time() >= deadline:
                raise AssertionError("/buffer/ not back to zero: %s" % json.dumps(b))
            time.sleep(0.05)

    def hosts(self) -> dict:
        return self.http_json("/api/hosts")

    def wait_hosts_up(self, addrs: Optional[List[str]] = None, timeout: float = 10.0) -> None:
        deadline = time.time() + timeout
        while True:
            h = self.hosts()
            want = addrs or list(h)
            if all(h.get(a, {}).get("up") for a in want):
                return
            if time.time() >= deadline:
                raise AssertionError("hosts not up: %s" % json.dumps(h))
            time.sleep(0.05)


def spread_layout(nmains: int = 5, numbucket: int = 16, per_bucket: int = 3) -> List[List[int]]:
    """buckets of main i: those b with i in {b mod n, (b+1) mod n, …}."""
    owned: List[List[int]] = [[] for _ in range(nmains)]
    for b in range(numbucket):
        for j in range(per_bucket):
            owned[(b + j) % nmains].append(b)
    return [sorted(x) for x in owned]


class Cluster:
    """Storage nodes (mains + backups) sharing one route, and a proxy in front."""

    def __init__(self, node_binary: str, proxy_binary: str, workdir: str, nmains: int = 5,
                 nbackups: int = 1, numbucket: int = 16, per_bucket: int = 3,
                 proxy_overrides: Optional[dict] = None, proxy_env: Optional[Dict[str, str]] = None):
        self.workdir = workdir
        self.numbucket = numbucket
        self.layout = spread_layout(nmains, numbucket, per_bucket)
        self.mains: List[nodeproc.Node] = []
        self.backups: List[nodeproc.Node] = []
        for i in range(nmains):
            n = nodeproc.Node(node_binary, os.path.join(workdir, "main%d" % i), numbucket=numbucket,
                              buckets=self.layout[i])
            self.mains.append(n)
        for i in range(nbackups):
            n = nodeproc.Node(node_binary, os.path.join(workdir, "backup%d" % i), numbucket=numbucket)
            self.backups.append(n)
        for n in self.nodes:
            n.port, n.webport = free_port(), free_port()
        route = self.route()
        for n in self.nodes:
            n.route_extra = {"main": route["main"], "backup": route["backup"]}
        self.proxy = Proxy(proxy_binary, os.path.join(workdir, "proxy"), route,
                           overrides=proxy_overrides, env=proxy_env)

    @property
    def nodes(self) -> List[nodeproc.Node]:
        return self.mains + self.backups

    @staticmethod
    def addr(n: nodeproc.Node) -> str:
        return "127.0.0.1:%d" % n.port

    def route(self) -> dict:
        digits = 2 if self.numbucket == 256 else 1
        return {
            "numbucket": self.numbucket,
            "main": [{"addr": self.addr(n), "buckets": ["%0*x" % (digits, b) for b in self.layout[i]]}
                     for i, n in enumerate(self.mains)],
            "backup": [self.addr(n) for n in self.backups],
        }

    def start(self) -> "Cluster":
        for n in self.nodes:
            n.start(keep_ports=True)
        self.proxy.start()
        return self

    def stop(self) -> None:
        try:
            self.proxy.stop()
        finally:
            for n in self.nodes:
                n.stop()

    def by_addr(self, addr: str) -> nodeproc.Node:
        for n in self.nodes:
            if self.addr(n) == addr:
                return n
        raise KeyError(addr)

    def bucket_mains(self, bucket: int) -> List[nodeproc.Node]:
        return [n for i, n in enumerate(self.mains) if bucket in self.layout[i]]

    def replicas(self, key: bytes, n: int = 3) -> List[nodeproc.Node]:
        """The key's N replicas in natural order (primary first)."""
        mains = [self.addr(x) for x in self.bucket_mains(bucket_of(key, self.numbucket))]
        return [self.by_addr(a) for a in natural_order(key, mains)[:n]]

    def holders(self, key: bytes) -> List[nodeproc.Node]:
        """Nodes that return the key when asked directly."""
        out = []
        for n in self.nodes:
            if not n.running():
                continue
            with n.raw() as c:
                if c.get(key) is not None:
                    out.append(n)
        return out

    def node_stat(self, name: str) -> int:
        total = 0
        for n in self.nodes:
            if n.running():
                with n.raw() as c:
                    total += int(c.stats(name.encode())[name])
        return total

    def keys_in_bucket(self, bucket: int, count: int, prefix: str = "k") -> List[bytes]:
        out, i = [], 0
        while len(out) < count:
            k = ("%s%d" % (prefix, i)).encode()
            if bucket_of(k, self.numbucket) == bucket:
                out.append(k)
            i += 1
        return out
