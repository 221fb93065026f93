"""HTTP admin endpoints (node.md §8, §10 "HTTP"): every tool-facing endpoint parses and holds the
documented fields, with values that follow the node's state."""

import os
import re
import time

import yaml

import beansfmt as bf
from nodeproc import BUFFER_KINDS

SERVED = [0, 1, 2, 3, 4, 0xc]

BUCKET_INFO_FIELDS = {"State", "ID", "Home", "TreeID", "NextGCChunk", "Pos", "LastGC", "HintState",
                      "MaxDumpedHintID", "DU", "NumSameVhash", "SizeSameVhash", "SizeVhashKey",
                      "NumSet", "NumGet"}

CONFIG_FIELDS = """Hostname ZKPath ZKServers Listen Port WebPort Threads ErrorLog AccessLog AnalysisLog
StaticDir MaxKeyLen MaxReq BodyMax BodyBig BodyInC FlushMax FlushMaxStr BodyMaxStr BodyBigStr BodyInCStr
TimeoutMS NumBucket Buckets BucketsHex Home FlushWake DataFileMax CheckVHash FlushInterval NoGCDays
FlushWakeStr DataFileMaxStr BufIOCap BufIOCapStr NotCompress NoMerged MergeInterval IndexIntervalSize
SplitCap SplitCapStr IndexIntervalSizeStr TreeHeight TreeDump TreeDepth TreeKeyHashMask TreeKeyHashLen
Fsync FsyncIntervalMS GC""".split()


def started(node_factory, **kw):
    node = node_factory(buckets=SERVED, overrides={"hstore": {"data": {"check_vhash": True}}}, **kw)
    with node.raw() as c:
        assert c.set(b"hello", b"world") == b"STORED"          # bucket 4
        assert c.set(b"hello", b"world") == b"STORED"          # same value: skipped (check_vhash)
        assert c.get(b"hello") == (0, b"world")
        assert c.set(b"/ark/p/385242854/", b"x" * 100) == b"STORED"   # bucket c
    for b, size in ((4, 256), (0xc, 256)):
        path = os.path.join(node.bucket_path(b), "000.data")
        wait_for(lambda: os.path.exists(path) and os.path.getsize(path) >= size, "data file of bucket %x" % b)
    return node


def wait_for(pred, what, timeout=5.0):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, "timed out waiting for " + what
        time.sleep(0.02)


def test_buffers(node_factory):
    node = started(node_factory)
    b = node.buffers()
    assert set(b) == set(BUFFER_KINDS)
    for kind in BUFFER_KINDS:
        assert set(b[kind]) >= {"Count", "Size", "MaxCount", "MaxSize"}, kind
        assert all(isinstance(v, int) and v >= 0 for v in b[kind].values())
        assert b[kind]["MaxCount"] >= b[kind]["Count"] and b[kind]["MaxSize"] >= b[kind]["Size"]
    # high-water marks saw the set bodies and the queued records
    assert b["SetData"]["MaxSize"] >= 5 and b["FlushData"]["MaxSize"] >= 256
    node.assert_buffers_zero()


def test_bucket_info(node_factory):
    node = started(node_factory)
    info = node.http_json("/bucket/4")
    assert BUCKET_INFO_FIELDS <= set(info), BUCKET_INFO_FIELDS - set(info)
    assert info["State"] == 2 and info["ID"] == 4
    assert os.path.realpath(info["Home"]) == os.path.realpath(node.bucket_path(4))
    assert set(info["TreeID"]) == {"Chunk", "Split"} and set(info["MaxDumpedHintID"]) == {"Chunk", "Split"}
    assert info["Pos"] == {"ChunkID": 0, "Offset": 256}
    assert info["LastGC"] is None and info["NextGCChunk"] == 0
    assert isinstance(info["HintState"], int) and info["HintState"] < 4
    assert info["DU"] >= 256
    assert (info["NumSameVhash"], info["SizeSameVhash"], info["SizeVhashKey"]) == (1, 5, "hello")
    assert (info["NumSet"], info["NumGet"]) == (2, 1)
    # hex id, upper/lower case and leading zero forms name the same bucket
    assert node.http_json("/bucket/c")["ID"] == 0xc
    empty = node.http_json("/bucket/0")
    assert empty["Pos"] == {"ChunkID": 0, "Offset": 0} and empty["NumSet"] == 0 and empty["DU"] == 0
    # unserved → 404 with the documented text
    status, body = node.http("/bucket/5")
    assert status == 404 and body.strip() == b"bucket 5 not served"
    node.assert_buffers_zero()


