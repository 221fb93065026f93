"""Restart persistence, crash safety and recovery (node.md §6.1 fsync, §6.3 startup and recovery,
D6, D7; §10 "Restart persistence", "kill -9 with fsync: always", "Torn tail", "Missing/corrupt
hints or .idx.hash"). Every test ends with `/buffers` back to zero."""

import os
import random
import threading
import time

import pytest

import beansfmt as bf
from nodeproc import keys_in_bucket


def meta(c, key: bytes):
    got = c.get(b"??" + key)
    return None if got is None else [int(x) for x in got[1].split()]


def bucket_files(node, bucket, suffix):
    d = node.bucket_path(bucket)
    return sorted(f for f in os.listdir(d) if f.endswith(suffix)) if os.path.isdir(d) else []


def snapshot(node, keys):
    """{key: (get result, ??meta)} over a raw connection."""
    out = {}
    with node.raw() as c:
        for k in keys:
            out[k] = (c.get(k), meta(c, k))
    return out


# ---------------------------------------------------------------------------------------------
# clean restart
# ---------------------------------------------------------------------------------------------

def test_restart_persistence(node_factory):
    node = node_factory(overrides={"hstore": {"data": {"check_vhash": True}}})
    long_key = "L" * 200
    obj = {"name": "beansdb", "list": list(range(50)), "nested": {"x": 1.5, "y": None}}
    mc = node.mc()
    assert mc.set(long_key, b"long key value")
    assert mc.set("pickled", obj)
    assert mc.set("text", "unicode \u4f60\u597d")
    assert mc.set("int", 12345)
    raw_keys = []
    with node.raw() as c:
        for i in range(30):
            k = b"rk%d" % i
            v = (b"value-%d-" % i) * (i * 7 + 1)          # up to ~2 KB, compressible ones get compressed
            assert c.set(k, v, flag=i * 3) == b"STORED"
            raw_keys.append(k)
        c.send(b"set ver 5 77 3\r\nabc\r\n")              # explicit version
        assert c.line() == b"STORED"
        assert c.set(b"rk1", b"updated", flag=9) == b"STORED"
        assert c.delete(b"rk2") == b"DELETED"
        assert c.cmd(b"incr counter 41") == b"41"
        before_items = int(c.stats(b"curr_items")["curr_items"])
    keys = raw_keys + [long_key.encode(), b"pickled", b"text", b"int", b"ver", b"counter"]
    before = snapshot(node, keys)
    raw_before = {k: mc.get_raw(k.decode()) for k in keys}
    assert before[b"ver"][1][0] == 77
    assert before[b"rk2"][0] is None
    heads = {b: max([int(f[:3]) for f in bucket_files(node, b, ".data")], default=-1) for b in range(16)}

    node.restart()
    after = snapshot(node, keys)
    assert after == before, [k for k in keys if after[k] != before[k]]
    mc = node.mc()
    assert {k: mc.get_raw(k.decode()) for k in keys} == raw_before
    assert mc.get("pickled") == obj
    assert mc.get(long_key) == b"long key value"
    assert mc.get("text") == "unicode \u4f60\u597d"
    assert mc.get("int") == 12345
    with node.raw() as c:
        assert int(c.stats(b"curr_items")["curr_items"]) == before_items
        # the first write after a restart starts a new chunk (head = highest chunk + 1)
        for k in (b"rk1", b"fresh"):
            b = bf.bucket_of(bf.keyhash(k), 16)
            assert c.set(k, b"after restart") == b"STORED"
            m = meta(c, k)
            assert (m[5], m[6]) == (heads[b] + 1, 0), (k, m, heads[b])
        assert c.get(b"rk1") == (0, b"after restart")
        assert c.cmd(b"incr counter 1") == b"42"
    node.assert_buffers_zero()


