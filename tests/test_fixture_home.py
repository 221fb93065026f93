"""Fixture compatibility (node.md §10): the node serves homes written by gobeansdb and by
gen_home.py exactly as their expected.json records, and the files the node itself writes parse
with the independent Python implementation (beansfmt.py).

Needs the node binary (see conftest.py). The shared fixture is found relative to the repository
root (<repo>/../shared/fixtures/gobeansdb-2.1-home); if it is missing the test fails.
"""

import collections
import hashlib
import json
import os
import random
import shutil
import stat
import time
import zlib

import pytest

import beansfmt as bf
import gen_home
from nodeproc import ReplyError


def copy_home(src: str, dst: str) -> str:
    """Copy a home and make it writable (the shared fixture is read-only on disk)."""
    shutil.copytree(src, dst, symlinks=True)
    for root, dirs, files in os.walk(dst):
        for name in dirs + files:
            p = os.path.join(root, name)
            os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR | stat.S_IRUSR | (stat.S_IXUSR if name in dirs else 0))
    os.chmod(dst, os.stat(dst).st_mode | stat.S_IWUSR)
    return dst


def fixture_overrides(exp: dict) -> dict:
    cfg = exp.get("config", {})
    return {"hstore": {"data": {"check_vhash": cfg.get("check_vhash", True),
                                "datafile_max_str": cfg.get("datafile_max_str", "1M"),
                                "flush_interval": cfg.get("flush_interval", 1)},
                       "htree": {"tree_height": exp["tree_height"]}}}


def lines_multiset(body: bytes) -> collections.Counter:
    return collections.Counter(body.decode().splitlines())


def check_answers(node, exp: dict, check_values: bool = True) -> None:
    """Every key's value/flag (libmc), `??`/`?` meta, listings, `@@` records, stats total_items."""
    keys = exp["keys"]
    if check_values:
        mc = node.mc()
        for key, e in keys.items():
            val, flag = mc.get_raw(key)
            if e["live"]:
                assert val is not None, "miss for live key %r" % key
                assert (len(val), flag, hashlib.sha1(val).hexdigest()) == (e["len"], e["flag"], e["sha1"]), key
                if e["value_hex"] is not None:
                    assert val.hex() == e["value_hex"], key
            else:
                assert val is None, "deleted key %r answered" % key
    with node.raw() as c:
        for key, e in keys.items():
            kb = key.encode()
            if e["meta"] is None:
                if len(kb) + 2 > 250:
                    with pytest.raises(ReplyError, match="CLIENT_ERROR key length error"):
                        c.get(b"??" + kb)
                else:
                    assert c.get(b"??" + kb) is None, key
                continue
            got = c.get(b"??" + kb)
            assert got == (0, e["meta"].encode()), (key, got, e["meta"])
            got = c.get(b"?" + kb)
            assert got == (0, " ".join(e["meta"].split()[:5]).encode()), (key, got)
        for path, text in exp["listings"].items():
            got = c.retrieve(b"get " + path.encode())
            assert len(got) == 1, "listing %s must answer a value (zero-length if empty), got %r" % (path, got)
            assert got[0][1] == 0
            assert lines_multiset(got[0][2]) == lines_multiset(text.encode()), path
        for khx, hexrec in exp["raw"].items():
            got = c.get(b"@@" + khx.encode())
            assert got is not None and got[1].hex() == hexrec, khx
        st = c.stats()
        assert int(st["total_items"]) == exp["stats_total_items"]
        assert int(st["curr_items"]) == exp["stats_total_items"]


# ---------------------------------------------------------------------------------------------
# the real gobeansdb home
# ---------------------------------------------------------------------------------------------