def test_bucket_all(node_factory):
    node = started(node_factory)
    arr = node.http_json("/bucket/all")
    assert isinstance(arr, list)
    assert sorted(i["ID"] for i in arr) == SERVED
    for i in arr:
        assert BUCKET_INFO_FIELDS <= set(i) and i["State"] == 2
    by_id = {i["ID"]: i for i in arr}
    assert by_id[4]["Pos"] == {"ChunkID": 0, "Offset": 256}
    assert by_id[0xc]["NumSet"] == 1
    node.assert_buffers_zero()


def test_du(node_factory):
    node = started(node_factory)
    wait_for(lambda: node.http_json("/du")["BucketsHex"].get("4") == 256, "/du of bucket 4 = 256")
    du = node.http_json("/du")
    assert set(du) >= {"Disks", "BucketsHex", "Errs"}
    assert du["Errs"] in (None, [])
    assert sorted(du["BucketsHex"]) == ["%x" % b for b in SERVED]
    assert du["BucketsHex"]["0"] == 0
    dir_c = node.bucket_path(0xc)
    expect_c = sum(os.path.getsize(os.path.join(dir_c, f)) for f in os.listdir(dir_c))
    assert du["BucketsHex"]["c"] == expect_c >= 256
    buckets = []
    for root, d in du["Disks"].items():
        assert d["Root"] == root and root.startswith("/")
        assert d["All"] > 0 and 0 <= d["Free"] <= d["All"] and 0 <= d["Used"] <= d["All"]
        buckets += d["Buckets"]
    assert sorted(buckets) == SERVED
    real = os.path.realpath(node.bucket_path(4))
    assert any(real.startswith(root) for root in du["Disks"]), (real, list(du["Disks"]))
    node.assert_buffers_zero()


def test_config(node_factory):
    node = started(node_factory)
    cfg = node.http_json("/config")
    missing = [f for f in CONFIG_FIELDS if f not in cfg]
    assert not missing, "missing /config fields: %s" % missing
    assert cfg["Port"] == node.port and cfg["WebPort"] == node.webport
    assert cfg["NumBucket"] == 16
    assert cfg["Buckets"] == [1 if b in SERVED else 0 for b in range(16)]
    assert sorted(cfg["BucketsHex"]) == ["%x" % b for b in SERVED]
    assert isinstance(cfg["NotCompress"], dict)
    assert {"audio/wave", "audio/mpeg"} <= set(cfg["NotCompress"])
    assert cfg["BodyMax"] == 50 * 1024 * 1024 and cfg["BodyMaxStr"] == "50M"
    assert cfg["DataFileMax"] == 4194304000 and cfg["BodyInC"] == 4096
    assert cfg["SplitCap"] == 1024 * 1024 and cfg["IndexIntervalSize"] == 4096
    assert cfg["TreeHeight"] == 3 and cfg["TreeDepth"] == 1
    assert cfg["CheckVHash"] is True and cfg["MaxKeyLen"] == 250 and cfg["TimeoutMS"] == 3000
    assert os.path.realpath(cfg["Home"]) == os.path.realpath(node.home)
    assert cfg["Fsync"] == "interval"
    node.assert_buffers_zero()


def test_route(node_factory):
    node = started(node_factory)
    status, body = node.http("/route/")
    assert status == 200
    route = yaml.safe_load(body)
    assert route["numbucket"] == 16
    assert "backup" in route
    assert len(route["main"]) == 1
    assert route["main"][0]["addr"] == "127.0.0.1:%d" % node.port
    assert sorted(str(b) for b in route["main"][0]["buckets"]) == ["%x" % b for b in SERVED]
    status, body = node.http("/route/version")
    assert status == 200 and body.strip() == b"-1"
    status, body = node.http("/route/reload")
    assert b"err: not using zookeeper" in body
    node.assert_buffers_zero()


