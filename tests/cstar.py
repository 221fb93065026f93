"""Harness for the Cassandra ("C*") acceptance tests of beansproxy and beansctl (cassandra.md).

* `locate()`: the test Cassandra: $CASSANDRA_NATIVE (host:port) and $CASSANDRA_DIR (its work dir,
  holding `pid`); when $CASSANDRA_NATIVE is unset, `bash scripts/cassandra.sh start` is run (with
  BEANS_CASSANDRA_OWNER_PID = this process, so the instance stops after the run). Unreachable
  Cassandra is a test FAILURE; only BEANS_SKIP_CASSANDRA=1 turns the tests into a loud skip.
* `Cstar`: a cassandra-driver session as the superuser cassandra/cassandra; per-module keyspaces
  with the schema of cassandra.md §2 (`create_keyspace`/`drop_keyspace`), roles, and direct CQL
  helpers (`read_row`, `insert_row`, `delete_row`, config-table rows).
* `Cstar.paused()`: SIGSTOP the Cassandra process (an outage, cassandra.md §10) until the block
  ends; SIGCONT is always sent, and `resume()` is also called at session teardown.
* `CstarCluster`: real beansdb nodes (spread layout, proxyproc.Cluster) and a beansproxy whose
  proxy.yaml has a `cassandra:` section pointing at the test keyspace.
* Helpers for `/cstar-cfg`, `/metrics`, the dual-write error log and the `beansctl` tools.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import nodeproc
import proxyproc
from nodeproc import RawClient

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# Status strings and aliases (cassandra.md §1, §4.1).
BRW, BRW_CW, BW_CRW, CRW, CR = "br1w1cr0w0", "br1w1cr0w1", "br0w1cr1w1", "br0w0cr1w1", "br0w0cr1w0"
ALIASES = {"brw": BRW, "brw_cw": BRW_CW, "bw_crw": BW_CRW, "crw": CRW, "cr": CR}
STATUSES = (BRW, BRW_CW, BW_CRW, CRW, CR)
READS_BEANSDB = {BRW, BRW_CW}
READS_CSTAR = {BW_CRW, CRW, CR}
WRITES_BEANSDB = {BRW, BRW_CW, BW_CRW}
WRITES_CSTAR = {BRW_CW, BW_CRW, CRW}

TEST_ROLE, TEST_ROLE_PASSWORD = "doubandb_test", "doubandb_test"
EPOCH = datetime.datetime(1970, 1, 1)


class CassandraUnavailable(Exception):
    pass


def skip_requested() -> bool:
    return os.environ.get("BEANS_SKIP_CASSANDRA") == "1"


def now_us() -> int:
    return time.time_ns() // 1000


def wait_until(fn: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `fn` until it returns a truthy value (returned); AssertionError after `timeout`."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, v))
        time.sleep(interval)


# ----- locating and starting Cassandra

def locate(start_timeout: float = 300.0) -> Tuple[str, str]:
    """(native host:port, work dir). Starts one via scripts/cassandra.sh when not given."""
    native = os.environ.get("CASSANDRA_NATIVE", "")
    cdir = os.environ.get("CASSANDRA_DIR", "")
    if native:
        return native, cdir
    env = dict(os.environ)
    env["BEANS_CASSANDRA_OWNER_PID"] = str(os.getpid())
    try:
        r = subprocess.run(["bash", os.path.join(REPO, "scripts", "cassandra.sh"), "start"],
                           capture_output=True, text=True, timeout=start_timeout, env=env,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CassandraUnavailable("scripts/cassandra.sh start did not finish within %.0fs" % start_timeout)
    if r.returncode != 0:
        raise CassandraUnavailable("scripts/cassandra.sh start exited %d:\n%s"
                                   % (r.returncode, "\n".join(r.stderr.splitlines()[-60:])))
    for line in r.stdout.splitlines():
        if "=" not in line:
            continue
        name, _, val = line.partition("=")
        val = " ".join(shlex.split(val))
        if name == "CASSANDRA_NATIVE":
            native = val
        elif name == "CASSANDRA_DIR":
            cdir = val
    if not native:
        raise CassandraUnavailable("scripts/cassandra.sh start printed no CASSANDRA_NATIVE:\n%s" % r.stdout)
    os.environ["CASSANDRA_NATIVE"], os.environ["CASSANDRA_DIR"] = native, cdir
    return native, cdir


def split_hostport(native: str) -> Tuple[str, int]:
    host, _, port = native.rpartition(":")
    if not host:
        return native, 9042
    return host, int(port)


# ----- rows

class Row:
    """One C* data row: the UDT fields (flag and cas as u32) and writetime(value.body) in µs."""

    def __init__(self, body: bytes, flag: int, rtime_ms: Optional[int], exptime: int, cas: int,
                 writetime: Optional[int]):
        self.body, self.flag, self.rtime_ms = body, flag, rtime_ms
        self.exptime, self.cas, self.writetime = exptime, cas, writetime

    def __repr__(self) -> str:
        b = self.body if len(self.body) <= 40 else self.body[:40] + b"...(%d bytes)" % len(self.body)
        return "Row(body=%r, flag=%d, rtime_ms=%s, exptime=%d, cas=%d, writetime=%s)" % (
            b, self.flag, self.rtime_ms, self.exptime, self.cas, self.writetime)


def _to_ms(v) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, datetime.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return (v - EPOCH) // datetime.timedelta(milliseconds=1)
    return int(v)


def _i32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


class Cstar:
    """Superuser session on the test Cassandra plus the helpers the tests use."""

    def __init__(self, native: str, cdir: str, connect_timeout: float = 60.0):
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import Cluster

        logging.getLogger("cassandra").setLevel(logging.ERROR)
        self.native, self.dir = native, cdir
        self.host, self.port = split_hostport(native)
        self._stopped = False
        self._stmts: Dict[str, object] = {}
        deadline = time.time() + connect_timeout
        last = None
        while True:
            try:
                self.cluster = Cluster([self.host], port=self.port, connect_timeout=5,
                                       auth_provider=PlainTextAuthProvider("cassandra", "cassandra"),
                                       control_connection_timeout=5)
                self.session = self.cluster.connect()
                self.session.default_timeout = 30
                v = self.session.execute("SELECT release_version FROM system.local").one()
                self.release = v.release_version
                break
            except Exception as e:  # noqa: BLE001 - any driver error means "not reachable yet"
                last = e
                with contextlib.suppress(Exception):
                    self.cluster.shutdown()
                if time.time() >= deadline:
                    raise CassandraUnavailable("cannot connect to Cassandra at %s as cassandra/cassandra: %s"
                                               % (native, last))
                time.sleep(1.0)

    def close(self) -> None:
        self.resume()
        with contextlib.suppress(Exception):
            self.cluster.shutdown()

    def execute(self, query: str, params=None, timeout: float = 30.0):
        return self.session.execute(query, params, timeout=timeout)

    # -- schema and roles

    def create_keyspace(self, name: Optional[str] = None) -> str:
        """A fresh keyspace with the test schema of cassandra.md §2 / §10."""
        ks = name or "beans_t_%s" % secrets.token_hex(5)
        stmts = [
            "CREATE KEYSPACE %s WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}" % ks,
            "CREATE TYPE %s.bdbvalue (rtime timestamp, flag int, exptime int, cas int, body blob)" % ks,
            "CREATE TABLE %s.kvstore (key blob PRIMARY KEY, value %s.bdbvalue) "
            "WITH compression = {'class': 'ZstdCompressor'}" % (ks, ks),
            "CREATE TABLE %s.kvstore_ark (key blob PRIMARY KEY, value %s.bdbvalue) "
            "WITH compression = {'class': 'ZstdCompressor'}" % (ks, ks),
            "CREATE TABLE %s.bdb_prefix_rw_switcher (prefix text PRIMARY KEY, value text)" % ks,
            "CREATE TABLE %s.bdb_prefix_table_finder (prefix text PRIMARY KEY, value text)" % ks,
        ]
        for s in stmts:
            self.execute(s, timeout=60)
        return ks

    def drop_keyspace(self, ks: str) -> None:
        self.execute("DROP KEYSPACE IF EXISTS %s" % ks, timeout=60)

    def ensure_role(self, role: str, password: str) -> None:
        """The role exists with LOGIN and exactly this password (AllowAllAuthorizer: no grants)."""
        pw = password.replace("'", "''")
        self.execute("CREATE ROLE IF NOT EXISTS %s WITH PASSWORD = '%s' AND LOGIN = true" % (role, pw))
        if self.can_login(role, password):
            return
        # Cassandra 5.0 allows one password change per role every 5 s.
        deadline = time.time() + 15
        while True:
            try:
                self.execute("ALTER ROLE %s WITH PASSWORD = '%s' AND LOGIN = true" % (role, pw))
                break
            except Exception:  # noqa: BLE001
                if time.time() >= deadline:
                    raise
                time.sleep(1.0)
        wait_until(lambda: self.can_login(role, password), 15, interval=0.5, what="login as %s" % role)

    def can_login(self, role: str, password: str) -> bool:
        from cassandra.auth import PlainTextAuthProvider
        from cassandra.cluster import Cluster
        c = Cluster([self.host], port=self.port, connect_timeout=5, control_connection_timeout=5,
                    auth_provider=PlainTextAuthProvider(role, password))
        try:
            c.connect().execute("SELECT release_version FROM system.local", timeout=10)
            return True
        except Exception:  # noqa: BLE001 - authentication failure
            return False
        finally:
            with contextlib.suppress(Exception):
                c.shutdown()

    def client_usernames(self) -> List[str]:
        """Usernames of the connections Cassandra currently serves (system_views.clients)."""
        return [r.username for r in self.execute("SELECT username FROM system_views.clients")]

    # -- data rows

    def read_row(self, ks: str, table: str, key: bytes) -> Optional[Row]:
        r = self.execute("SELECT value, writetime(value.body) AS wt FROM %s.%s WHERE key = %%s" % (ks, table),
                         (key,)).one()
        if r is None or r.value is None:
            return None
        v = r.value
        return Row(body=v.body if v.body is not None else b"", flag=(v.flag or 0) & 0xFFFFFFFF,
                   rtime_ms=_to_ms(v.rtime), exptime=v.exptime or 0, cas=(v.cas or 0) & 0xFFFFFFFF,
                   writetime=r.wt)

    def insert_row(self, ks: str, table: str, key: bytes, body: bytes, flag: int = 0,
                   rtime_ms: Optional[int] = None, exptime: int = 0, cas: int = 0,
                   ts_us: Optional[int] = None) -> int:
        """Direct INSERT … USING TIMESTAMP; returns the timestamp used (µs)."""
        ts = now_us() if ts_us is None else ts_us
        rt = ts // 1000 if rtime_ms is None else rtime_ms
        stmt = self._prepared("INSERT INTO %s.%s (key, value) VALUES (?, {rtime: ?, flag: ?, exptime: ?, "
                              "cas: ?, body: ?}) USING TIMESTAMP ?" % (ks, table))
        self.session.execute(stmt, (key, EPOCH + datetime.timedelta(milliseconds=rt), _i32(flag),
                                    _i32(exptime), _i32(cas), body, ts), timeout=60)
        return ts

    def _prepared(self, query: str):
        st = self._stmts.get(query)
        if st is None:
            st = self._stmts[query] = self.session.prepare(query)
        return st

    def delete_row(self, ks: str, table: str, key: bytes, ts_us: Optional[int] = None) -> int:
        ts = now_us() if ts_us is None else ts_us
        self.execute("DELETE FROM %s.%s USING TIMESTAMP %%s WHERE key = %%s" % (ks, table), (ts, key))
        return ts

    def keys(self, ks: str, table: str, prefix: bytes = b"") -> List[bytes]:
        """Keys of the live rows of a (small) test table starting with `prefix`."""
        out = []
        for r in self.execute("SELECT key, value FROM %s.%s" % (ks, table), timeout=60):
            if r.value is not None and bytes(r.key).startswith(prefix):
                out.append(bytes(r.key))
        return sorted(out)

    # -- config tables (cassandra.md §2.2)

    def cfg_rows(self, ks: str, table: str = "bdb_prefix_rw_switcher") -> Dict[str, str]:
        return {r.prefix: r.value for r in self.execute("SELECT prefix, value FROM %s.%s" % (ks, table))}

    def put_cfg_row(self, ks: str, prefix: str, value: str, table: str = "bdb_prefix_rw_switcher") -> None:
        self.execute("INSERT INTO %s.%s (prefix, value) VALUES (%%s, %%s)" % (ks, table), (prefix, value))

    def delete_cfg_row(self, ks: str, prefix: str, table: str = "bdb_prefix_rw_switcher") -> None:
        self.execute("DELETE FROM %s.%s WHERE prefix = %%s" % (ks, table), (prefix,))

    # -- outage simulation (SIGSTOP / SIGCONT)

    def pid(self) -> int:
        path = os.path.join(self.dir, "pid")
        try:
            with open(path) as f:
                return int(f.read().strip())
        except (OSError, ValueError) as e:
            raise AssertionError("cannot read the Cassandra pid from %s (CASSANDRA_DIR): %s" % (path, e))

    def _task_states(self, pid: int) -> List[str]:
        out = []
        tdir = "/proc/%d/task" % pid
        for t in os.listdir(tdir):
            with contextlib.suppress(OSError):
                with open(os.path.join(tdir, t, "stat")) as f:
                    out.append(f.read().rsplit(")", 1)[1].split()[0])
        return out

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid()
        self._stopped = True
        os.kill(pid, signal.SIGSTOP)
        wait_until(lambda: all(s in ("T", "t") for s in self._task_states(pid)), timeout,
                   what="every Cassandra thread stopped")

    def resume(self) -> None:
        if not self._stopped:
            return
        with contextlib.suppress(ProcessLookupError, AssertionError):
            os.kill(self.pid(), signal.SIGCONT)
        self._stopped = False

    def wait_responsive(self, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while True:
            try:
                self.session.execute("SELECT release_version FROM system.local", timeout=5)
                return
            except Exception as e:  # noqa: BLE001
                if time.time() >= deadline:
                    raise AssertionError("Cassandra not responsive %.0fs after SIGCONT: %s" % (timeout, e))
                time.sleep(0.2)

    @contextlib.contextmanager
    def paused(self, max_seconds: float = 15.0):
        """Cassandra SIGSTOPped inside the block; SIGCONT (and a responsiveness check) after it.
        Other users share the instance: keep the block to a few seconds (asserted ≤ max_seconds)."""
        t0 = time.time()
        try:
            self.stop()
            yield
        finally:
            held = time.time() - t0
            self.resume()
            self.wait_responsive()
        assert held <= max_seconds, "Cassandra was stopped for %.1fs (limit %.0fs)" % (held, max_seconds)


# ----- proxy configuration and processes

def cassandra_section(cs: Cstar, ks: str, workdir: str, static: Optional[dict] = None,
                      table_static: Optional[dict] = None, table_cfg: bool = False,
                      shadow: Optional[dict] = None, password: Optional[str] = None,
                      role: str = TEST_ROLE, extra: Optional[dict] = None) -> dict:
    """The `cassandra:` section of the test proxies (cassandra.md §3.1)."""
    os.makedirs(workdir, exist_ok=True)
    pwfile = os.path.join(workdir, "cstar.pass")
    with open(pwfile, "w") as f:
        f.write((TEST_ROLE_PASSWORD if password is None else password) + "\n")
    dump = os.path.join(workdir, "dualwrite")
    os.makedirs(dump, exist_ok=True)
    tcfg = {"enable": True, "static": {"kvstore_ark": ["/ark/"]} if table_static is None else table_static}
    if table_cfg:
        tcfg.update({"cfg_table": "bdb_prefix_table_finder", "cfg_keyspace": ks})
    sec = {
        "enable": True,
        "hosts": [cs.native],
        "default_key_space": ks,
        "default_table": "kvstore",
        "username": role,
        "password_file": pwfile,
        "consistency": "one",
        "default_storage": BRW,
        "prefix_rw_dispatcher_cfg": {"enable": True, "cfg_table": "bdb_prefix_rw_switcher",
                                     "cfg_keyspace": ks, "static": dict(static or {})},
        "prefix_table_dispatcher_cfg": tcfg,
        "dual_write_err_cfg": {"dump_to_dir": dump},
        "shadow_read": dict(shadow or {"enable": False}),
    }
    return nodeproc.deep_merge(sec, extra)


def find_ctl_binary() -> Optional[str]:
    path = os.environ.get("BEANSCTL_BIN") or os.path.join(REPO, "target", "debug", "beansctl")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


class CtlResult:
    def __init__(self, rc: int, stdout: str, stderr: str, args: List[str]):
        self.rc, self.stdout, self.stderr, self.args = rc, stdout, stderr, args
        self.json = None
        with contextlib.suppress(ValueError):
            self.json = json.loads(stdout) if stdout.strip() else None

    def __repr__(self) -> str:
        return "beansctl %s -> rc=%d\nstdout: %s\nstderr: %s" % (
            " ".join(self.args), self.rc, self.stdout[-3000:], self.stderr[-3000:])


def beansctl(*args: str, timeout: float = 180.0) -> CtlResult:
    binary = find_ctl_binary()
    assert binary, "beansctl binary missing (set BEANSCTL_BIN or cargo build --bins)"
    r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    return CtlResult(r.returncode, r.stdout, r.stderr, list(args))


class CstarCluster:
    """proxyproc.Cluster (spread layout) whose proxy has a Cassandra section."""

    def __init__(self, cs: Cstar, ks: str, node_bin: str, proxy_bin: str, workdir: str,
                 static: Optional[dict] = None, shadow: Optional[dict] = None,
                 cassandra: Optional[dict] = None, overrides: Optional[dict] = None,
                 table_cfg: bool = False, table_static: Optional[dict] = None,
                 node_overrides: Optional[dict] = None, proxy_env: Optional[dict] = None):
        self.cs, self.ks, self.workdir, self.proxy_bin = cs, ks, workdir, proxy_bin
        self.section_args = dict(static=static, shadow=shadow, extra=cassandra, table_cfg=table_cfg,
                                 table_static=table_static)
        sec = cassandra_section(cs, ks, os.path.join(workdir, "cstar"), **self.section_args)
        over = nodeproc.deep_merge({"cassandra": sec}, overrides)
        self.cluster = proxyproc.Cluster(node_bin, proxy_bin, workdir, proxy_overrides=over,
                                         proxy_env=proxy_env)
        if node_overrides:
            for n in self.cluster.nodes:
                n.overrides = nodeproc.deep_merge(n.overrides, node_overrides(n) if callable(node_overrides)
                                                  else node_overrides)
        self.extra_proxies: List[proxyproc.Proxy] = []

    # delegation
    def __getattr__(self, name):
        return getattr(self.cluster, name)

    @property
    def proxy(self) -> proxyproc.Proxy:
        return self.cluster.proxy

    @property
    def dual_log(self) -> str:
        sec = self.proxy.overrides["cassandra"]["dual_write_err_cfg"]
        return os.path.join(sec["dump_to_dir"], sec.get("log_file_name", "dual_write_err.log"))

    @property
    def proxy_yaml(self) -> str:
        return os.path.join(self.proxy.confdir, "proxy.yaml")

    def start(self) -> "CstarCluster":
        for n in self.cluster.nodes:
            n.start(keep_ports=True)
        try:
            self.proxy.start(timeout=60)
        except RuntimeError as e:
            raise AssertionError("beansproxy with a cassandra section did not start: %s" % e)
        return self

    def stop(self) -> None:
        for p in self.extra_proxies:
            with contextlib.suppress(Exception):
                p.stop()
        self.cluster.stop()

    def add_proxy(self, name: str, cassandra: Optional[dict] = None, overrides: Optional[dict] = None,
                  start: bool = True) -> proxyproc.Proxy:
        """Another proxy on the same nodes and keyspace (a fleet member)."""
        workdir = os.path.join(self.workdir, name)
        sec = cassandra_section(self.cs, self.ks, os.path.join(workdir, "cstar"), **self.section_args)
        sec = nodeproc.deep_merge(sec, cassandra)
        base = {k: v for k, v in self.proxy.overrides.items() if k != "cassandra"}
        over = nodeproc.deep_merge(nodeproc.deep_merge(base, {"cassandra": sec}), overrides)
        p = proxyproc.Proxy(self.proxy_bin, workdir, self.cluster.route(), overrides=over)
        self.extra_proxies.append(p)
        if start:
            try:
                p.start(timeout=60)
            except RuntimeError as e:
                raise AssertionError("extra beansproxy %s did not start: %s" % (name, e))
        return p

    # direct data access
    def row(self, key: bytes, table: str = "kvstore") -> Optional[Row]:
        return self.cs.read_row(self.ks, table, key)

    def insert(self, key: bytes, body: bytes, table: str = "kvstore", **kw) -> int:
        return self.cs.insert_row(self.ks, table, key, body, **kw)

    def delete(self, key: bytes, table: str = "kvstore", ts_us: Optional[int] = None) -> int:
        return self.cs.delete_row(self.ks, table, key, ts_us)

    def node_values(self, key: bytes) -> Dict[str, Optional[Tuple[int, bytes]]]:
        """Direct get of `key` on every node of the key's bucket (mains) and the backups."""
        out = {}
        for n in self.cluster.bucket_mains(proxyproc.bucket_of(key, self.cluster.numbucket)) + self.cluster.backups:
            with n.raw() as c:
                out[self.cluster.addr(n)] = c.get(key)
        return out

    def beansdb_holders(self, key: bytes) -> List[str]:
        return sorted(self.cluster.addr(n) for n in self.cluster.holders(key))

    def bucket_main_addrs(self, key: bytes) -> List[str]:
        return sorted(self.cluster.addr(n) for n in self.cluster.bucket_mains(proxyproc.bucket_of(key)))

    def wait_beansdb_on_mains(self, key: bytes, value: Optional[bytes] = None, timeout: float = 5.0) -> None:
        """The key is on exactly its 3 bucket mains (background writes done), with `value` if given."""
        want = self.bucket_main_addrs(key)

        def ok():
            vals = self.node_values(key)
            holders = sorted(a for a, v in vals.items() if v is not None)
            if holders != want:
                return False
            return value is None or all(vals[a][1] == value for a in want)
        wait_until(ok, timeout, what="%r on its bucket mains %s" % (key, want))

    def put_direct_beansdb(self, key: bytes, value: bytes, flag: int = 0) -> None:
        """Set `key` directly on each of its bucket mains (beansdb only, bypassing the proxy)."""
        for n in self.cluster.bucket_mains(proxyproc.bucket_of(key)):
            with n.raw() as c:
                assert c.set(key, value, flag) == b"STORED"

    def wait_cstar_ok(self, proxy: Optional[proxyproc.Proxy] = None, key: bytes = b"/__probe__",
                      timeout: float = 30.0, write: bool = False) -> None:
        """After an outage: the proxy's C* path answers again. `key` must have a C*-read status
        (a get of it is not an error) or, with write=True, a status whose C* write decides the
        reply (bw_crw/crw: the set answers STORED); a write is never shadow-read."""
        p = proxy or self.proxy
        ensure = cfg_request(p, "GET", "rwswitcher")
        assert ensure[0] == 200, ensure

        def ok():
            with p.raw(timeout=10) as c:
                if write:
                    return c.set(key, b"probe") == b"STORED"
                return self._probe_get(c, key)
        wait_until(ok, timeout, interval=0.3, what="the proxy's Cassandra path to recover")

    @staticmethod
    def _probe_get(c: RawClient, key: bytes) -> bool:
        try:
            c.retrieve(b"get " + key)
            return True
        except nodeproc.ReplyError:
            return False

    def ctl_common(self, proxy: Optional[proxyproc.Proxy] = None) -> List[str]:
        p = proxy or self.proxy
        return ["--route", p.route_path, "--cassandra", self.cs.native,
                "--proxy-config", os.path.join(p.confdir, "proxy.yaml")]


