"""beansproxy fault handling: a black-hole main (accepts, never answers), health down/up with
probes, SIGUSR1 log reopening and the SIGTERM drain (proxy.md §3.6, §5, §7.6, §8)."""

import os
import signal
import socket
import threading
import time

import pytest

import nodeproc
import proxyproc
from proxyproc import Cluster, natural_order

READ_TIMEOUT_MS = 500


class BlackHole:
    """A TCP listener that accepts connections and never reads or answers."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.conns = []
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except OSError:
                return

    def close(self):
        self.stopped = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in self.conns:
            c.close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    """3 real mains holding every bucket + a black-hole 4th main + 1 backup; N=3 W=2 R=1."""
    node_bin, proxy_bin = nodeproc.find_binary(), proxyproc.find_proxy_binary()
    if node_bin is None or proxy_bin is None:
        pytest.fail("binaries missing: build with `cargo build -p beansdb-node -p beansdb-proxy`")
    c = Cluster(node_bin, proxy_bin, str(tmp_path_factory.mktemp("faulty")), nmains=3,
                proxy_overrides={"dstore": {"read_timeout_ms": READ_TIMEOUT_MS,
                                            "write_timeout_ms": READ_TIMEOUT_MS,
                                            "max_connect_errors": 3,
                                            "probe_interval_ms": 200,
                                            "probe_max_interval_ms": 800}})
    bh_port = nodeproc.free_port()
    route = c.route()
    route["main"].append({"addr": "127.0.0.1:%d" % bh_port, "buckets": ["%x" % b for b in range(16)]})
    for n in c.nodes:
        n.route_extra = {"main": route["main"], "backup": route["backup"]}
    c.proxy.route = route
    c.bh_port = bh_port
    c.bh_addr = "127.0.0.1:%d" % bh_port
    c.full_route = route
    c.hole = BlackHole(bh_port)
    c.start()
    yield c
    c.hole.close()
    c.stop()


def keys_with_primary(addrs, primary, count, prefix):
    out, i = [], 0
    while len(out) < count:
        k = b"%s%d" % (prefix, i)
        if natural_order(k, addrs)[0] == primary:
            out.append(k)
        i += 1
    return out


def test_black_hole_main_then_replaced(faulty, tmp_path):
    p = faulty.proxy
    addrs = [m["addr"] for m in faulty.full_route["main"]]
    keys = keys_with_primary(addrs, faulty.bh_addr, 8, b"hole:")
    with p.raw(timeout=10) as c:
        # Writes return as soon as the two real replicas ack, not after the timeout.
        t0 = time.time()
        assert c.set(keys[0], b"v0") == b"STORED"
        assert time.time() - t0 < READ_TIMEOUT_MS / 1000.0
        # Reads time out on the black hole and are answered by the next replica.
        t0 = time.time()
        assert c.get(keys[0]) == (0, b"v0")
        assert time.time() - t0 < (READ_TIMEOUT_MS + 200) / 1000.0
        # After max_connect_errors failures the host is down; requests stop waiting.
        for k in keys[1:4]:
            c.get(k)
        hosts = p.hosts()
        assert hosts[faulty.bh_addr]["up"] is False, hosts
        t0 = time.time()
        assert c.set(keys[4], b"v4") == b"STORED"
        assert c.get(keys[4]) == (0, b"v4")
        got = c.retrieve(b"get " + b" ".join(keys[:5]))
        assert [g[0] for g in got] == [keys[0], keys[4]]
        # Three requests, none of them waited for a read timeout on the down host.
        assert time.time() - t0 < READ_TIMEOUT_MS / 1000.0
    # Replace the black hole with a real node: a probe brings it back within the backoff bound.
    faulty.hole.close()
    real = nodeproc.Node(nodeproc.find_binary(), str(tmp_path / "real"), numbucket=16)
    real.port, real.webport = faulty.bh_port, nodeproc.free_port()
    real.route_extra = {"main": faulty.full_route["main"], "backup": faulty.full_route["backup"]}
    real.start(keep_ports=True)
    try:
        t0 = time.time()
        p.wait_hosts_up([faulty.bh_addr], timeout=5)
        assert time.time() - t0 < 0.8 + READ_TIMEOUT_MS / 1000.0 + 1.0
        with p.raw() as c:
            assert c.set(keys[5], b"v5") == b"STORED"
        deadline = time.time() + 3
        while True:
            with real.raw() as r:
                if r.get(keys[5]) == (0, b"v5") or time.time() > deadline:
                    break
            time.sleep(0.05)
        with real.raw() as r:
            assert r.get(keys[5]) == (0, b"v5"), "the recovered primary takes writes again"
        p.assert_buffers_zero()
    finally:
        # Leave a black hole behind for other tests of this module.
        real.stop()
        faulty.hole = BlackHole(faulty.bh_port)


def test_sigusr1_reopens_and_sigterm_drains(faulty, tmp_path):
    """A second proxy on the three real mains: log rotation, then SIGTERM mid-upload."""
    route = faulty.route()
    px = proxyproc.Proxy(proxyproc.find_proxy_binary(), str(tmp_path / "px"), route)
    px.start()
    with px.raw() as c:
        assert c.set(b"sig:a", b"1") == b"STORED"
    for path in (px.errorlog, px.accesslog):
        os.rename(path, path + ".1")
    px.proc.send_signal(signal.SIGUSR1)
    deadline = time.time() + 3
    while not (os.path.exists(px.errorlog) and os.path.exists(px.accesslog)):
        with px.raw() as c:
            c.get(b"sig:a")
        assert time.time() < deadline, "logs not reopened"
        time.sleep(0.05)

    value = os.urandom(10 << 20)
    c = px.raw(timeout=20)
    c.send(b"set sig:big 0 0 %d\r\n" % len(value) + value[: 4 << 20])
    time.sleep(0.2)
    px.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # Listeners are closed while the busy connection finishes its request.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", px.port), timeout=1).close()
    c.send(value[4 << 20:] + b"\r\n")
    assert c.line() == b"STORED"
    assert c.is_closed(5.0)
    c.close()
    assert px.proc.wait(15) == 0
    with faulty.mains[0].raw() as n:
        assert n.get(b"sig:big") == (0, value)


def test_admin_handler_panic_answers_500(faulty, tmp_path):
    """A panic inside an admin handler is a 500 for that request only (proxy.md §2.6 step 4)."""
    px = proxyproc.Proxy(proxyproc.find_proxy_binary(), str(tmp_path / "px"), faulty.route(),
                         env={"BEANSPROXY_TEST_HOOKS": "http_panic"})
    px.start()
    try:
        status, body = px.http("/debug/test-panic")
        assert status == 500, body
        status, _ = px.http("/config/")
        assert status == 200
        with px.raw() as c:
            assert c.set(b"panic:after", b"1") == b"STORED"
        with open(px.errorlog) as f:
            assert "admin handler /debug/test-panic panicked" in f.read()
    finally:
        assert px.stop() == 0


def _stalled_upload(px):
    """A connection that sent half of a set body and then goes quiet: the drain must wait."""
    c = px.raw(timeout=20)
    c.send(b"set stall:k 0 0 100\r\n" + b"x" * 50)
    time.sleep(0.2)
    return c


def test_drain_overrun_exits_1(faulty, tmp_path):
    """A drain longer than mc.timeout_ms + 2 s ends the process with exit code 1 (§7.6)."""
    px = proxyproc.Proxy(proxyproc.find_proxy_binary(), str(tmp_path / "px"), faulty.route(),
                         overrides={"mc": {"timeout_ms": 500}})
    px.start()
    c = _stalled_upload(px)
    t0 = time.time()
    px.proc.send_signal(signal.SIGTERM)
    assert px.proc.wait(15) == 1
    took = time.time() - t0
    assert 2.3 <= took < 8, took
    c.close()
    with open(px.errorlog) as f:
        assert "drain took longer than 2500 ms" in f.read()


def test_second_signal_exits_at_once(faulty, tmp_path):
    px = proxyproc.Proxy(proxyproc.find_proxy_binary(), str(tmp_path / "px"), faulty.route(),
                         overrides={"mc": {"timeout_ms": 10000}})
    px.start()
    c = _stalled_upload(px)
    px.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert px.proc.poll() is None, "still draining the stalled upload"
    t0 = time.time()
    px.proc.send_signal(signal.SIGTERM)
    assert px.proc.wait(5) == 1
    assert time.time() - t0 < 2
    c.close()