def test_loglast_and_logbuf(node_factory):
    # a non-empty zkservers logs a warning (§1) and an unknown key is ignored with a warning (§7.1)
    node = node_factory(buckets=SERVED, overrides={"server": {"no_such_key_xyz": 1,
                                                              "zkservers": ["digest:alice:s3cret@127.0.0.1:1"]}})
    assert "no_such_key_xyz" in node.log_tail(200), "no warning naming the unknown key"
    status, body = node.http("/config")
    assert status == 200 and b"s3cret" not in body, "/config must never contain secrets (D10)"
    arr = node.http_json("/loglast")
    assert isinstance(arr, list) and len(arr) == 5
    for level, e in enumerate(arr):
        if e is None:
            continue
        assert set(e) >= {"TS", "Level", "File", "Line", "Msg"}, e
        assert e["Level"] == level
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$", e["TS"]), e["TS"]
        assert isinstance(e["Line"], int) and isinstance(e["Msg"], str) and e["File"]
    assert arr[1] is not None, "an INFO line is logged at startup"
    assert arr[2] is not None and "zk" in arr[2]["Msg"].lower(), arr[2]
    assert arr[3] is None and arr[4] is None
    status, body = node.http("/logbuf")
    assert status == 200 and b"zk" in body.lower()
    assert b"s3cret" not in body
    status, body = node.http("/logbufall")
    assert status == 200 and len(body.splitlines()) >= 2
    node.assert_buffers_zero()


def test_statgetset(node_factory):
    node = started(node_factory)
    status, body = node.http("/statgetset")
    assert status == 200
    m = yaml.safe_load(body)
    assert sorted(m) == list(range(16))
    for b in range(16):
        assert isinstance(m[b], list) and len(m[b]) == 3, (b, m[b])
        assert m[b][0] == (2 if b in SERVED else 0)
    assert m[4][1:] == [1, 2]
    assert m[0xc][1:] == [0, 1]
    node.assert_buffers_zero()


PROM_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
                       r'(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*,?)?\})? '
                       r'([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?|[-+]?Inf|NaN)( -?\d+)?$')


def parse_prometheus(text: str):
    """{(name, frozenset(labels)): value}; asserts every line is valid exposition format."""
    out = {}
    typed = {}
    for ln in text.splitlines():
        if not ln.strip():
            continue
        if ln.startswith("#"):
            parts = ln.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), ln
                assert parts[2] not in typed, "duplicate TYPE line for %s" % parts[2]
                typed[parts[2]] = parts[3]
            continue
        m = PROM_LINE.match(ln)
        assert m, "not a Prometheus sample line: %r" % ln
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        key = (m.group(1), labels)
        assert key not in out, "duplicate sample %r" % ln
        out[key] = float(m.group(6))
    return out


def test_metrics(node_factory):
    node = started(node_factory)
    c = node.raw()
    c.cmd(b"version")
    status, body = node.http("/metrics")
    assert status == 200
    samples = parse_prometheus(body.decode())
    names = {k[0] for k in samples}
    for n in ("beansdb_buffer_bytes", "beansdb_items", "beansdb_connections"):
        assert n in names, n
    kinds = {dict(lbl)["kind"] for name, lbl in samples if name == "beansdb_buffer_bytes"}
    assert kinds == set(BUFFER_KINDS)
    items = {dict(lbl).get("bucket"): v for (name, lbl), v in samples.items() if name == "beansdb_items"}
    assert sum(items.values()) == 2
    assert items.get("4") == 1 or items.get("04") == 1, items
    conns = [v for (name, lbl), v in samples.items() if name == "beansdb_connections"]
    assert conns and conns[0] >= 1
    c.close()
    node.assert_buffers_zero()


def test_rusage_and_index(node_factory):
    node = started(node_factory)
    ru = node.http_json("/rusage")
    assert isinstance(ru["Maxrss"], int) and ru["Maxrss"] > 0
    for f in ("Utime", "Stime"):
        assert set(ru[f]) >= {"Sec", "Usec"}
    with node.raw() as c:
        assert abs(ru["Maxrss"] - int(c.stats(b"rusage_maxrss")["rusage_maxrss"])) < 100000
    status, body = node.http("/")
    assert status == 200 and b"<a" in body.lower()
    node.assert_buffers_zero()


def test_collision_and_hash(node_factory):
    node = started(node_factory)
    status, body = node.http("/collision/c")
    assert status == 200
    doc = yaml.safe_load(body)
    assert isinstance(doc, dict) and "hintid" in doc and "items" in doc
    kh = bf.keyhash(b"hello")
    status, body = node.http("/hash/%016x" % kh)
    assert status == 200 and body.startswith(b"hello")
    node.assert_buffers_zero()
