"""Dual-write failure → error log → `beansctl replay-errors` → `beansctl verify` (cassandra.md
§5.2, §5.4, §7, §9.3, §11 "Dual-write failure → log → replay" and "getm errors"). Cassandra is
SIGSTOPped for a few seconds; this module's proxy gives C* statements 300 ms and no retries, and
a larger mc.timeout_ms so the C* error, not the request deadline, decides the replies."""

import datetime
import gzip
import json
import time

import pytest

import cstar
from cstar import BRW_CW, BW_CRW, CRW, beansctl, now_us

CW, BCR, C, B = "/dw_cw/", "/dw_bcr/", "/dw_c/", "/dw_b/"
STATIC = {BRW_CW: [CW], BW_CRW: [BCR], CRW: [C]}
MC_TIMEOUT_MS = 5000
FIELDS = ["time", "level", "op", "key", "status", "ts_us", "error", "proxy"]


@pytest.fixture(scope="module")
def cc(cstar_cluster_factory, ctl_binary):
    return cstar_cluster_factory(
        static=STATIC,
        cassandra={"timeout_ms": 300, "write_timeout_ms": 300, "retry_num": 0},
        overrides={"mc": {"timeout_ms": MC_TIMEOUT_MS}})


@pytest.fixture
def cl(cc):
    cc.proxy.wait_hosts_up()
    cc.wait_cstar_ok(key=(C + "probe").encode())
    yield cc
    cc.proxy.assert_buffers_zero(timeout=5.0)


def key(prefix, name):
    return (prefix + name).encode()


def verify(cl, *prefixes):
    args = ["verify", *cl.ctl_common(), "--json"]
    for p in prefixes:
        args += ["--prefix", p]
    return beansctl(*args)


def replay(cl, *logs, extra=()):
    args = ["replay-errors"]
    for lg in logs:
        args += ["--log", lg]
    return beansctl(*args, *cl.ctl_common(), "--json", *extra)


def bcdual(proxy, cmd):
    return cstar.metric(proxy, "gobeansproxy_error_reqs", cmd=cmd, store="bcdual")


def timed(fn):
    t0 = now_us()
    r = fn()
    return r, t0, now_us()


