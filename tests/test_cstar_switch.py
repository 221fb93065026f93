"""Online status switches through /cstar-cfg (cassandra.md §4.3, §4.4, §6, §11 "Online switch via
/cstar-cfg"): GET shape, PUT/DELETE/POST, the switch_storage_test sequences, a continuous writer
across a full walk brw → brw_cw → bw_crw → crw, a fleet following via POST and
refresh_interval_sec, error cases that leave the config rows unchanged, and the table finder."""

import copy
import threading
import time

import pytest

import cstar
from cstar import (BRW, BRW_CW, BW_CRW, CRW, READS_BEANSDB, WRITES_BEANSDB, WRITES_CSTAR,
                   assert_stored_where, cfg_map, cfg_ok, cfg_request, set_status, wait_until)

STATIC = {CRW: ["/sw_static/"]}
UNSUPPORTED = "unsupported config query arg, must be: tablefinder/rwswitcher"
PUT_HINT = 'doesn\'t match {"prefix": {"<dispatch_to>": ["prefix1", "prefix2"]}}'
DELETE_HINT = 'req data should like: {"prefix": <your data>}'


@pytest.fixture(scope="module")
def cc(cstar_cluster_factory):
    return cstar_cluster_factory(static=STATIC, table_cfg=True)


@pytest.fixture
def cl(cc):
    cc.proxy.wait_hosts_up()
    yield cc
    cc.proxy.assert_buffers_zero(timeout=5.0)


def rw_rows(cl):
    return cl.cs.cfg_rows(cl.ks, "bdb_prefix_rw_switcher")


def tf_rows(cl):
    return cl.cs.cfg_rows(cl.ks, "bdb_prefix_table_finder")


def snapshot(cl, proxy=None):
    p = proxy or cl.proxy
    return rw_rows(cl), tf_rows(cl), cfg_map(p, "rwswitcher"), cfg_map(p, "tablefinder")


def expect_error(proxy, code, method, config="rwswitcher", body=None, raw=None, error=None,
                 startswith=None, contains=(), path="/cstar-cfg"):
    status, doc, payload, headers = cfg_request(proxy, method, config, body=body, raw=raw, path=path)
    ctx = (method, config, body, raw, status, payload[:400])
    assert status == code, ctx
    assert headers.get("content-type", "").startswith("application/json"), (ctx, headers)
    assert isinstance(doc, dict) and doc.get("error"), ctx
    assert doc.get("message") != "success", ctx
    if error is not None:
        assert doc["error"] == error, ctx
    if startswith is not None:
        assert doc["error"].startswith(startswith), ctx
    for c in contains:
        assert c in doc["error"], (c, ctx)
    return doc


# ----- GET


def test_get_shape_shows_union_and_default(cl):
    rows = rw_rows(cl)
    for path in ("/cstar-cfg", "/cstar-cfg/"):
        status, doc, payload, headers = cfg_request(cl.proxy, "GET", "rwswitcher", path=path)
        assert status == 200, payload
        assert headers["content-type"].startswith("application/json")
        assert doc == {"cfg": dict({"/sw_static/": CRW}, **rows), "default": BRW, "message": "success",
                       "error": ""}
    status, doc, payload, _ = cfg_request(cl.proxy, "GET", "tablefinder")
    assert status == 200, payload
    assert doc == {"cfg": dict({"/ark/": "kvstore_ark"}, **tf_rows(cl)), "default": "kvstore",
                   "message": "success", "error": ""}
    # A row added to the table directly shows after a POST (union of static and table).
    cl.cs.put_cfg_row(cl.ks, "/sw_direct/", BRW_CW)
    try:
        cfg_ok(cl.proxy, "POST", "rwswitcher")
        cfgm, default = cfg_map(cl.proxy)
        assert cfgm == dict({"/sw_static/": CRW}, **rw_rows(cl)) and cfgm["/sw_direct/"] == BRW_CW
        assert default == BRW
    finally:
        cfg_ok(cl.proxy, "DELETE", "rwswitcher", {"prefix": "/sw_direct/"})
    assert "/sw_direct/" not in rw_rows(cl) and "/sw_direct/" not in cfg_map(cl.proxy)[0]


# ----- errors