def test_many_restarts_new_chunk_each(node_factory):
    node = node_factory(buckets=[4])
    keys = keys_in_bucket(4, 30, "restart")
    for i, k in enumerate(keys):
        if i:
            node.restart()
        with node.raw() as c:
            assert c.set(k, b"v%d" % i) == b"STORED"
            assert meta(c, k)[5:] == [i, 0]
    node.restart()
    assert bucket_files(node, 4, ".data") == ["%03d.data" % i for i in range(30)]
    for i in range(30):
        assert os.path.getsize(os.path.join(node.bucket_path(4), "%03d.data" % i)) == 256
    with node.raw() as c:
        for i, k in enumerate(keys):
            assert c.get(k) == (0, b"v%d" % i)
            assert meta(c, k)[5:] == [i, 0]
        assert int(c.stats(b"curr_items")["curr_items"]) == 30
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# kill -9 with fsync: always
# ---------------------------------------------------------------------------------------------

def test_kill9_fsync_always_keeps_acknowledged(node_factory):
    node = node_factory(overrides={"hstore": {"data": {"fsync": "always", "check_vhash": False}}})
    n_writers = 3
    acked = [dict() for _ in range(n_writers)]      # key -> last acknowledged value
    pending = [dict() for _ in range(n_writers)]    # key -> value sent but not acknowledged
    counts = [0] * n_writers
    stop = threading.Event()

    def writer(w):
        rnd = random.Random(w)
        try:
            c = node.raw(timeout=5)
        except OSError:
            return
        i = 0
        try:
            while not stop.is_set():
                k = b"w%d_k%d" % (w, i % 60)       # keys are overwritten: the last ack must win
                v = (b"%d:%d:" % (w, i)) * rnd.randint(1, 40)
                pending[w] = {k: v}
                c.send(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v))
                if c.line() != b"STORED":
                    break
                acked[w][k] = v
                pending[w] = {}
                counts[w] += 1
                i += 1
        except (OSError, ConnectionError):
            pass
        finally:
            c.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(n_writers)]
    for t in threads:
        t.start()
    time.sleep(0.8)
    node.kill9()
    stop.set()
    for t in threads:
        t.join(10)
    assert sum(counts) > 30, "too few acknowledged writes to be meaningful: %s" % counts
    print("acknowledged writes before kill -9:", counts)

    node.start(keep_ports=True)
    with node.raw() as c:
        for w in range(n_writers):
            for k, v in acked[w].items():
                got = c.get(k)
                allowed = [v] + ([pending[w][k]] if k in pending[w] else [])
                assert got is not None and got[1] in allowed, \
                    "acknowledged write lost: %r → %r (expected %r)" % (k, got and got[1][:40], v[:40])
        # and the node keeps working on top of the recovered files
        assert c.set(b"after", b"crash") == b"STORED"
        assert c.get(b"after") == (0, b"crash")
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# torn tails (D7)
# ---------------------------------------------------------------------------------------------

def _torn_setup(node_factory):
    node = node_factory(buckets=[4])
    keys = keys_in_bucket(4, 5, "torn")
    with node.raw() as c:
        for i, k in enumerate(keys):
            assert c.set(k, b"value%d" % i) == b"STORED"
    assert node.stop() == 0
    path = os.path.join(node.bucket_path(4), "000.data")
    assert os.path.getsize(path) == 5 * 256
    return node, keys, path


def _log_text(node):
    with open(node.log_path, errors="replace") as f:
        return f.read()


@pytest.mark.parametrize("tail", ["garbage", "half_record"])
def test_torn_tail_truncated(node_factory, tail):
    node, keys, path = _torn_setup(node_factory)
    if tail == "garbage":
        extra = bytes(random.Random(5).randrange(1, 256) for _ in range(100))
    else:
        rec = bf.encode_record(b"torn_extra", b"z" * 300, 0, 1, int(time.time()))
        assert len(rec) == 512
        extra = rec[:200]
    with open(path, "ab") as f:
        f.write(extra)
    log_before = len(_log_text(node))
    node.start(keep_ports=True)
    assert os.path.getsize(path) == 5 * 256, "torn tail must be truncated to the last valid record"
    new_log = _log_text(node)[log_before:]
    warn = [ln for ln in new_log.splitlines() if "WARN" in ln and "000.data" in ln]
    assert warn, "no WARN line naming the truncated file:\n" + new_log[-2000:]
    with node.raw() as c:
        for i, k in enumerate(keys):
            assert c.get(k) == (0, b"value%d" % i)
        assert c.get(b"torn_extra") is None
        new_key = keys_in_bucket(4, 6, "torn")[5]
        assert c.set(new_key, b"x") == b"STORED"
        assert meta(c, new_key)[5:] == [1, 0]
        assert int(c.stats(b"curr_items")["curr_items"]) == 6
    # a second clean restart is quiet and consistent
    node.restart()
    assert os.path.getsize(path) == 5 * 256
    with node.raw() as c:
        for i, k in enumerate(keys):
            assert c.get(k) == (0, b"value%d" % i)
    node.assert_buffers_zero()