def test_outage_log_replay_verify(cl, cstar_pause):
    p = cl.proxy
    with p.raw(timeout=30) as c:
        for name in ("upd", "del", "keep"):
            assert c.set(key(CW, name), b"old-" + name.encode()) == b"STORED"
            assert c.set(key(BCR, name), b"old-" + name.encode()) == b"STORED"
        assert c.set(key(C, "x"), b"cstar") == b"STORED"
        assert c.set(key(B, "x"), b"beansdb") == b"STORED"
    assert cl.row(key(CW, "upd")).body == b"old-upd"
    m_set, m_del = bcdual(p, "set"), bcdual(p, "del")
    expect = []          # (op, key, status, t0, t1) of each write whose C* half must fail
    with p.raw(timeout=30) as c:
        with cstar_pause():
            # brw_cw: beansdb's result; the C* failure is only logged.
            r, t0, t1 = timed(lambda: c.set(key(CW, "upd"), b"new-upd", 7))
            assert r == b"STORED"
            expect.append(("set", key(CW, "upd"), BRW_CW, t0, t1))
            r, t0, t1 = timed(lambda: c.set(key(CW, "new"), b"brand-new"))
            assert r == b"STORED"
            expect.append(("set", key(CW, "new"), BRW_CW, t0, t1))
            r, t0, t1 = timed(lambda: c.delete(key(CW, "del")))
            assert r == b"DELETED"
            expect.append(("del", key(CW, "del"), BRW_CW, t0, t1))
            r, t0, t1 = timed(lambda: c.delete(key(CW, "never")))
            assert r == b"NOT_FOUND"
            expect.append(("del", key(CW, "never"), BRW_CW, t0, t1))
            # bw_crw: the C* error is the reply (beansdb was written first).
            r, t0, t1 = timed(lambda: c.set(key(BCR, "upd"), b"new-upd"))
            assert r.startswith(b"SERVER_ERROR cstar: ") and len(r) <= 300, r
            expect.append(("set", key(BCR, "upd"), BW_CRW, t0, t1))
            r, t0, t1 = timed(lambda: c.delete(key(BCR, "del")))
            assert r.startswith(b"SERVER_ERROR cstar: "), r
            expect.append(("del", key(BCR, "del"), BW_CRW, t0, t1))
            # A getm mixing beansdb- and C*-read keys fails whole, within mc.timeout_ms.
            t = time.time()
            c.send(b"get %s %s %s\r\n" % (key(B, "x"), key(C, "x"), key(CW, "keep")))
            first = c.line()
            assert time.time() - t < MC_TIMEOUT_MS / 1000 + 0.5
            assert first.startswith(b"SERVER_ERROR"), first
            # A C*-read single get reports the C* error.
            assert c.cmd(b"get " + key(C, "x")).startswith(b"SERVER_ERROR")
    # Nothing C*-less was delayed: brw reads and writes still work, C* recovers.
    cl.wait_cstar_ok(key=key(C, "probe"))
    assert bcdual(p, "set") - m_set == 3
    assert bcdual(p, "del") - m_del == 3

    lines = cstar.read_lines(cl.dual_log)
    assert len(lines) == len(expect), lines
    for line, (op, k, status, t0, t1) in zip(lines, expect):
        doc = json.loads(line)
        assert list(doc) == FIELDS, line
        assert doc["level"] == "error" and doc["op"] == op and doc["key"] == k.decode(), line
        assert doc["status"] == status and doc["error"], line
        assert t0 - 1000 <= doc["ts_us"] <= t1 + 1000, (t0, line, t1)
        when = datetime.datetime.fromisoformat(doc["time"])
        assert when.tzinfo is not None
        assert abs(when.timestamp() * 1e6 - t0) < 10_000_000, line
        assert doc["proxy"] == "127.0.0.1:%d" % p.port, line

    # Note: a statement that timed out on the client may still be applied by C* after SIGCONT
    # (or be dropped by it), so the state before the replay is not asserted.
    r = replay(cl, cl.dual_log)
    assert r.rc == 0 and r.json, r
    s = r.json
    assert s["lines"] == 6 and s["bad_lines"] == 0 and s["keys"] == 6 and s["errors"] == 0, r
    assert s["written"] == 3 and s["deleted"] == 3 and s["skipped_status"] == 0, r

    v = verify(cl, CW, BCR)
    assert v.rc == 0 and v.json, v
    for cat in ("value_diff", "flag_diff", "missing_in_cstar", "extra_in_cstar", "errors"):
        assert v.json[cat] == 0, v
    assert v.json["checked"] == v.json["equal"] + v.json["transient"] >= 6, v

    # Replayed rows: beansdb's value and flag, rtime = ts·1000, timestamp max(ts·1e6, ts_entry).
    ts_entry = {json.loads(ln)["key"]: json.loads(ln)["ts_us"] for ln in lines}
    with p.raw() as c:
        for k in (key(CW, "upd"), key(CW, "new")):          # brw_cw: the proxy reads beansdb
            row, got, meta = cl.row(k), c.get(k), cstar.meta_fields(c, k)
            assert (row.flag, row.body) == got, (k, row, got)
            ts = meta[4]
            entry = ts_entry[k.decode()]
            assert row.writetime == max(ts * 1_000_000, entry), (k, row, meta, entry)
            # rtime = ts·1000; when the timed-out write was applied late with the same timestamp,
            # C* keeps the larger cell value (its receive time in ms).
            assert row.rtime_ms in (ts * 1000, entry // 1000), (k, row, meta, entry)
            assert row.exptime == 0 and row.cas == 0, (k, row)
        assert c.get(key(BCR, "upd")) == (0, b"new-upd"), "bw_crw reads the replayed C* row"
        assert c.get(key(BCR, "del")) is None
    for k in (key(CW, "del"), key(CW, "never"), key(BCR, "del")):
        assert cl.row(k) is None, k
    assert cl.row(key(CW, "upd")).flag == 7

    # A second replay changes nothing.
    snap = {k: repr(cl.row(k)) for k in (key(CW, "upd"), key(CW, "new"), key(BCR, "upd"), key(CW, "keep"))}
    r2 = replay(cl, cl.dual_log)
    assert r2.rc == 0 and r2.json and r2.json["errors"] == 0, r2
    assert {k: repr(cl.row(k)) for k in snap} == snap
    assert verify(cl, CW, BCR).rc == 0


def test_gobeansproxy_line_and_gz_input(cl, tmp_path):
    """A gobeansproxy-format line (msg, no status/ts_us; time used as ts_us) in a .gz file."""
    p = cl.proxy
    k = key(CW, "gobeans")
    with p.raw() as c:
        assert c.set(k, b"gb-value", 3) == b"STORED"
    w = cl.row(k).writetime
    cl.delete(k, ts_us=w + 1)               # C* lost the row; beansdb still has it
    time.sleep(0.01)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
    line = json.dumps({"time": stamp, "level": "error", "op": "set", "key": k.decode(),
                       "msg": "gocql: no response received from cassandra within timeout period"})
    path = tmp_path / "gobeansproxy-dual.log.gz"
    with gzip.open(path, "wt") as f:
        f.write(line + "\n" + "this is not json\n")
    assert verify(cl, CW).rc == 1
    r = replay(cl, str(path))
    assert r.rc == 0 and r.json, r
    assert r.json["bad_lines"] == 1 and r.json["written"] == 1 and r.json["errors"] == 0, r
    row = cl.row(k)
    assert row is not None and (row.flag, row.body) == (3, b"gb-value"), row
    assert row.writetime > w + 1
    v = verify(cl, CW)
    assert v.rc == 0 and v.json["missing_in_cstar"] == 0, v


def test_skipped_status_and_dry_run(cl, tmp_path):
    """Entries for keys whose status is not brw_cw/bw_crw are skipped; --dry-run writes nothing."""
    p = cl.proxy
    kc, kb, kw = key(C, "dry"), key(B, "dry"), key(CW, "dry")
    with p.raw() as c:
        assert c.set(kc, b"cstar") == b"STORED"
        assert c.set(kb, b"beansdb") == b"STORED"
        assert c.set(kw, b"dual") == b"STORED"
    cl.delete(kw, ts_us=cl.row(kw).writetime + 1)
    path = tmp_path / "dual.log"
    entries = []
    for k, st in ((kc, CRW), (kb, "br1w1cr0w0"), (kw, BRW_CW)):
        entries.append(json.dumps({"time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                                   "level": "error", "op": "set", "key": k.decode(), "status": st,
                                   "ts_us": now_us(), "error": "timeout", "proxy": "127.0.0.1:1"}))
    path.write_text("\n".join(entries) + "\n")
    r = replay(cl, str(path), extra=("--dry-run",))
    assert r.rc == 0, r
    assert cl.row(kw) is None, "--dry-run wrote to C*"
    r = replay(cl, str(path))
    assert r.rc == 0 and r.json and r.json["skipped_status"] == 2 and r.json["written"] == 1, r
    assert cl.row(kw).body == b"dual"
    assert cl.row(kb) is None