def test_errors_leave_rows_and_snapshot_unchanged(cl):
    before = snapshot(cl)
    p = cl.proxy
    expect_error(p, 400, "GET", config=None, error=UNSUPPORTED)
    expect_error(p, 400, "GET", config="bogus", error=UNSUPPORTED)
    expect_error(p, 405, "PATCH", error="unsupported method")
    expect_error(p, 400, "PUT", raw=b"{not json", startswith="parse req err: ")
    expect_error(p, 400, "PUT", body={"prefix": ["/sw_e/"]}, startswith="parse req err: ", contains=[PUT_HINT])
    expect_error(p, 400, "DELETE", raw=b"[1, 2", startswith="parse req err: ")
    expect_error(p, 400, "DELETE", body={"prefix": ["/sw_e/"]}, startswith="parse req err: ",
                 contains=[DELETE_HINT])
    expect_error(p, 400, "PUT", body={"prefix": {"bogus": ["/sw_e/"]}}, error="bogus is not a validate rwstatus")
    expect_error(p, 400, "PUT", body={"prefix": {BRW_CW: ["/sw_static/"]}},
                 error='prefix "/sw_static/" is defined in proxy.yaml; change it there and POST')
    expect_error(p, 400, "PUT", body={"prefix": {BRW_CW: [""]}}, error="empty prefix is not allowed")
    # Validation is complete before anything is written: the valid half is not stored either.
    expect_error(p, 400, "PUT", body={"prefix": {BRW_CW: ["/sw_e1/"], "bogus": ["/sw_e2/"]}},
                 error="bogus is not a validate rwstatus")
    expect_error(p, 400, "PUT", body={"prefix": {BRW_CW: ["/sw_e3/", "/sw_static/"]}},
                 error='prefix "/sw_static/" is defined in proxy.yaml; change it there and POST')
    expect_error(p, 400, "PUT", config="tablefinder", body={"prefix": {"bad-name": ["/sw_e4/"]}},
                 error='bad table name "bad-name"')
    expect_error(p, 400, "PUT", config="tablefinder", body={"prefix": {"kvstore": ["/ark/"]}},
                 error='prefix "/ark/" is defined in proxy.yaml; change it there and POST')
    assert snapshot(cl) == before
    # A valid table name that cannot be prepared: a C* error (502), the row is not written.
    status, doc, payload, _ = cfg_request(p, "PUT", "tablefinder", body={"prefix": {"nosuch_tbl": ["/sw_e5/"]}})
    assert status == 502 and doc and doc.get("error"), payload
    assert snapshot(cl) == before
    with p.raw() as c:
        assert c.set(b"/sw_e1/x", b"v") == b"STORED"
    assert cl.row(b"/sw_e1/x") is None, "the refused PUT changed nothing: /sw_e1/ is still brw"


def test_post_with_broken_yaml_or_disabling_keeps_snapshot(cl):
    p = cl.proxy
    before = snapshot(cl)
    yaml_path = cl.proxy_yaml
    try:
        with open(yaml_path, "w") as f:
            f.write("cassandra: [\n")
        expect_error(p, 502, "POST", startswith="load static cfg err: ")
        assert snapshot(cl) == before
        # Turning the rw dispatcher off needs a restart.
        saved = copy.deepcopy(p.overrides)
        p.overrides["cassandra"]["prefix_rw_dispatcher_cfg"]["enable"] = False
        p.write_conf()
        p.overrides = saved
        status, doc, payload, _ = cfg_request(p, "POST", "rwswitcher")
        assert status != 200 and doc and "you can't disable rw dispatcher online" in doc.get("error", ""), payload
        assert snapshot(cl) == before
    finally:
        p.write_conf()
        cfg_ok(p, "POST", "rwswitcher")
    assert snapshot(cl) == before


def test_cassandra_disabled_proxy_answers_400(cl):
    p = cl.add_proxy("nocstar", cassandra={"enable": False})
    try:
        for config in ("rwswitcher", "tablefinder"):
            expect_error(p, 400, "GET", config=config, error="cassandra is disabled")
    finally:
        p.stop()


# ----- the switch_storage_test sequences


SEQ1 = [BRW_CW, BW_CRW, CRW, BRW]
SEQ2 = [BRW_CW, BW_CRW, BRW_CW, BW_CRW, CRW, BRW]


def run_sequence(cl, prefix, seq, apply):
    """At every stage: the probe key shows which store is read, a fresh write lands where the
    status says, and every earlier write is visible iff it reached the store now read."""
    probe = (prefix + "probe").encode()
    cl.put_direct_beansdb(probe, b"from-beansdb")
    cl.insert(probe, b"from-cstar")
    written = []
    for i, status in enumerate(seq):
        apply(i, status)
        reads_beansdb = status in READS_BEANSDB
        with cl.proxy.raw() as c:
            assert c.get(probe) == (0, b"from-beansdb" if reads_beansdb else b"from-cstar"), (i, status)
            key, val = (prefix + "s%d" % i).encode(), b"stage%d-%s" % (i, status.encode())
            assert c.set(key, val) == b"STORED", (i, status)
            assert_stored_where(cl, key, status, val)
            written.append((key, val, status in WRITES_BEANSDB, status in WRITES_CSTAR))
            for key, val, in_b, in_c in written:
                visible = in_b if reads_beansdb else in_c
                assert c.get(key) == ((0, val) if visible else None), (i, status, key, in_b, in_c)