def test_unpadded_final_record_kept(node_factory):
    node, keys, path = _torn_setup(node_factory)
    extra_key = keys_in_bucket(4, 6, "torn")[5]
    rec = bf.encode_record(extra_key, b"tail value", 0, 1, int(time.time()), pad=False)
    with open(path, "ab") as f:
        f.write(rec)
    node.start(keep_ports=True)
    assert os.path.getsize(path) == 6 * 256, "a complete final record is kept and zero-extended"
    with node.raw() as c:
        assert c.get(extra_key) == (0, b"tail value")
        assert meta(c, extra_key)[5:] == [0, 5 * 256]
        for i, k in enumerate(keys):
            assert c.get(k) == (0, b"value%d" % i)
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# missing / corrupt hints and .idx.hash
# ---------------------------------------------------------------------------------------------

def _populated(node_factory):
    node = node_factory(overrides={"hstore": {"data": {"check_vhash": False}}})
    keys = [b"hk%d" % i for i in range(60)]
    with node.raw() as c:
        for i, k in enumerate(keys):
            assert c.set(k, b"v%d" % i * (1 + i % 5), flag=i) == b"STORED"
        for k in keys[:10]:
            assert c.set(k, b"second " + k) == b"STORED"
        for k in keys[50:55]:
            assert c.delete(k) == b"DELETED"
    assert node.stop() == 0
    return node, keys


def _damage(path, how):
    if how == "delete":
        os.unlink(path)
    elif how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(max(1, os.path.getsize(path) // 2))
    elif how == "random":
        size = os.path.getsize(path)
        with open(path, "wb") as f:
            f.write(bytes(random.Random(size).randrange(256) for _ in range(size)))
    else:
        raise ValueError(how)


@pytest.mark.parametrize("target", ["idx.s", "idx.hash", "both"])
@pytest.mark.parametrize("how", ["delete", "truncate", "random"])
def test_missing_or_corrupt_index_files(node_factory, target, how):
    node, keys = _populated(node_factory)
    # reference answers from an undamaged restart
    node.start(keep_ports=True)
    ref = snapshot(node, keys)
    assert node.stop() == 0
    damaged = 0
    for b in range(16):
        for suffix in ((".idx.s", ".idx.hash") if target == "both" else ("." + target,)):
            for f in bucket_files(node, b, suffix):
                _damage(os.path.join(node.bucket_path(b), f), how)
                damaged += 1
    assert damaged >= 2
    node.start(keep_ports=True)
    got = snapshot(node, keys)
    for k in keys:
        if ref[k][0] is None:
            assert got[k][0] is None, k
            # a tombstone may vanish after a rebuild from hints (§6.3 step 4)
            assert got[k][1] is None or got[k][1] == ref[k][1], (k, got[k])
        else:
            assert got[k] == ref[k], (k, got[k], ref[k])
    with node.raw() as c:
        assert int(c.stats(b"curr_items")["curr_items"]) == 55
    # the rebuilt files are valid again after a clean stop
    assert node.stop() == 0
    for b in range(16):
        if not bucket_files(node, b, ".data"):
            continue
        for f in bucket_files(node, b, ".idx.s"):
            with open(os.path.join(node.bucket_path(b), f), "rb") as fh:
                bf.decode_hint(fh.read())
        hashes = bucket_files(node, b, ".idx.hash")
        assert hashes, "bucket %x: no .idx.hash after a clean stop" % b
        with open(os.path.join(node.bucket_path(b), hashes[-1]), "rb") as fh:
            bf.HTree.load(fh.read(), 16, b, 3)
    node.start(keep_ports=True)
    assert snapshot(node, [k for k in keys if ref[k][0] is not None]) == \
        {k: ref[k] for k in keys if ref[k][0] is not None}
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# corrupt record in the middle of a data file
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("keep_index", [True, False])
def test_corrupt_middle_record(node_factory, keep_index):
    node = node_factory(buckets=[4])
    keys = keys_in_bucket(4, 6, "mid")
    values = [b"value-%d-" % i + b"x" * 100 for i in range(6)]
    with node.raw() as c:
        for k, v in zip(keys, values):
            assert c.set(k, v) == b"STORED"
    assert node.stop() == 0
    path = os.path.join(node.bucket_path(4), "000.data")
    size = os.path.getsize(path)
    assert size == 6 * 256
    # flip one byte inside record 2's value
    off = 2 * 256 + 24 + len(keys[2]) + 10
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x55]))
    if not keep_index:
        for f in bucket_files(node, 4, ".idx.s") + bucket_files(node, 4, ".idx.hash"):
            os.unlink(os.path.join(node.bucket_path(4), f))
    node.start(keep_ports=True)
    assert os.path.getsize(path) == size, "middle corruption must not truncate the file"
    with node.raw() as c:
        for i, (k, v) in enumerate(zip(keys, values)):
            if i == 2:
                c.send(b"get " + k + b"\r\n")
                ln = c.line()
                if ln.startswith(b"SERVER_ERROR"):
                    continue
                assert ln == b"END", "a corrupt record must answer a miss or SERVER_ERROR, got %r" % ln
                continue
            assert c.get(k) == (0, v), k
        # the broken key can be written again
        assert c.set(keys[2], b"rewritten") == b"STORED"
        assert c.get(keys[2]) == (0, b"rewritten")
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# startup housekeeping (§6.3 steps 1, 2) and route changes
# ---------------------------------------------------------------------------------------------

