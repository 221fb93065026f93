"""All five statuses end to end through beansproxy against real beansdb nodes and a real
Cassandra 5.0 (cassandra.md §4.1, §5.1–§5.5, §11 "All five statuses", "Timestamps (C2)", "Memory
and size"). One prefix per status, set statically in proxy.yaml; the table dispatcher sends /ark/
keys to kvstore_ark."""

import hashlib
import time

import pytest

import cstar
import proxyproc
from cstar import BRW, BRW_CW, BW_CRW, CRW, CR, READS_CSTAR
from cstar import assert_stored_where, now_us, retrieve_lines

P = {BRW: "/st_brw/", BRW_CW: "/st_cw/", BW_CRW: "/st_bcr/", CRW: "/st_crw/", CR: "/st_cr/"}
STATIC = {BRW: [P[BRW]], BRW_CW: [P[BRW_CW]], BW_CRW: [P[BW_CRW], "/ark/"], CRW: [P[CRW]], CR: [P[CR]]}
HIGH_FLAG = 0x80000003          # a u32 flag with the top bit set: stored as a negative i32 in C*


def k(status, name):
    return (P[status] + name).encode()


@pytest.fixture(scope="module")
def cc(cstar_cluster_factory):
    # Generous timeouts: 10 MiB values go through beansdb and C* on a shared 2-core machine.
    return cstar_cluster_factory(
        static=STATIC,
        cassandra={"timeout_ms": 5000, "write_timeout_ms": 5000},
        overrides={"mc": {"timeout_ms": 15000}})


@pytest.fixture
def cl(cc):
    for n in cc.nodes:
        if not n.running():
            n.start(keep_ports=True)
    cc.proxy.wait_hosts_up()
    yield cc
    cc.proxy.assert_buffers_zero(timeout=5.0)


# ----- set / get / gets