@pytest.mark.parametrize("name,seq,final_delete", [("seq1", SEQ1, False), ("seq2", SEQ2, True)],
                         ids=["seq1", "seq2"])
def test_sequences_via_put_and_delete(cl, name, seq, final_delete):
    prefix = "/sw_put_%s/" % name

    def apply(i, status):
        if status == BRW and final_delete:
            cfg_ok(cl.proxy, "DELETE", "rwswitcher", {"prefix": prefix})
            assert prefix not in rw_rows(cl)
            assert prefix not in cfg_map(cl.proxy)[0]
        else:
            set_status(cl.proxy, prefix, status)
            assert rw_rows(cl)[prefix] == status
            assert cfg_map(cl.proxy)[0][prefix] == status

    try:
        run_sequence(cl, prefix, seq, apply)
    finally:
        cfg_request(cl.proxy, "DELETE", "rwswitcher", body={"prefix": prefix})


@pytest.mark.parametrize("name,seq", [("seq1", SEQ1), ("seq2", SEQ2)], ids=["seq1", "seq2"])
def test_sequences_via_static_yaml_and_post(cl, name, seq):
    prefix = "/sw_yaml_%s/" % name
    p = cl.proxy
    original = copy.deepcopy(p.overrides["cassandra"]["prefix_rw_dispatcher_cfg"]["static"])

    def apply(i, status):
        static = copy.deepcopy(original)
        if not (status == BRW and i == len(seq) - 1 and name == "seq2"):
            static.setdefault(status, []).append(prefix)    # seq2 ends by removing the prefix
        p.overrides["cassandra"]["prefix_rw_dispatcher_cfg"]["static"] = static
        p.write_conf()
        cfg_ok(p, "POST", "rwswitcher")
        assert cfg_map(p)[0].get(prefix, BRW) == status
        assert prefix not in rw_rows(cl)

    try:
        run_sequence(cl, prefix, seq, apply)
    finally:
        p.overrides["cassandra"]["prefix_rw_dispatcher_cfg"]["static"] = original
        p.write_conf()
        cfg_ok(p, "POST", "rwswitcher")


# ----- a full walk under continuous writes


class Writer(threading.Thread):
    """Sets keys round-robin through the proxy; records every acknowledged write."""

    def __init__(self, proxy, prefix, nkeys=40):
        super().__init__(daemon=True)
        self.proxy = proxy
        self.keys = [(prefix + "%02d" % i).encode() for i in range(nkeys)]
        self.acked = {}
        self.errors = []
        self.rounds = 0
        self.seq = 0
        self._pause = threading.Event()
        self._paused = threading.Event()
        self._halt = threading.Event()

    def run(self):
        try:
            with self.proxy.raw(timeout=10) as c:
                i = 0
                while not self._halt.is_set():
                    if self._pause.is_set():
                        self._paused.set()
                        time.sleep(0.01)
                        continue
                    self._paused.clear()
                    key = self.keys[i % len(self.keys)]
                    self.seq += 1
                    val = b"w%07d" % self.seq
                    reply = c.set(key, val)
                    if reply == b"STORED":
                        self.acked[key] = val
                    else:
                        self.errors.append((key, val, reply))
                    i += 1
                    if i % len(self.keys) == 0:
                        self.rounds += 1
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(("exception", repr(e)))

    def wait_rounds(self, n=2, timeout=60):
        start = self.rounds
        wait_until(lambda: self.rounds >= start + n or not self.is_alive(), timeout, what="writer rounds")
        assert self.is_alive(), self.errors

    def pause(self):
        self._pause.set()
        wait_until(self._paused.is_set, 15, what="writer paused")

    def resume(self):
        self._pause.clear()

    def finish(self):
        self._halt.set()
        self.join(15)


def check_walk_stage(cl, w, status):
    with cl.proxy.raw() as c:
        for key in w.keys:
            assert c.get(key) == (0, w.acked[key]), (status, key)
    for key in w.keys:
        row = cl.row(key)
        if status == BRW:
            assert row is None, (key, row)
            continue
        assert row is not None and row.body == w.acked[key], (status, key, row)
        if status in WRITES_BEANSDB:
            cl.wait_beansdb_on_mains(key, w.acked[key])
        else:
            vals = {v for v in cl.node_values(key).values() if v is not None}
            assert len(vals) == 1 and vals.pop()[1] != w.acked[key], (status, key)