def assert_stored_where(cc: "CstarCluster", key: bytes, status: str, value: bytes, flag: int = 0,
                        table: str = "kvstore") -> None:
    """Direct node reads and CQL: beansdb holds `key` (= value) iff `status` writes beansdb, the
    C* row exists (= value, flag) iff it writes C*."""
    if status in WRITES_BEANSDB:
        cc.wait_beansdb_on_mains(key, value)
    else:
        assert cc.beansdb_holders(key) == [], ("beansdb must not hold it", status, key)
    row = cc.row(key, table)
    if status in WRITES_CSTAR:
        assert row is not None, ("C* row missing", status, key)
        assert row.body == value and row.flag == flag, (status, key, row)
    else:
        assert row is None, ("C* must not hold it", status, key, row)


# ----- /cstar-cfg

def http_request(port: int, path: str, method: str = "GET", body: Optional[bytes] = None,
                 timeout: float = 15.0) -> Tuple[int, Dict[str, str], bytes]:
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def cfg_request(proxy: proxyproc.Proxy, method: str, config: Optional[str] = "rwswitcher",
                body=None, raw: Optional[bytes] = None, path: str = "/cstar-cfg"):
    """(status, json or None, raw body, headers) of a /cstar-cfg call; `body` is JSON-encoded."""
    q = path if config is None else "%s?config=%s" % (path, config)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    status, headers, payload = http_request(proxy.webport, q, method, data)
    try:
        doc = json.loads(payload) if payload else None
    except ValueError:
        doc = None
    return status, doc, payload, headers