def test_set_get_and_placement_per_status(cl):
    with cl.proxy.raw() as c:
        for status in P:
            key, value = k(status, "a"), b"value-of-" + status.encode()
            t0 = now_us()
            reply = c.set(key, value, HIGH_FLAG)
            t1 = now_us()
            assert reply == (b"NOT_STORED" if status == CR else b"STORED"), (status, reply)
            got = c.get(key)
            assert got == (None if status == CR else (HIGH_FLAG, value)), (status, got)
            assert_stored_where(cl, key, status, value, HIGH_FLAG)
            row = cl.row(key)
            if row is not None:
                # UDT of §2.1: rtime = receive time (ms), USING TIMESTAMP = receive time (µs).
                assert row.exptime == 0 and row.cas == 0, row
                assert t0 - 50_000 <= row.writetime <= t1 + 50_000, (t0, row, t1)
                assert t0 // 1000 - 50 <= row.rtime_ms <= t1 // 1000 + 50, (t0, row, t1)
                assert abs(row.writetime // 1000 - row.rtime_ms) <= 5, row
            # gets: cas 0 for data written with plain set, whichever store is read.
            got = retrieve_lines(c, b"gets " + key)
            if status == CR:
                assert got == []
            else:
                assert got == [(key, b"%d" % HIGH_FLAG, b"%d" % len(value), b"0", value)], (status, got)


def test_empty_value_and_overwrite_in_cstar_statuses(cl):
    with cl.proxy.raw() as c:
        for status in (BRW_CW, BW_CRW, CRW):
            key = k(status, "empty")
            assert c.set(key, b"x" * 10) == b"STORED"
            assert c.set(key, b"") == b"STORED"
            assert c.get(key) == (0, b""), status
            row = cl.row(key)
            assert row is not None and row.body == b"", (status, row)


def test_exptime_and_cas_fields(cl):
    """exptime is stored as sent; `cas` writes the casid's low 32 bits, and gets in C*-read
    statuses reports the stored cas (§2.1, §5.2)."""
    with cl.proxy.raw() as c:
        key = k(CRW, "exptime")
        assert c.set(key, b"abc", 0, 7) == b"STORED"
        assert cl.row(key).exptime == 7
        for status in (BRW_CW, BW_CRW, CRW):
            key = k(status, "cas")
            for casid, want in ((0x100000005, 5), (4294967294, 4294967294)):
                body = b"cas-%d" % want
                c.send(b"cas %s 0 0 %d %d\r\n%s\r\n" % (key, len(body), casid, body))
                assert c.line() == b"STORED", status
                row = cl.row(key)
                assert row.body == body and row.cas == want, (status, row)
                got = retrieve_lines(c, b"gets " + key)
                shown = want if status in READS_CSTAR else 0
                assert got == [(key, b"0", b"%d" % len(body), b"%d" % shown, body)], (status, got)


# ----- getm


def test_getm_across_prefixes_in_request_order(cl):
    hits = {}
    with cl.proxy.raw() as c:
        for status in (BRW, BRW_CW, BW_CRW, CRW):
            key = k(status, "m1")
            assert c.set(key, b"getm-" + key) == b"STORED"
            hits[key] = b"getm-" + key
    # cr reads C*: a row inserted directly is visible; so is one in crw.
    cl.insert(k(CR, "m1"), b"direct-cr", flag=0)
    hits[k(CR, "m1")] = b"direct-cr"
    # Rows that only C* has under beansdb-read prefixes, and beansdb-only data under a C*-read
    # prefix, are never returned.
    cl.insert(k(BRW, "m2"), b"cstar-only")
    cl.insert(k(BRW_CW, "m2"), b"cstar-only")
    cl.put_direct_beansdb(k(BW_CRW, "m2"), b"beansdb-only")
    cl.put_direct_beansdb(k(CRW, "m2"), b"beansdb-only")
    order = [k(CRW, "m1"), k(BRW, "m2"), k(BRW, "m1"), k(CR, "m1"), k(BW_CRW, "m2"), k(BRW_CW, "m1"),
             k(CRW, "m1"), k(BW_CRW, "m1"), k(BRW_CW, "m2"), k(CRW, "m2"), k(CR, "nosuch"), k(BRW, "m1")]
    want = []
    for key in order:
        if key in hits and key not in [w[0] for w in want]:
            want.append((key, b"0", hits[key]))
    before = {st: cstar.metric(cl.proxy, "beansproxy_requests_by_status_total", status=st, cmd="getm")
              for st in (BRW, BRW_CW, BW_CRW, CRW, CR)}
    with cl.proxy.raw() as c:
        got = c.retrieve(b"get " + b" ".join(order))
        assert [(g[0], b"%d" % g[1], g[2]) for g in got] == want
    # One count per status present among the request's keys (§5.6).
    for st, n in before.items():
        assert cstar.metric(cl.proxy, "beansproxy_requests_by_status_total", status=st,
                            cmd="getm") == n + 1, st
    mc = cl.proxy.mc()
    res = mc.get_multi([x.decode() for x in order])
    assert {x.encode(): v for x, v in res.items()} == hits


def test_getm_fails_whole_when_beansdb_part_fails(cl):
    """§5.4: a failing beansdb part fails the whole getm, C* hits are not returned alone."""
    kb, kc = k(BRW, "gm-fail"), k(CRW, "gm-ok")
    with cl.proxy.raw() as c:
        assert c.set(kb, b"b") == b"STORED"
        assert c.set(kc, b"c") == b"STORED"
    cl.proxy.assert_buffers_zero(timeout=5.0)
    mains = cl.bucket_mains(proxyproc.bucket_of(kb))
    for n in mains:
        n.stop()
    try:
        with cl.proxy.raw() as c:
            c.send(b"get %s %s\r\n" % (kc, kb))
            assert c.line() == b"SERVER_ERROR read failed"
            assert c.get(kc) == (0, b"c"), "the connection and the C* path still work"
    finally:
        for n in mains:
            n.start(keep_ports=True)
        cl.proxy.wait_hosts_up()


# ----- meta keys


def test_meta_keys_beansdb_and_faked(cl):
    with cl.proxy.raw() as c:
        for status in (BRW, BRW_CW):
            key = k(status, "meta")
            assert c.set(key, b"hello", 5) == b"STORED"
            (rk, _, body), = c.retrieve(b"get ?" + key)
            f = body.split()
            assert rk == b"?" + key and len(f) == 5 and int(f[0]) == 1, (status, body)
            assert int(f[2]) == 5 and int(f[3]) == 5, (status, body)
            (_, _, body), = c.retrieve(b"get ??" + key)
            assert len(body.split()) == 7, body
        for status in (BW_CRW, CRW):
            key = k(status, "meta")
            assert c.set(key, b"hello!", HIGH_FLAG) == b"STORED"
            row = cl.row(key)
            want = b"1 0 %d 6 %d" % (HIGH_FLAG, row.rtime_ms // 1000)
            assert retrieve_lines(c, b"get ?" + key) == [(b"?" + key, b"0", b"%d" % len(want), want)]
            want2 = want + b" 0 0"
            assert retrieve_lines(c, b"get ??" + key) == [(b"??" + key, b"0", b"%d" % len(want2), want2)]
        key = k(CR, "meta")
        cl.insert(key, b"archived", flag=3, rtime_ms=1700000000123)
        assert c.retrieve(b"get ?" + key) == [(b"?" + key, 0, b"1 0 3 8 1700000000")]
        assert c.retrieve(b"get ??" + key) == [(b"??" + key, 0, b"1 0 3 8 1700000000 0 0")]
        # Missing keys: END (no negative-version meta from C*).
        for status in (BW_CRW, CRW, CR):
            assert c.retrieve(b"get ?" + k(status, "nometa")) == []
            assert c.retrieve(b"get ??" + k(status, "nometa")) == []
        # `?` / `??` alone: the node's replies, whatever the statuses.
        assert c.cmd(b"get ?") == b"SERVER_ERROR bad key ?"
        assert c.retrieve(b"get ??") == []


# ----- delete


def test_delete_replies_and_effects(cl):
    with cl.proxy.raw() as c:
        for status in (BRW, BRW_CW, BW_CRW, CRW):
            key = k(status, "del")
            assert c.set(key, b"to-delete") == b"STORED"
        cl.insert(k(CR, "del"), b"archived")
        replies = {s: c.delete(k(s, "del")) for s in P}
        assert replies == {BRW: b"DELETED", BRW_CW: b"DELETED", BW_CRW: b"DELETED", CRW: b"DELETED",
                           CR: b"NOT_FOUND"}
        for status in P:
            key = k(status, "del")
            got = c.get(key)
            assert got == ((0, b"archived") if status == CR else None), (status, got)
            row = cl.row(key)
            assert (row is not None) == (status == CR), (status, row)
            if status in (BRW, BRW_CW, BW_CRW):
                cstar.wait_until(lambda: cl.beansdb_holders(key) == [], 5, what="tombstones on nodes")
        # Meta after delete: beansdb reports the tombstone (negative version), C* has no row.
        meta = cstar.meta_fields(c, k(BRW_CW, "del"))
        assert meta is not None and meta[0] < 0, meta
        assert c.retrieve(b"get ?" + k(BW_CRW, "del")) == []
        assert c.retrieve(b"get ?" + k(CRW, "del")) == []
        # Never-written keys: beansdb's answer where beansdb is written; crw cannot tell.
        replies = {s: c.delete(k(s, "never")) for s in P}
        assert replies == {BRW: b"NOT_FOUND", BRW_CW: b"NOT_FOUND", BW_CRW: b"NOT_FOUND",
                           CRW: b"DELETED", CR: b"NOT_FOUND"}


# ----- incr / append


def test_incr_append_prepend_replies(cl):
    with cl.proxy.raw() as c:
        assert c.cmd(b"incr " + k(BRW, "n") + b" 5") == b"5"
        for status in (BRW_CW, BW_CRW, CRW, CR):
            key = k(status, "n")
            assert c.cmd(b"incr " + key + b" 5") == b"SERVER_ERROR cstar store do not support incr", status
            assert cl.beansdb_holders(key) == [] and cl.row(key) is None, status
        for status in P:
            key = k(status, "app")
            if status != CR:
                assert c.set(key, b"base") == b"STORED"
            c.send(b"append %s 0 0 3\r\nxyz\r\n" % key)
            reply = c.line()
            c.send(b"prepend %s 0 0 3\r\nxyz\r\n" % key)
            reply2 = c.line()
            if status == BRW:
                assert reply == reply2 == b"SERVER_ERROR operation not support"
            else:
                assert reply == b"SERVER_ERROR cstar store do not support append", (status, reply)
                assert reply2.startswith(b"SERVER_ERROR cstar store do not support"), (status, reply2)
            assert c.cmd(b"version").startswith(b"VERSION"), "connection usable, body consumed"
            assert c.get(key) == (None if status == CR else (0, b"base")), status


# ----- invalid keys


def test_invalid_keys(cl):
    want_set = {BRW: b"SERVER_ERROR write failed", BRW_CW: b"SERVER_ERROR write failed",
                BW_CRW: b"SERVER_ERROR write failed", CRW: b"SERVER_ERROR Key format invalid",
                CR: b"NOT_STORED"}
    with cl.proxy.raw() as c:
        for status in P:
            key = k(status, "bad\x0fkey")
            assert c.set(key, b"v") == want_set[status], status
            assert c.delete(key) == b"NOT_FOUND", status
            assert c.retrieve(b"get " + key) == [], status
            assert cl.row(key) is None and cl.beansdb_holders(key) == [], status
        assert c.cmd(b"version").startswith(b"VERSION")


# ----- table dispatcher


def test_table_dispatcher_routes_ark_keys(cl):
    with cl.proxy.raw() as c:
        key = b"/ark/x1"
        assert c.set(key, b"in-ark", 4) == b"STORED"          # /ark/ is bw_crw
        row = cl.row(key, table="kvstore_ark")
        assert row is not None and row.body == b"in-ark" and row.flag == 4
        assert cl.row(key) is None, "not in the default table"
        cl.wait_beansdb_on_mains(key, b"in-ark")
        assert c.get(key) == (4, b"in-ark")
        # Reads use kvstore_ark too.
        cl.insert(b"/ark/only-default", b"wrong table")
        assert c.get(b"/ark/only-default") is None
        cl.insert(b"/ark/only-ark", b"right table", table="kvstore_ark", rtime_ms=1700000005000)
        assert c.get(b"/ark/only-ark") == (0, b"right table")
        assert c.retrieve(b"get ?/ark/only-ark") == [(b"?/ark/only-ark", 0, b"1 0 0 11 1700000005")]
        assert c.delete(key) == b"DELETED"
        assert cl.row(key, table="kvstore_ark") is None


# ----- timestamps (C2)


def test_timestamps_direct_inserts_and_delete_shadowing(cl):
    with cl.proxy.raw() as c:
        key = k(CRW, "ts1")
        assert c.set(key, b"proxy-value") == b"STORED"
        w = cl.row(key).writetime
        cl.insert(key, b"older", ts_us=w - 1_000_000)
        assert c.get(key) == (0, b"proxy-value")
        cl.insert(key, b"newer", ts_us=w + 1_000_000)
        assert c.get(key) == (0, b"newer")

        # A proxy delete shadows an older direct insert, whichever arrives first.
        key = k(CRW, "ts2")
        cl.insert(key, b"before-delete", ts_us=now_us() - 1_000_000)
        assert c.get(key) == (0, b"before-delete")
        assert c.delete(key) == b"DELETED"
        assert c.get(key) is None
        cl.insert(key, b"late-but-older", ts_us=now_us() - 1_000_000)
        assert c.get(key) is None
        assert cl.row(key) is None

        # Successive proxy writes get strictly increasing timestamps (same key, fast).
        key = k(CRW, "ts3")
        stamps = []
        for i in range(20):
            assert c.set(key, b"%d" % i) == b"STORED"
            stamps.append(cl.row(key).writetime)
        assert stamps == sorted(stamps) and len(set(stamps)) == 20
        assert c.get(key) == (0, b"19")


# ----- large values


@pytest.mark.parametrize("size", [1 << 20, 10 << 20], ids=["1MiB", "10MiB"])
def test_large_values_round_trip(cl, size):
    for status in (CRW, BW_CRW):
        key = k(status, "big%d" % size)
        value = (hashlib.sha256(key).digest() * (size // 32 + 1))[:size]
        with cl.proxy.raw(timeout=60) as c:
            t0 = time.time()
            assert c.set(key, value, 1) == b"STORED", status
            got = c.get(key)
            assert got is not None and got[0] == 1 and got[1] == value, (status, time.time() - t0)
            small = k(status, "small")
            assert c.set(small, b"s") == b"STORED"
            res = c.retrieve(b"get %s %s %s" % (key, small, key))
            assert [(r[0], r[2] == value if r[0] == key else r[2]) for r in res] == [(key, True), (small, b"s")]
        row = cl.row(key)
        assert row is not None and len(row.body) == size and row.body == value
        if status == BW_CRW:
            cl.wait_beansdb_on_mains(key, value, timeout=15)
        else:
            assert cl.beansdb_holders(key) == []
