"""Shadow-read verification (cassandra.md §8, §11 "Shadow reads"): ratio 1.0; matches, confirmed
mismatches of every kind (metrics, WARN line, mismatch_log), transient differences under a racing
write, and a C* outage that neither slows brw_cw reads nor counts as a mismatch."""

import json
import time

import pytest

import cstar
from cstar import BRW_CW, BW_CRW, Metrics, wait_until

CW, BCR = "/sh_cw/", "/sh_bcr/"
STATIC = {BRW_CW: [CW], BW_CRW: [BCR]}
RECHECK_MS = 700
READS = "beansproxy_shadow_reads_total"
MISMATCHES = "beansproxy_shadow_mismatches_total"


@pytest.fixture(scope="module")
def cc(cstar_cluster_factory, tmp_path_factory):
    mlog = str(tmp_path_factory.mktemp("shadow") / "mismatch.jsonl")
    c = cstar_cluster_factory(
        static=STATIC,
        shadow={"enable": True, "ratio": 1.0, "recheck_delay_ms": RECHECK_MS, "max_inflight": 16,
                "mismatch_log": mlog},
        cassandra={"retry_num": 0})
    c.mismatch_log = mlog
    return c


@pytest.fixture
def cl(cc):
    cc.proxy.wait_hosts_up()
    cc.wait_cstar_ok(key=b"/sh_bcr/probe", write=True)
    yield cc
    cc.proxy.assert_buffers_zero(timeout=5.0)


class Counters:
    """Snapshot of the shadow metrics of one prefix; `delta()` against a later scrape."""

    def __init__(self, proxy, prefix):
        self.proxy, self.prefix = proxy, prefix
        self.base = self.scrape()

    def scrape(self):
        m = Metrics(self.proxy)
        out = {("reads", r): m.get(READS, prefix=self.prefix, result=r)
               for r in ("match", "mismatch", "transient", "error", "dropped")}
        out.update({("kind", k): m.get(MISMATCHES, prefix=self.prefix, kind=k)
                    for k in ("value", "flag", "missing_in_cstar", "missing_in_beansdb")})
        return out

    def delta(self):
        now = self.scrape()
        return {k: now[k] - self.base[k] for k in now if now[k] != self.base[k]}

    def wait(self, want, timeout=None):
        """Wait until the delta equals `want` exactly (then hold briefly to see it stays)."""
        timeout = timeout or (RECHECK_MS / 1000 + 5)
        wait_until(lambda: self.delta() == want, timeout, interval=0.05,
                   what="shadow metrics delta %r (now %r)" % (want, self.delta()))
        time.sleep(0.3)
        assert self.delta() == want


def mismatch_lines(cl, key):
    text = cstar.file_text(cl.proxy.errorlog)
    return [ln for ln in text.splitlines() if "shadow-read mismatch" in ln and ("key=%s " % key.decode()) in ln]


def test_equal_data_counts_match(cl):
    k1, k2 = b"/sh_cw/m1", b"/sh_cw/m2"
    with cl.proxy.raw() as c:
        assert c.set(k1, b"same") == b"STORED"
        assert c.set(k2, b"same2", 5) == b"STORED"
        cnt = Counters(cl.proxy, CW)
        before = Metrics(cl.proxy)
        assert c.get(k1) == (0, b"same")
        cnt.wait({("reads", "match"): 1})
        # Shadow reads are not requests: only the beansdb get is counted.
        after = Metrics(cl.proxy)
        for store, want in (("beansdb", 1), ("cstar", 0)):
            name = "gobeansproxy_total_reqs"
            assert after.get(name, cmd="get", store=store) - before.get(name, cmd="get", store=store) == want
        # getm: each plain key is sampled; a miss in both stores is a match too.
        cnt = Counters(cl.proxy, CW)
        got = c.retrieve(b"get %s %s /sh_cw/none" % (k1, k2))
        assert [g[0] for g in got] == [k1, k2]
        cnt.wait({("reads", "match"): 3})
        # gets is eligible; ? / ?? keys never are.
        cnt = Counters(cl.proxy, CW)
        c.retrieve(b"gets " + k1)
        c.retrieve(b"get ?" + k1)
        c.retrieve(b"get ??" + k2)
        cnt.wait({("reads", "match"): 1})


def test_value_flag_and_missing_mismatches_in_brw_cw(cl):
    p = cl.proxy
    with p.raw() as c:
        kv, kf, km = b"/sh_cw/value", b"/sh_cw/flag", b"/sh_cw/missing"
        for k in (kv, kf, km):
            assert c.set(k, b"beansdb-val") == b"STORED"
        cl.insert(kv, b"cstar-value")
        cl.insert(kf, b"beansdb-val", flag=9)
        cl.delete(km)
        for k, kind in ((kv, "value"), (kf, "flag"), (km, "missing_in_cstar")):
            cnt = Counters(p, CW)
            assert c.get(k) == (0, b"beansdb-val"), "the reply is always the primary's"
            cnt.wait({("reads", "mismatch"): 1, ("kind", kind): 1})
            lines = mismatch_lines(cl, k)
            assert len(lines) == 1 and " WARN " in lines[0], lines
            assert "kind=%s status=%s prefix=%s key=%s " % (kind, BRW_CW, CW, k.decode()) in lines[0], lines
        assert "beansdb=hit:len=11:flag=0 cstar=hit:len=11:flag=0" in mismatch_lines(cl, kv)[0]
        assert "beansdb=hit:len=11:flag=0 cstar=hit:len=11:flag=9" in mismatch_lines(cl, kf)[0]
    docs = [json.loads(ln) for ln in cstar.read_lines(cl.mismatch_log)]
    by_key = {d["key"]: d for d in docs}
    for k, kind in ((kv, "value"), (kf, "flag"), (km, "missing_in_cstar")):
        d = by_key[k.decode()]
        assert d["kind"] == kind and d["status"] == BRW_CW and "time" in d, d
        assert isinstance(d["beansdb"], dict) and isinstance(d["cstar"], dict), d


