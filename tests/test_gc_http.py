"""Manual GC over the node's HTTP admin (node.md §6.4, §8.1, §8.3): range and error texts, a real
compaction, reads and writes during GC, `/gc/query`, `LastGC`, and kill -9 in the middle of a GC."""

import os
import random
import re
import threading
import time

from nodeproc import keys_in_bucket

BUCKET = 5


def gc_http(node, query):
    code, body = node.http("/gc/%x?%s" % (BUCKET, query))
    assert code == 200, body
    return body.decode()


def wait_gc_done(node, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = node.http_json("/bucket/%x" % BUCKET)
        if info["LastGC"] is not None and not info["LastGC"]["Running"]:
            return info
        time.sleep(0.1)
    raise AssertionError("GC did not finish: %r" % info)


def chunk_files(node):
    d = node.bucket_path(BUCKET)
    return sorted(f for f in os.listdir(d) if f.endswith(".data"))


def fill_two_versions(node, keys):
    """Every key written twice in chunk 0, then a restart so chunk 0 is closed."""
    with node.raw() as c:
        for k in keys:
            assert c.set(k, b"old-" + k) == b"STORED"
        for k in keys:
            assert c.set(k, b"new-" + k) == b"STORED"
    node.restart()
    with node.raw() as c:      # one write into the new chunk so chunk 0 is not the head
        assert c.set(keys[0], b"newest") == b"STORED"
    # §6.4 range: chunk 0 qualifies once the *next* chunk's first record is older than
    # no_gc_days (0 here, compared strictly), so that record must be at least a second old.
    time.sleep(1.1)


def test_gc_compacts_and_reports(node_factory):
    node = node_factory(overrides={"hstore": {"data": {"no_gc_days": 0}}})
    keys = keys_in_bucket(BUCKET, 40, "gc")
    fill_two_versions(node, keys)
    time.sleep(0.3)
    assert os.path.getsize(os.path.join(node.bucket_path(BUCKET), "000.data")) == 80 * 256

    dry = gc_http(node, "")
    assert re.search(r"bucket 5, start 0, end 0, merge false, pretend true", dry), dry
    assert "err" not in dry

    started = gc_http(node, "run=true")
    assert "/bucket/5" in started and "pretend false" in started, started
    info = wait_gc_done(node)
    g = info["LastGC"]
    assert g["Err"] is None and g["Begin"] == 0 and g["End"] == 0 and g["Src"] == 1
    # keys[0] was rewritten in chunk 1, so both of its chunk-0 records are garbage
    assert g["NumBefore"] == 80 and g["NumReleased"] == 41 and g["SizeReleased"] == 41 * 256
    assert g["EndTS"] != "0001-01-01T00:00:00Z"
    # chunk 0 keeps one record per other key, contiguous
    assert os.path.getsize(os.path.join(node.bucket_path(BUCKET), "000.data")) == 39 * 256
    with open(os.path.join(node.bucket_path(BUCKET), "nextgc.txt")) as f:
        assert f.read().strip() == "1"
    with node.raw() as c:
        for i, k in enumerate(keys):
            want = b"newest" if i == 0 else b"new-" + k
            assert c.get(k) == (0, want), k
    node.assert_buffers_zero()
    # survives a restart (hints and tree rebuilt from what GC wrote)
    node.restart()
    with node.raw() as c:
        for i, k in enumerate(keys):
            assert c.get(k)[1] == (b"newest" if i == 0 else b"new-" + k)


def test_gc_error_texts(node_factory):
    node = node_factory(buckets=[0, 1, 2, 3, 4, 5], overrides={"hstore": {"data": {"no_gc_days": 0}}})
    code, body = node.http("/gc/20?run=true")
    assert "err : bad bucket id: 32" in body.decode(), body
    code, body = node.http("/gc/9?run=true")
    assert "err : no data for bucket id: 9" in body.decode(), body
    # nothing old enough in an empty bucket
    body = gc_http(node, "run=true")
    assert "err :" in body, body
    code, body = node.http("/gc/%x?cancel=true" % BUCKET)
    assert body.decode() == "bucket 5 is not gcing"


def test_reads_and_writes_during_gc_and_query(node_factory):
    # A slow GC (throttled) so the load and /gc/query overlap with it.
    node = node_factory(overrides={"hstore": {"data": {"no_gc_days": 0}, "gc": {"max_mb_per_sec": 1}}})
    keys = keys_in_bucket(BUCKET, 60, "busy")
    big = b"x" * 20000
    with node.raw() as c:
        for k in keys:
            assert c.set(k, b"a" + big + k) == b"STORED"
        for k in keys:
            assert c.set(k, b"b" + big + k) == b"STORED"
    node.restart()
    with node.raw() as c:
        assert c.set(keys[0], b"c" + big + keys[0]) == b"STORED"
    time.sleep(1.1)

    expected = {k: b"b" + big + k for k in keys}
    expected[keys[0]] = b"c" + big + keys[0]
    errors = []
    stop = threading.Event()

    def load():
        i = 0
        with node.raw() as c:
            while not stop.is_set():
                k = keys[i % len(keys)]
                if i % 7 == 3:
                    v = b"d%d" % i + k
                    if c.set(k, v) != b"STORED":
                        errors.append(("set", k))
                    expected[k] = v
                else:
                    got = c.get(k)
                    if got is None or got[1] != expected[k]:
                        errors.append(("get", k, None if got is None else got[1][:10]))
                i += 1

    t = threading.Thread(target=load)
    t.start()
    try:
        assert "pretend false" in gc_http(node, "run=true")
        saw_query = False
        deadline = time.time() + 60
        while time.time() < deadline:
            q = node.http_json("/gc/query")
            if any("bkt: 05" in line for lines in q.values() for line in lines):
                saw_query = True
            info = node.http_json("/bucket/%x" % BUCKET)
            if info["LastGC"] and not info["LastGC"]["Running"]:
                break
            assert info["HintState"] >= 4 or info["LastGC"] is None or not info["LastGC"]["Running"]
            time.sleep(0.05)
    finally:
        stop.set()
        t.join()
    assert saw_query, "a running GC must be listed by /gc/query"
    assert errors == [], errors[:5]
    with node.raw() as c:
        for k, v in expected.items():
            assert c.get(k) == (0, v), k
    node.assert_buffers_zero()


def test_kill9_during_gc_loses_nothing(node_factory):
    node = node_factory(overrides={"hstore": {"data": {"no_gc_days": 0, "fsync": "always"},
                                              "gc": {"max_mb_per_sec": 1}}})
    keys = keys_in_bucket(BUCKET, 50, "crash")
    big = random.Random(7).randbytes(60000)     # incompressible: the throttle sees real bytes
    with node.raw() as c:
        for k in keys:
            assert c.set(k, b"1" + big + k) == b"STORED"
        for k in keys[::2]:
            assert c.set(k, b"2" + big + k) == b"STORED"
        for k in keys[1::5]:
            assert c.delete(k) == b"DELETED"
    node.restart()
    with node.raw() as c:
        assert c.set(keys[2], b"3" + keys[2]) == b"STORED"
    time.sleep(1.1)
    assert "pretend false" in gc_http(node, "run=true")
    time.sleep(1.0)            # throttled at 1 MB/s: the GC is in the middle of chunk 0
    info = node.http_json("/bucket/%x" % BUCKET)
    assert info["LastGC"]["Running"], info["LastGC"]
    node.kill9()
    node.start(keep_ports=True)
    with node.raw() as c:
        for i, k in enumerate(keys):
            if i % 5 == 1:
                want = None
            elif i == 2:
                want = (0, b"3" + k)
            elif i % 2 == 0:
                want = (0, b"2" + big + k)
            else:
                want = (0, b"1" + big + k)
            assert c.get(k) == want, (i, k)
    # and a new GC over the recovered layout completes and keeps everything
    assert "pretend false" in gc_http(node, "run=true")
    info = wait_gc_done(node)
    assert info["LastGC"]["Err"] is None, info["LastGC"]
    with node.raw() as c:
        assert c.get(keys[2]) == (0, b"3" + keys[2])
        assert c.get(keys[1]) is None
    node.assert_buffers_zero()