def test_gobeansdb_home(node_factory, shared_fixture, tmp_path):
    with open(os.path.join(shared_fixture, "expected.json"), encoding="utf-8") as f:
        exp = json.load(f)
    home = copy_home(os.path.join(shared_fixture, "home"), str(tmp_path / "home"))
    # the settings named by the fixture's README; the route serves all 16 buckets
    overrides = {"hstore": {"data": {"check_vhash": True, "datafile_max_str": "1M", "flush_interval": 1},
                            "htree": {"tree_height": exp["tree_height"]}}}
    node = node_factory(home=home, numbucket=exp["numbucket"], overrides=overrides)
    check_answers(node, exp)
    node.assert_buffers_zero()

    rc = node.stop()
    assert rc == 0, node.log_tail()
    # the node's own files after a clean shutdown parse and agree with gobeansdb's
    nb, ht = exp["numbucket"], exp["tree_height"]
    assert not os.path.exists(os.path.join(home, "e", "000.data")), "0-byte data file must be deleted"
    for b in range(nb):
        orig = bf.read_bucket(bf.bucket_dir(os.path.join(shared_fixture, "home"), nb, b), nb, b, ht)
        now = bf.read_bucket(bf.bucket_dir(home, nb, b), nb, b, ht)
        assert now.htrees, "bucket %x: no .idx.hash after a clean shutdown" % b
        t_orig, t_now = orig.htrees[max(orig.htrees)], now.htrees[max(now.htrees)]
        key = lambda i: (i.keyhash, i.ver, i.vhash, i.chunk, i.offset)
        assert sorted(map(key, t_now.items())) == sorted(map(key, t_orig.items())), "bucket %x" % b
        for c, scan in orig.data.items():
            if scan.size:
                assert now.data[c].size == scan.size
    # and a restart on them answers the same
    node.start(keep_ports=True)
    check_answers(node, exp, check_values=False)
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# homes from gen_home.py (16 and 256 buckets, all §6.3 recovery paths, torn tails)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("numbucket", [16, 256])
def test_generated_home(node_factory, tmp_path, numbucket):
    exp = gen_home.generate(str(tmp_path / "gen"), numbucket=numbucket, seed=11, torn_tail=True)
    home = str(tmp_path / "gen" / "home")
    assert exp["truncated"], "generator must have produced torn tails"
    node = node_factory(home=home, numbucket=numbucket, overrides=fixture_overrides(exp))
    for rel, size in exp["truncated"].items():
        assert os.path.getsize(os.path.join(home, rel)) == size, "torn tail of %s not truncated" % rel
    with open(node.log_path, encoding="utf-8", errors="replace") as f:
        log = f.read().splitlines()
    for rel, size in exp["truncated"].items():
        name = rel.split("/")[-1]
        assert any("WARN" in ln and name in ln and str(size) in ln for ln in log), \
            "no WARN line naming %s and its new size %d" % (rel, size)
    check_answers(node, exp)
    node.assert_buffers_zero()
    assert node.stop() == 0, node.log_tail()


# ---------------------------------------------------------------------------------------------
# files written by the node
# ---------------------------------------------------------------------------------------------

def _workload(rnd):
    """(key, value, flag) sets in order, then deletes; plus the expected final model."""
    text = lambda n: bytes(rnd.choice(b"abc de") for _ in range(n))
    sets = []
    for i in range(120):
        sets.append((b"k:%d" % i, rnd.randbytes(rnd.randrange(0, 60)), rnd.choice([0, 1, 2, 4, 32])))
    for i in range(20):
        sets.append((("/text/%d/中文" % i).encode(), text(rnd.randrange(300, 6000)), 0))
    for i in range(10):
        sets.append((b"zip:%d" % i, zlib.compress(text(2000)), 0x10))
        sets.append((b"bin:%d" % i, rnd.randbytes(rnd.randrange(300, 3000)), 0))
    sets.append((b"wave:0", b"RIFF\x00\x01\x02\x03WAVE" + text(2000), 0))
    sets.append((b"bigtext:0", text(40000), 0))
    sets.append((b"big:0", rnd.randbytes(2 * 1024 * 1024).translate(bytes(97 + i % 26 for i in range(256))), 0))
    sets.append((b"long:" + b"k" * 240, text(100), 2))
    for i in range(0, 40, 3):
        sets.append((b"k:%d" % i, b"updated %d" % i, 0))
    deletes = [b"k:%d" % i for i in range(1, 40, 5)] + [b"zip:3"]
    return sets, deletes