def cfg_ok(proxy: proxyproc.Proxy, method: str, config: str = "rwswitcher", body=None) -> dict:
    status, doc, payload, _ = cfg_request(proxy, method, config, body)
    assert status == 200 and doc is not None and doc.get("message") == "success" and not doc.get("error"), \
        (method, config, body, status, payload[:500], proxy.log_tail(10))
    return doc


def set_status(proxy: proxyproc.Proxy, prefix: str, status: str) -> None:
    cfg_ok(proxy, "PUT", "rwswitcher", {"prefix": {status: [prefix]}})


def cfg_map(proxy: proxyproc.Proxy, config: str = "rwswitcher") -> Tuple[Dict[str, str], str]:
    doc = cfg_ok(proxy, "GET", config)
    return doc["cfg"], doc["default"]


# ----- metrics

_METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> List[Tuple[str, Dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_RE.match(line)
        if not m:
            continue
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL_RE.findall(m.group(3) or "")}
        try:
            val = float(m.group(4))
        except ValueError:
            continue
        out.append((m.group(1), labels, val))
    return out


class Metrics:
    def __init__(self, proxy: proxyproc.Proxy):
        status, body = proxy.http("/metrics")
        assert status == 200, (status, body[:200])
        self.samples = parse_metrics(body.decode("utf-8", "replace"))

    def get(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
        return sum(v for n, lab, v in self.samples
                   if n == name and all(lab.get(k) == want for k, want in labels.items()))


def metric(proxy: proxyproc.Proxy, name: str, **labels: str) -> float:
    return Metrics(proxy).get(name, **labels)


# ----- files

def read_lines(path: str) -> List[str]:
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace").splitlines()


def read_json_lines(path: str) -> List[dict]:
    return [json.loads(ln) for ln in read_lines(path) if ln.strip()]


def file_text(path: str) -> str:
    if not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


# ----- raw protocol helpers

def retrieve_lines(c: RawClient, line: bytes) -> List[Tuple[bytes, ...]]:
    """get/gets with the raw VALUE header tokens: [(key, flag, len[, cas]) , body]."""
    c.send(line + b"\r\n")
    out = []
    while True:
        head = c.line()
        if head == b"END":
            return out
        if not head.startswith(b"VALUE "):
            raise nodeproc.ReplyError(head)
        parts = head.split(b" ")
        data = c.recv_exact(int(parts[3]) + 2)
        assert data[-2:] == b"\r\n"
        out.append(tuple(parts[1:]) + (data[:-2],))


def pipeline_sets(c: RawClient, items: Iterable[Tuple[bytes, bytes, int]], batch: int = 100) -> List[bytes]:
    """Pipelined `set`s; the replies in order."""
    items = list(items)
    replies: List[bytes] = []
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        c.send(b"".join(b"set %s %d 0 %d\r\n%s\r\n" % (k, f, len(v), v) for k, v, f in chunk))
        replies.extend(c.line() for _ in chunk)
    return replies


def pipeline_cmds(c: RawClient, lines: Iterable[bytes], batch: int = 100) -> List[bytes]:
    lines = list(lines)
    replies: List[bytes] = []
    for i in range(0, len(lines), batch):
        chunk = lines[i:i + batch]
        c.send(b"".join(ln + b"\r\n" for ln in chunk))
        replies.extend(c.line() for _ in chunk)
    return replies


def meta_fields(c: RawClient, key: bytes) -> Optional[List[int]]:
    """`get ?key` → the integer fields of the meta body, or None on END."""
    got = c.retrieve(b"get ?" + key)
    if not got:
        return None
    return [int(x) for x in got[0][2].split()]