def test_startup_cleanup(node_factory):
    node = node_factory(buckets=[4])
    keys = keys_in_bucket(4, 3, "clean")
    with node.raw() as c:
        for k in keys:
            assert c.set(k, k) == b"STORED"
    assert node.stop() == 0
    bdir = node.bucket_path(4)
    for name in ("001.data", "000.000.idx.s.tmp", "000.000.idx.hash.tmp", "002.data.tmp", "collision.yaml.tmp"):
        open(os.path.join(bdir, name), "wb").close()
    with open(os.path.join(bdir, "notes.txt"), "wb") as f:
        f.write(b"not ours")
    node.start(keep_ports=True)
    left = sorted(os.listdir(bdir))
    assert not [f for f in left if f.endswith(".tmp")], left
    assert "001.data" not in left, "a 0-byte data file must be deleted"
    assert "notes.txt" in left, "files not matching the node's patterns are never touched"
    with node.raw() as c:
        for k in keys:
            assert c.get(k) == (0, k)
        new_key = keys_in_bucket(4, 4, "clean")[3]
        assert c.set(new_key, b"n") == b"STORED"
        assert meta(c, new_key)[5:] == [1, 0]
    node.assert_buffers_zero()


def test_unserved_bucket_data_is_kept(node_factory):
    node = node_factory()
    k_a = keys_in_bucket(0xa, 1, "route")[0]
    k_4 = keys_in_bucket(4, 1, "route")[0]
    with node.raw() as c:
        assert c.set(k_a, b"in a") == b"STORED"
        assert c.set(k_4, b"in 4") == b"STORED"
    assert node.stop() == 0
    files_a = sorted(os.listdir(node.bucket_path(0xa)))
    node.buckets = list(range(8))
    node.start(keep_ports=True)
    with node.raw() as c:
        assert c.get(k_a) is None
        assert c.get(k_4) == (0, b"in 4")
        assert c.set(k_a, b"x") == b"SERVER_ERROR bucket not served"
        assert int(c.stats(b"curr_items")["curr_items"]) == 1
    status, _ = node.http("/bucket/a")
    assert status == 404
    assert node.stop() == 0
    assert sorted(os.listdir(node.bucket_path(0xa))) == files_a, "unserved bucket files must not be touched"
    node.buckets = list(range(16))
    node.start(keep_ports=True)
    with node.raw() as c:
        assert c.get(k_a) == (0, b"in a")
        assert int(c.stats(b"curr_items")["curr_items"]) == 2
    node.assert_buffers_zero()