def test_walk_under_continuous_writes(cl):
    prefix = "/sw_walk/"
    set_status(cl.proxy, prefix, BRW)
    w = Writer(cl.proxy, prefix)
    w.start()
    try:
        for status in (BRW, BRW_CW, BW_CRW, CRW):
            if status != BRW:
                set_status(cl.proxy, prefix, status)
            w.wait_rounds(2)
            w.pause()
            check_walk_stage(cl, w, status)
            w.resume()
        w.wait_rounds(1)
    finally:
        w.finish()
    assert not w.errors, w.errors[:5]
    assert w.seq > 8 * len(w.keys)
    check_walk_stage(cl, w, CRW)
    # Back to a beansdb-reading status: the crw-era writes are invisible, and a WARN is logged.
    before = cstar.file_text(cl.proxy.errorlog)
    set_status(cl.proxy, prefix, BRW)
    with cl.proxy.raw() as c:
        for key in w.keys:
            got = c.get(key)
            assert got is not None and got[1] != w.acked[key], key
    new = cstar.file_text(cl.proxy.errorlog)[len(before):]
    assert any(" WARN " in ln and prefix in ln for ln in new.splitlines()), new[-2000:]
    cfg_ok(cl.proxy, "DELETE", "rwswitcher", {"prefix": prefix})


# ----- a fleet: POST and refresh_interval_sec


def test_second_proxy_follows_via_post_and_refresh(cl):
    prefix = "/sw_fleet/"
    p1 = cl.proxy
    p2 = cl.add_proxy("fleet_post")
    p3 = cl.add_proxy("fleet_refresh", cassandra={"prefix_rw_dispatcher_cfg": {"refresh_interval_sec": 1}})
    try:
        assert prefix not in cfg_map(p2)[0] and prefix not in cfg_map(p3)[0]
        set_status(p1, prefix, CRW)
        wait_until(lambda: cfg_map(p3)[0].get(prefix) == CRW, 6, interval=0.2, what="refresh on proxy 3")
        assert prefix not in cfg_map(p2)[0], "no refresh configured: proxy 2 keeps its snapshot"
        with p2.raw() as c:
            assert c.set(b"/sw_fleet/before", b"old-snapshot") == b"STORED"
        assert cl.row(b"/sw_fleet/before") is None and cl.beansdb_holders(b"/sw_fleet/before")
        cfg_ok(p2, "POST", "rwswitcher")
        assert cfg_map(p2)[0][prefix] == CRW
        for i, p in enumerate((p2, p3)):
            key = b"/sw_fleet/after%d" % i
            with p.raw() as c:
                assert c.set(key, b"crw") == b"STORED"
                assert c.get(key) == (0, b"crw")
            assert_stored_where(cl, key, CRW, b"crw")
        assert cstar.metric(p3, "beansproxy_switcher_reloads_total", dispatcher="rwswitcher", trigger="refresh") >= 1
        assert cstar.metric(p2, "beansproxy_switcher_reloads_total", dispatcher="rwswitcher", trigger="post") >= 1
        # A DELETE on proxy 1 reaches proxy 3 by refresh, proxy 2 only after its POST.
        cfg_ok(p1, "DELETE", "rwswitcher", {"prefix": prefix})
        wait_until(lambda: prefix not in cfg_map(p3)[0], 6, interval=0.2, what="refresh drops the prefix")
        assert cfg_map(p2)[0].get(prefix) == CRW
        cfg_ok(p2, "POST", "rwswitcher")
        assert prefix not in cfg_map(p2)[0]
        for p in (p2, p3):
            p.assert_buffers_zero()
    finally:
        p2.stop()
        p3.stop()


# ----- table finder


def test_tablefinder_get_put_delete(cl):
    prefix = "/sw_tf/"
    p = cl.proxy
    set_status(p, prefix, CRW)
    try:
        cfg_ok(p, "PUT", "tablefinder", {"prefix": {"kvstore_ark": [prefix]}})
        assert tf_rows(cl)[prefix] == "kvstore_ark"
        cfgm, default = cfg_map(p, "tablefinder")
        assert cfgm == dict({"/ark/": "kvstore_ark"}, **tf_rows(cl)) and default == "kvstore"
        with p.raw() as c:
            assert c.set(b"/sw_tf/a", b"to-ark") == b"STORED"
            assert c.get(b"/sw_tf/a") == (0, b"to-ark")
        assert cl.row(b"/sw_tf/a", "kvstore_ark").body == b"to-ark"
        assert cl.row(b"/sw_tf/a") is None
        cfg_ok(p, "DELETE", "tablefinder", {"prefix": prefix})
        assert prefix not in tf_rows(cl) and prefix not in cfg_map(p, "tablefinder")[0]
        with p.raw() as c:
            assert c.set(b"/sw_tf/b", b"to-default") == b"STORED"
            assert c.get(b"/sw_tf/a") is None, "now read from kvstore"
        assert cl.row(b"/sw_tf/b").body == b"to-default"
        assert cl.row(b"/sw_tf/b", "kvstore_ark") is None
    finally:
        cfg_request(p, "DELETE", "tablefinder", body={"prefix": prefix})
        cfg_ok(p, "DELETE", "rwswitcher", {"prefix": prefix})