def test_node_written_files(node_factory):
    rnd = random.Random(5)
    sets, deletes = _workload(rnd)
    node = node_factory(numbucket=16)
    model = {}
    versions = collections.defaultdict(int)
    t0 = int(time.time()) - 1
    with node.raw() as c:
        for key, value, flag in sets:
            assert c.set(key, value, flag) == b"STORED", key
            model[key] = (value, flag)
            versions[key] += 1
        for key in deletes:
            assert c.delete(key) == b"DELETED"
            model[key] = None
            versions[key] += 1
        assert c.cmd(b"incr counter:0 5") == b"5"
        assert c.cmd(b"incr counter:0 7") == b"12"
        model[b"counter:0"] = (b"12", 0x204)
        versions[b"counter:0"] = 2
        pair = [b"processed_log_backup_text_20140912102821_1020_13301733", b"/subject/10460967/props"]
        for k in pair:
            assert c.set(k, b"v:" + k, 0) == b"STORED"
            model[k] = (b"v:" + k, 0)
        for key, st in model.items():         # reading both colliding keys registers the collision
            assert c.get(key) == (None if st is None else (st[1], st[0])), key
    t1 = int(time.time()) + 1
    node.assert_buffers_zero()
    assert node.stop() == 0, node.log_tail()

    home = node.home
    seen_keys = set()
    for b in range(16):
        path = bf.bucket_dir(home, 16, b)
        if not os.path.isdir(path) or not any(n.endswith(".data") for n in os.listdir(path)):
            continue
        files = bf.read_bucket(path, 16, b, 3)              # raises on any malformed hint/htree
        replay = bf.HTree(16, b, 3)
        per_key = collections.defaultdict(list)
        for c in sorted(files.data):
            scan = files.data[c]
            assert scan.broken == [] and scan.valid_end == scan.size and scan.size % 256 == 0, (b, c)
            pos = 0
            for r in scan.records:
                assert r.offset == pos, "records must be contiguous"
                pos += r.disk_size
                assert t0 <= r.ts <= t1
                assert bf.bucket_of(r.keyhash, 16) == b
                if r.ver > 0:
                    assert bf.compress_decision(r.key, r.value(), r.client_flag()) == (r.stored, r.flag), r.key
                else:
                    assert r.flag == 0 and r.stored == b""
                per_key[r.key].append(r)
                replay.set(r.keyhash, r.ver, r.vhash(), r.offset, c)
            # hints: contiguous splits; together the final state of every key of the chunk
            splits = sorted(s for (cc, s) in files.hints if cc == c)
            assert splits == list(range(len(splits))) and splits, "chunk %d of bucket %x has no hints" % (c, b)
            merged = {}
            for s in splits:
                hf = files.hints[(c, s)]
                with open(os.path.join(path, bf.hint_name(c, s)), "rb") as f:
                    assert bf.encode_hint(hf.items, hf.datasize) == f.read(), "hint %d.%d bytes" % (c, s)
                for it in hf.items:
                    merged[it.key] = (it.offset, it.ver, it.vhash)
            assert files.hints[(c, splits[-1])].datasize == scan.size
            want = {i.key: (i.offset, i.ver, i.vhash) for i in bf.hint_items_for_records(scan.records, c)}
            assert merged == want
        assert files.htrees, "bucket %x: no .idx.hash after a clean shutdown" % b
        (hc, hs) = max(files.htrees)           # gobeansdb leaves exactly one; older ones must still parse
        tree = files.htrees[(hc, hs)]
        assert hc == max(files.data) and (hc, hs) in files.hints
        item = lambda i: (i.keyhash, i.ver, i.vhash, i.chunk, i.offset)
        assert sorted(map(item, tree.items())) == sorted(map(item, replay.items()))
        for key, recs in per_key.items():
            seen_keys.add(key)
            final = recs[-1]
            st = model[key]
            if st is None:
                assert final.ver < 0
            else:
                assert (final.value(), final.client_flag()) == st and final.ver > 0, key
            if key not in pair:
                assert [abs(r.ver) for r in recs] == list(range(1, versions[key] + 1)), key
        if files.collision and files.collision[1]:
            got = {i.key: (i.chunk, i.offset, i.ver) for i in files.collision[1]}
            for k in pair:
                if k in got:
                    r = per_key[k][-1]
                    assert got[k] == (r.chunk, r.offset, r.ver)
    assert seen_keys == set(model)
    coll_bucket = bf.read_bucket(bf.bucket_dir(home, 16, 0xc), 16, 0xc, 3)
    assert coll_bucket.collision is not None and set(i.key for i in coll_bucket.collision[1]) == set(pair)
    recs = {r.key: r for c in coll_bucket.data.values() for r in c.records if r.key in pair}
    assert (recs[pair[0]].ver, recs[pair[1]].ver) == (1, 2)      # the second key inherits (§6.5)

    # the recovery model predicts the restarted node's answers
    rh = bf.RecoveredHome(home, 16, 3)
    for key, st in model.items():
        ans = rh.key_answer(key)
        assert ans["live"] == (st is not None), key
        if st is not None:
            assert ans["sha1"] == hashlib.sha1(st[0]).hexdigest() and ans["flag"] == st[1]
    node.start(keep_ports=True)
    with node.raw() as c:
        for key, st in model.items():
            assert c.get(key) == (None if st is None else (st[1], st[0])), key
            ans = rh.key_answer(key)
            if ans["meta"] is not None:
                assert c.get(b"??" + key) == (0, ans["meta"].encode()), key
        data4 = bf.read_bucket(bf.bucket_dir(home, 16, 4), 16, 4, 3).data      # bucket of "hello"
        head = max((c for c, scan in data4.items() if scan.size), default=-1)
        assert c.set(b"hello", b"world") == b"STORED"
        meta = c.get(b"??hello")[1].split()
        assert meta[-2:] == [b"%d" % (head + 1), b"0"], "first write after restart: new chunk, offset 0"
    node.assert_buffers_zero()