def test_bw_crw_detects_direct_beansdb_changes(cl):
    p = cl.proxy
    kb, kn = b"/sh_bcr/changed", b"/sh_bcr/cstar-only"
    with p.raw() as c:
        assert c.set(kb, b"through-proxy") == b"STORED"
        cl.wait_beansdb_on_mains(kb, b"through-proxy")
        cl.put_direct_beansdb(kb, b"changed-on-nodes")
        cnt = Counters(p, BCR)
        assert c.get(kb) == (0, b"through-proxy"), "bw_crw replies from C*"
        cnt.wait({("reads", "mismatch"): 1, ("kind", "value"): 1})
        line = mismatch_lines(cl, kb)
        assert len(line) == 1 and "kind=value status=%s prefix=%s" % (BW_CRW, BCR) in line[0], line
        cl.insert(kn, b"only-in-cstar")
        cnt = Counters(p, BCR)
        assert c.get(kn) == (0, b"only-in-cstar")
        cnt.wait({("reads", "mismatch"): 1, ("kind", "missing_in_beansdb"): 1})
        assert len(mismatch_lines(cl, kn)) == 1


def test_racing_write_is_transient(cl):
    p = cl.proxy
    k = b"/sh_cw/race"
    with p.raw() as c:
        assert c.set(k, b"v1") == b"STORED"
        cl.insert(k, b"drifted")
        cnt = Counters(p, CW)
        t0 = time.time()
        assert c.get(k) == (0, b"v1")
        # The shadow read has seen the difference; a write through the proxy makes both stores
        # agree before the recheck.
        wait_until(lambda: time.time() - t0 >= 0.15, 1)
        assert c.set(k, b"v2") == b"STORED"
        assert time.time() - t0 < RECHECK_MS / 1000 - 0.1, "too slow to race the recheck"
    cnt.wait({("reads", "transient"): 1})
    assert mismatch_lines(cl, k) == []


def test_cassandra_outage_keeps_brw_cw_gets_fast(cl, cstar_pause):
    p = cl.proxy
    k = b"/sh_cw/outage"
    n = 100
    with p.raw() as c:
        assert c.set(k, b"value") == b"STORED"
        assert c.get(k) == (0, b"value")
        time.sleep(0.5)
        cnt = Counters(p, CW)
        lat = []
        with cstar_pause():
            for _ in range(n):
                t = time.perf_counter()
                assert c.get(k) == (0, b"value")
                lat.append(time.perf_counter() - t)
            # Keep C* stopped until every sample resolved (timeouts / drops).
            wait_until(lambda: sum(cnt.delta().values()) >= n, 8, interval=0.1, what="shadow samples resolved")
        d = cnt.delta()
    lat.sort()
    p99 = lat[int(0.99 * n) - 1]
    assert p99 < 0.050, "p99 %.1f ms (max %.1f ms)" % (p99 * 1000, lat[-1] * 1000)
    assert set(d) <= {("reads", "error"), ("reads", "dropped")}, d
    assert sum(d.values()) == n, d
    assert d.get(("reads", "dropped"), 0) > 0, "max_inflight 16 must drop some of 100 samples"
    cl.wait_cstar_ok(key=b"/sh_bcr/probe", write=True)


def test_prefix_filter_and_default_label(cc_filtered):
    """shadow_read.prefixes limits sampling; unmatched switcher prefixes are labelled default."""
    p = cc_filtered.proxy
    with p.raw() as c:
        assert c.set(b"/shf_in/a", b"x") == b"STORED"
        assert c.set(b"/shf_out/a", b"x") == b"STORED"
        before = Metrics(p)
        assert c.get(b"/shf_in/a") == (0, b"x")
        assert c.get(b"/shf_out/a") == (0, b"x")

    def matched():
        m = Metrics(p)
        return (m.get(READS, prefix="default", result="match") - before.get(READS, prefix="default", result="match"),
                m.get(READS) - before.get(READS))
    wait_until(lambda: matched() == (1, 1), 5, what="one sampled read under the default label")
    time.sleep(0.3)
    assert matched() == (1, 1)
    p.assert_buffers_zero(timeout=5.0)


@pytest.fixture(scope="module")
def cc_filtered(cstar_cluster_factory):
    # Default status brw_cw for every key; only /shf_in/ is sampled.
    return cstar_cluster_factory(
        cassandra={"default_storage": BRW_CW, "retry_num": 0},
        shadow={"enable": True, "ratio": 1.0, "recheck_delay_ms": 200, "prefixes": ["/shf_in/"]})

