"""Run the Rust `beansdb` node binary for integration tests, and talk to it.

* `Node`: writes a gobeansdb-format conf dir (global.yaml + route.yaml, node.md §7), picks free
  ports, starts `beansdb -confdir DIR`, waits until `get @` answers on the memcached port, and
  stops it with SIGTERM (then SIGKILL).
* `RawClient`: a raw-socket memcached client that returns exactly what the node sent.
* `mc_client()`: a libmc client with client-side compression and large-value splitting off, so
  flags and bytes reach the node unchanged (use `get_raw`/`set_raw` to see raw flags).
* `/buffers` helpers: all four counters must return to Count == Size == 0 at rest.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import random
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Dict, Iterable, List, Optional, Tuple

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED_FIXTURE = os.path.normpath(os.path.join(REPO, "..", "shared", "fixtures", "gobeansdb-2.1-home"))
BUFFER_KINDS = ("AllocRL", "GetData", "SetData", "FlushData")


def find_binary() -> Optional[str]:
    """$BEANSDB_BIN, else <repo>/target/debug/beansdb; None if it does not exist."""
    path = os.environ.get("BEANSDB_BIN") or os.path.join(REPO, "target", "debug", "beansdb")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_HANDED_OUT = set()


def free_port() -> int:
    """A free port *below* the kernel's ephemeral range. Ports handed out are bound later by
    the processes under test (and kept across restarts); one from the ephemeral range could
    meanwhile become the source port of some outgoing connection (a proxy's backend
    connection, the Cassandra driver) and the bind would fail. Never the same port twice."""
    top = _ephemeral_start() - 1
    for _ in range(1000):
        port = random.randint(20000, top)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def deep_merge(base: dict, over: Optional[dict]) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def default_global(home: str, port: int, webport: int, logdir: str) -> dict:
    """A complete global.yaml (every key gobeansdb needs, so it would accept the dir too)."""
    return {
        "server": {
            "hostname": "127.0.0.1", "listen": "127.0.0.1", "port": port, "webport": webport,
            "threads": 4, "errorlog": os.path.join(logdir, "beansdb.log"), "accesslog": "",
            "staticdir": "./", "zkservers": [], "zkpath": "",
        },
        "mc": {
            "max_key_len": 250, "max_req": 16, "body_max_str": "50M", "body_big_str": "1M",
            "body_c_str": "4K", "flush_max_str": "100M", "timeout_ms": 3000,
        },
        "hstore": {
            "local": {"home": home},
            "data": {
                "datafile_max_str": "4000M", "check_vhash": True, "flush_interval": 0,
                "flush_wake_str": "0", "no_gc_days": 0, "bufio_cap_str": "1M", "fsync": "interval",
            },
            "hint": {
                "hint_split_cap_str": "1M", "hint_index_interval_str": "4K",
                "hint_no_merged": False, "hint_merge_interval": 1,
            },
            "htree": {"tree_height": 3, "tree_dump": 3},
        },
    }


class ReplyError(Exception):
    """The node answered an error line (ERROR, CLIENT_ERROR …, SERVER_ERROR …)."""

    def __init__(self, line: bytes):
        super().__init__(line.decode("latin-1"))
        self.line = line


class RawClient:
    """Blocking memcached text-protocol client over a raw socket, with an internal read buffer."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("connection closed by node; buffered %r" % bytes(self.buf[:200]))
        self.buf += chunk

    def recv_until(self, term: bytes) -> bytes:
        """Everything up to and including `term`."""
        while True:
            i = self.buf.find(term)
            if i >= 0:
                out = bytes(self.buf[:i + len(term)])
                del self.buf[:i + len(term)]
                return out
            self._fill()

    def recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def line(self) -> bytes:
        return self.recv_until(b"\r\n")[:-2]

    def is_closed(self, wait: float = 1.0) -> bool:
        """True if the node closed the connection (EOF) within `wait` seconds."""
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            return False
        except ConnectionError:
            return True
        if chunk:
            self.buf += chunk
            return False
        return True

    def cmd(self, line: bytes) -> bytes:
        """Send one command line, return one reply line (without CRLF)."""
        self.send(line + b"\r\n")
        return self.line()

    def retrieve(self, line: bytes) -> List[Tuple[bytes, int, bytes]]:
        """Send a get/gets line; return [(key, flag, value)], raise ReplyError on an error line."""
        self.send(line + b"\r\n")
        out = []
        while True:
            head = self.line()
            if head == b"END":
                return out
            if not head.startswith(b"VALUE "):
                raise ReplyError(head)
            parts = head.split(b" ")
            n = int(parts[3])
            data = self.recv_exact(n + 2)
            assert data[-2:] == b"\r\n", "value not followed by CRLF: %r" % data[-10:]
            out.append((parts[1], int(parts[2]), data[:-2]))

    def get(self, key: bytes) -> Optional[Tuple[int, bytes]]:
        """(flag, value) or None for a miss."""
        got = self.retrieve(b"get " + key)
        assert len(got) <= 1 and (not got or got[0][0] == key), got
        return (got[0][1], got[0][2]) if got else None

    def set(self, key: bytes, value: bytes, flag: int = 0, exptime: int = 0) -> bytes:
        self.send(b"set %s %d %d %d\r\n%s\r\n" % (key, flag, exptime, len(value), value))
        return self.line()

    def delete(self, key: bytes) -> bytes:
        return self.cmd(b"delete " + key)

    def stats(self, *names: bytes) -> Dict[str, str]:
        self.send(b" ".join((b"stats",) + names) + b"\r\n")
        out = {}
        while True:
            ln = self.line()
            if ln == b"END":
                return out
            parts = ln.decode().split(" ", 2)
            assert parts[0] == "STAT", ln
            out[parts[1]] = parts[2] if len(parts) > 2 else ""


def keys_in_bucket(bucket: int, n: int, prefix: str = "key", numbucket: int = 16) -> List[bytes]:
    """The first `n` keys `<prefix><i>` (i = 0, 1, …) whose bucket is `bucket`."""
    import beansfmt
    out, i = [], 0
    while len(out) < n:
        k = ("%s%d" % (prefix, i)).encode()
        if beansfmt.bucket_of(beansfmt.keyhash(k), numbucket) == bucket:
            out.append(k)
        i += 1
    return out


def mc_client(port: int, poll_timeout_ms: int = 5000):
    """libmc client: comp_threshold=0 (no client compression), do_split=False (no ~key/N chunks
    for values > 1,000,000 bytes). Use get_raw(key) -> (bytes|None, flag) and
    set_raw(key, bytes, exptime, flag) to bypass libmc's value encoding."""
    import libmc
    mc = libmc.Client(["127.0.0.1:%d" % port], do_split=False, comp_threshold=0, noreply=False)
    mc.config(libmc.MC_POLL_TIMEOUT, poll_timeout_ms)
    mc.config(libmc.MC_CONNECT_TIMEOUT, 2000)
    return mc


class Node:
    """One `beansdb` process with its own conf dir, ports and (by default) home."""

    def __init__(self, binary: str, workdir: str, home: Optional[str] = None, numbucket: int = 16,
                 buckets: Optional[Iterable[int]] = None, overrides: Optional[dict] = None,
                 route_extra: Optional[dict] = None, env: Optional[Dict[str, str]] = None):
        self.binary, self.workdir = binary, workdir
        self.env = dict(env or {})
        # optional callable(global_dict, route_dict) that may edit both before they are written
        self.conf_hook = None
        self.home = home or os.path.join(workdir, "home")
        self.numbucket = numbucket
        self.buckets = list(range(numbucket)) if buckets is None else list(buckets)
        self.overrides = overrides or {}
        self.route_extra = route_extra or {}
        self.confdir = os.path.join(workdir, "conf")
        self.proc: Optional[subprocess.Popen] = None
        self.port = self.webport = 0
        os.makedirs(self.confdir, exist_ok=True)
        os.makedirs(self.home, exist_ok=True)

    # ----- configuration
    def write_conf(self) -> None:
        g = deep_merge(default_global(self.home, self.port, self.webport, self.workdir), self.overrides)
        digits = {1: 1, 16: 1, 256: 2}[self.numbucket]
        route = {"numbucket": self.numbucket,
                 "main": [{"addr": "127.0.0.1:%d" % self.port,
                           "buckets": ["%0*x" % (digits, b) for b in self.buckets]}]}
        route.update(self.route_extra)
        if self.conf_hook is not None:
            self.conf_hook(g, route)
        with open(os.path.join(self.confdir, "global.yaml"), "w") as f:
            yaml.safe_dump(g, f, default_flow_style=False, sort_keys=False)
        with open(os.path.join(self.confdir, "route.yaml"), "w") as f:
            yaml.safe_dump(route, f, default_flow_style=False, sort_keys=False)

    @property
    def log_path(self) -> str:
        return os.path.join(self.workdir, "beansdb.log")

    def log_tail(self, n: int = 40) -> str:
        out = []
        for p in (self.log_path, os.path.join(self.workdir, "node.stderr"), os.path.join(self.workdir, "node.stdout")):
            if os.path.exists(p):
                with open(p, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()[-n:]
                out.append("--- %s\n%s" % (os.path.basename(p), "\n".join(lines)))
        return "\n".join(out)

    # ----- lifecycle
    def start(self, timeout: float = 60.0, keep_ports: bool = False) -> "Node":
        last_err = None
        for _ in range(3):                       # a racing process may grab a picked port
            if not (keep_ports and self.port):
                self.port, self.webport = free_port(), free_port()
                while self.webport == self.port:
                    self.webport = free_port()
            self.write_conf()
            out = open(os.path.join(self.workdir, "node.stdout"), "ab")
            err = open(os.path.join(self.workdir, "node.stderr"), "ab")
            penv = dict(os.environ)
            penv.update(self.env)
            self.proc = subprocess.Popen([self.binary, "-confdir", self.confdir], cwd=self.workdir,
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=penv)
            out.close()
            err.close()
            try:
                self.wait_ready(timeout)
                return self
            except RuntimeError as e:
                last_err = e
                if self.proc.poll() is None:
                    raise
                if "in use" not in self.log_tail().lower():
                    raise
        raise last_err

    def wait_ready(self, timeout: float) -> None:
        """Readiness probe: `get @` answers (the mc port listens only after buckets are open)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("beansdb exited with %s during startup\n%s" % (self.proc.returncode, self.log_tail()))
            try:
                with RawClient(self.port, timeout=2.0) as c:
                    c.retrieve(b"get @")
                    return
            except (OSError, ConnectionError, ReplyError):
                time.sleep(0.05)
        raise RuntimeError("beansdb not ready after %.0fs\n%s" % (timeout, self.log_tail()))

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> Optional[int]:
        """Signal the node (SIGTERM = clean shutdown), SIGKILL after `timeout`; return exit code."""
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

    def kill9(self) -> Optional[int]:
        return self.stop(signal.SIGKILL, timeout=10)

    def restart(self, timeout: float = 60.0) -> "Node":
        rc = self.stop()
        assert rc == 0, "clean shutdown failed with %s\n%s" % (rc, self.log_tail())
        return self.start(timeout, keep_ports=True)

    # ----- clients
    def raw(self, timeout: float = 10.0) -> RawClient:
        return RawClient(self.port, timeout=timeout)

    def mc(self, **kw):
        return mc_client(self.port, **kw)

    def http(self, path: str, timeout: float = 5.0) -> Tuple[int, bytes]:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.webport, path), timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def http_json(self, path: str):
        status, body = self.http(path)
        assert status == 200, (path, status, body[:200])
        return json.loads(body)

    def buffers(self) -> dict:
        return self.http_json("/buffers")

    def assert_buffers_zero(self, timeout: float = 2.0) -> None:
        """/buffers has exactly the 4 counters, each with Count == Size == 0 (polled ≤ timeout)."""
        deadline = time.time() + timeout
        while True:
            b = self.buffers()
            ok = set(b) == set(BUFFER_KINDS) and all(b[k]["Count"] == 0 and b[k]["Size"] == 0 for k in BUFFER_KINDS)
            if ok:
                return
            if time.time() >= deadline:
                raise AssertionError("/buffers not back to zero: %s" % json.dumps(b))
            time.sleep(0.05)

    def bucket_path(self, bucket: int) -> str:
        if self.numbucket == 1:
            return self.home
        if self.numbucket == 16:
            return os.path.join(self.home, "%x" % bucket)
        return os.path.join(self.home, "%x" % (bucket >> 4), "%x" % (bucket & 0xF))
