#!/usr/bin/env python3
"""Deterministic generator of gobeansdb-format homes, plus the answers a compatible node gives.

    python3 tests/gen_home.py OUT_DIR [--numbucket 16|256] [--height 3] [--seed 1] [--no-torn-tail]

writes OUT_DIR/home/ and OUT_DIR/expected.json (same shape as the shared gobeansdb fixture's
expected.json, plus `config`, `truncated` and `variants`). Importable: `generate(out_dir, ...)`.

How the home is made: an in-memory model of a gobeansdb node (§3.7 version rules with
check_vhash, §4.3 compression, one index entry per keyhash, collision table) executes two "runs"
of writes; each run writes one new chunk per bucket (a restart always starts a new chunk). Each
bucket then gets one file *variant*, so that every recovery path of §6.3 is exercised:

  A  hints for every chunk + an .idx.hash covering all of them (dumped from the live index, so it
     holds tombstones and versions raised in place by same-value writes)
  B  hints for every chunk, no .idx.hash (tree rebuilt from hints: tombstones vanish)
  C  data files only (hints rebuilt by scanning)
  D  hints for chunk 0 + the .idx.hash dumped after run 1; chunk 1 data only
  E  hints for chunk 0 + a chunk-1 hint that covers only a prefix of the file; no .idx.hash
  F  like A, but run 2 wrote chunk 2 (gap: no chunk 1)

Optional torn tails: garbage bytes appended to the newest data file of a C bucket and half a
record appended to that of an A bucket (whose .idx.hash must then be discarded).

The expected answers are NOT taken from the model: they are computed from the written files with
beansfmt's §6.3 recovery model, and then cross-checked against the model (values, flags, liveness
and — where the index survives — versions), so the generator fails loudly if the two disagree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import zlib
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import beansfmt as bf  # noqa: E402

MiB = 1024 * 1024
DATAFILE_MAX_STR = "64M"
DATAFILE_MAX = 64 * MiB
TS_BASE = 1700000000
COLLISION_KEYS = [b"processed_log_backup_text_20140912102821_1020_13301733", b"/subject/10460967/props"]
BUCKET_C_KEYS = [b"/ark/p/385242854/", b"/doumail/849134123/source"]
VARIANTS = "ABCDEF"

WORDS = ("beansdb gobeansdb douban storage node bucket chunk hint htree merkle record value key "
         "version compress quicklz listing tombstone collision replica proxy 中文 数据 存储").split()


class Bucket:
    def __init__(self, numbucket: int, bid: int, height: int):
        self.id = bid
        self.chunk = 0
        self.data: Dict[int, bytearray] = {}
        self.slots: Dict[int, Dict[bytes, bf.HintItem]] = {}      # per chunk, per key: final hint item
        self.records: Dict[Tuple[int, int], bf.Record] = {}
        self.tree = bf.HTree(numbucket, bid, height)               # the live index
        self.coll: Dict[Tuple[int, bytes], bf.CollisionItem] = {}
        self.snap_after_run1: Optional[bytes] = None


class Model:
    """Just enough of a gobeansdb node to write a realistic home (check_vhash: true)."""

    def __init__(self, numbucket: int, height: int):
        self.numbucket, self.height = numbucket, height
        self.buckets: Dict[int, Bucket] = {}
        self.ts = TS_BASE
        self.values: Dict[bytes, Optional[Tuple[bytes, int]]] = {}   # key -> (value, flag) or None
        self.order: List[bytes] = []

    def bucket(self, key: bytes) -> Bucket:
        b = bf.bucket_of(bf.keyhash(key), self.numbucket)
        if b not in self.buckets:
            self.buckets[b] = Bucket(self.numbucket, b, self.height)
        return self.buckets[b]

    def _current(self, bk: Bucket, key: bytes) -> Tuple[int, Optional[bf.Record]]:
        kh = bf.keyhash(key)
        ci = bk.coll.get((kh, key))
        if ci is not None:
            return ci.ver, bk.records[(ci.chunk, ci.offset)]
        it = bk.tree.get(kh)
        if it is None:
            return 0, None
        return it.ver, bk.records[(it.chunk, it.offset)]

    def _append(self, bk: Bucket, key: bytes, raw: bytes) -> bf.Record:
        buf = bk.data.setdefault(bk.chunk, bytearray())
        if buf and len(buf) + len(raw) > DATAFILE_MAX:
            raise AssertionError("generator does not rotate chunks; keep runs under datafile_max")
        rec = bf.decode_record(raw)
        rec.offset, rec.chunk = len(buf), bk.chunk
        buf += raw
        bk.records[(rec.chunk, rec.offset)] = rec
        kh = bf.keyhash(key)
        vh = rec.vhash()
        bk.slots.setdefault(bk.chunk, {})[key] = bf.HintItem(kh, bk.chunk, rec.offset, rec.ver, vh, key)
        bk.tree.set(kh, rec.ver, vh, rec.offset, rec.chunk)
        if (kh, key) in bk.coll:
            bk.coll[(kh, key)] = bf.CollisionItem(key, kh, rec.chunk, rec.offset, rec.ver, vh)
        return rec

    def _note(self, key: bytes, state) -> None:
        if key not in self.values:
            self.order.append(key)
        self.values[key] = state

    def set(self, key: bytes, value: bytes, flag: int = 0, v: int = 0) -> None:
        bk = self.bucket(key)
        old, rec = self._current(bk, key)
        if v >= 0 and old > 0 and rec is not None and rec.key == key and bf.vhash(value) == rec.vhash() \
                and rec.client_flag() == flag and rec.value() == value:
            if v > abs(old):             # same value: version raised in place, nothing written
                kh = bf.keyhash(key)
                it = bk.tree.get(kh)
                if (kh, key) in bk.coll:
                    bk.coll[(kh, key)].ver = v
                    if (it.chunk, it.offset) == (rec.chunk, rec.offset):
                        it.ver = v
                else:
                    it.ver = v
            self._note(key, (value, flag))
            return
        if v < 0:
            self.delete(key)
            return
        if v == 0:
            new = abs(old) + 1
        elif v > abs(old):
            new = v
        else:
            return                        # stale explicit version: STORED, nothing written
        self.ts += 1
        self._append(bk, key, bf.encode_set(key, value, flag, new, self.ts))
        self._note(key, (value, flag))

    def delete(self, key: bytes) -> bool:
        bk = self.bucket(key)
        old, _ = self._current(bk, key)
        if old <= 0:
            return False
        self.ts += 1
        self._append(bk, key, bf.encode_tombstone(key, -(abs(old) + 1), self.ts))
        self._note(key, None)
        return True

    def incr(self, key: bytes, delta: int) -> None:
        bk = self.bucket(key)
        old, rec = self._current(bk, key)
        cur = int(rec.value()) if old > 0 else 0
        self.ts += 1
        val = b"%d" % (cur + delta)
        self._append(bk, key, bf.encode_record(key, val, bf.FLAG_INCR, abs(old) + 1, self.ts))
        self._note(key, (val, bf.FLAG_INCR))

    def register_collision(self, keys: List[bytes]) -> None:
        """What a read of both keys (or a GC collision scan) does: both go into the table."""
        for key in keys:
            bk = self.bucket(key)
            kh = bf.keyhash(key)
            rec = [r for _, r in sorted(bk.records.items()) if r.key == key][-1]
            bk.coll[(kh, key)] = bf.CollisionItem(key, kh, rec.chunk, rec.offset, rec.ver, rec.vhash())

    def restart(self, skip_chunk_for=()) -> None:
        for bk in self.buckets.values():
            if bk.snap_after_run1 is None:
                bk.snap_after_run1 = bk.tree.dump()
            last = max(bk.data) if bk.data else -1
            bk.chunk = last + (2 if bk.id in skip_chunk_for else 1)


def _text(rnd: random.Random, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(WORDS).encode() + b" "
    return bytes(out[:n])


def _find_keys(prefix: str, bucket: int, numbucket: int, n: int) -> List[bytes]:
    """Keys "<prefix><i>" that land in `bucket` (only the FNV half decides the bucket)."""
    d = bf.depth_of(numbucket)
    out, i = [], 0
    while len(out) < n:
        k = ("%s%d" % (prefix, i)).encode()
        if bf.fnv1a(k) >> (32 - 4 * d) == bucket:
            out.append(k)
        i += 1
    return out


def _write_workload(m: Model, rnd: random.Random, numbucket: int, big_value_size: int, dense: int) -> Dict[str, List[bytes]]:
    kinds: Dict[str, List[bytes]] = {}

    def add(kind, key, value, flag=0, v=0):
        kinds.setdefault(kind, []).append(key)
        m.set(key, value, flag, v)

    # ---- run 1
    for k in COLLISION_KEYS:     # second key inherits the first's version (one index entry)
        add("collision", k, b"value of " + k + b" " + _text(rnd, 40))
    m.register_collision(COLLISION_KEYS)
    for k in BUCKET_C_KEYS:
        add("bucket_c", k, _text(rnd, 30))
    for i in range(60):
        add("small", b"small:%d" % i, rnd.randbytes(rnd.randrange(1, 41)), rnd.choice([0, 1, 4, 32]))
    for i in range(40):
        add("text", ("/text/%d/中文" % i).encode(), _text(rnd, rnd.randrange(300, 8000)))
    for i in range(30):
        add("zip", b"zip:%d" % i, zlib.compress(_text(rnd, rnd.randrange(200, 6000))), bf.FLAG_CLIENT_COMPRESSED)
    for i in range(30):
        add("bin", b"bin:%d" % i, rnd.randbytes(rnd.randrange(257, 5000)))
    for i in range(20):
        add("mid", b"mid:%d" % i, _text(rnd, rnd.randrange(200, 2000)), 2)
    for i, n in enumerate([100, 133, 177, 200, 231, 248, 250]):
        key = ("long:%d:" % i).encode().ljust(n, b"k")
        add("long", key, _text(rnd, rnd.randrange(50, 400)), 2)
    for i in range(3):
        add("sniff", b"wave:%d" % i, b"RIFF" + rnd.randbytes(4) + b"WAVE" + _text(rnd, 3000))
        add("sniff", b"id3:%d" % i, b"ID3" + _text(rnd, 3000))
    add("bigtext", b"bigtext:0", _text(rnd, 50000))                    # compressed whole (> 10240)
    letters = bytes(97 + i % 26 for i in range(256))
    add("huge", b"huge:0", rnd.randbytes(big_value_size).translate(letters))
    for i in range(5):
        kinds.setdefault("counter", []).append(b"counter:%d" % i)
        m.incr(b"counter:%d" % i, 10 + i)
    dense_bucket = 5 if numbucket == 16 else 0x55 if numbucket == 256 else 0
    for k in _find_keys("dense:", dense_bucket, numbucket, dense):
        add("dense", k, _text(rnd, rnd.randrange(5, 60)), rnd.choice([0, 1]))

    gap_buckets = [b for b in m.buckets if variant_of(numbucket, b) == "F"]
    m.restart(skip_chunk_for=gap_buckets)

    # ---- run 2
    def pick(kind, frac):
        ks = kinds[kind]
        return rnd.sample(ks, max(1, int(len(ks) * frac)))

    for k in pick("small", 0.3) + pick("text", 0.2) + pick("bin", 0.2) + pick("dense", 0.1):
        cur = m.values.get(k)
        if cur is not None:
            m.set(k, _text(rnd, rnd.randrange(10, 900)), cur[1])                  # v = 0 update
    for k in pick("zip", 0.2):
        m.set(k, zlib.compress(_text(rnd, 3000)), bf.FLAG_CLIENT_COMPRESSED)
    for k in pick("mid", 0.3):
        m.set(k, _text(rnd, 500), 2, v=7)                                         # explicit version
    for k in pick("small", 0.2) + pick("dense", 0.05):                           # same value, higher v
        cur = m.values.get(k)
        if cur is not None:
            old = m._current(m.bucket(k), k)[0]
            m.set(k, cur[0], cur[1], v=abs(old) + 3)
    for k in pick("text", 0.1):                                                  # same value, v = 0
        cur = m.values.get(k)
        if cur is not None:
            m.set(k, cur[0], cur[1])
    for k in pick("bin", 0.1):                                                   # stale version: ignored
        m.set(k, b"never stored", 0, v=1)
    deleted = pick("small", 0.15) + pick("text", 0.1) + pick("zip", 0.1) + pick("long", 0.3) + pick("dense", 0.05)
    for k in deleted:
        m.delete(k)
    for k in deleted[:3]:                                                        # re-set after delete
        m.set(k, b"back again", 0)
    for k in pick("bin", 0.05):                                                  # negative exptime
        m.set(k, b"xyz", 0, v=-1)
    for i in range(5):
        m.incr(b"counter:%d" % i, 100)
    m.set(COLLISION_KEYS[0], b"updated " + COLLISION_KEYS[0])                    # via collision table
    return kinds


def variant_of(numbucket: int, b: int) -> str:
    if b == bf.bucket_of(bf.keyhash(COLLISION_KEYS[0]), numbucket):
        return "A"          # the collision pair needs its dumped index entry (see test_beansfmt)
    return VARIANTS[(b if numbucket <= 16 else (b >> 4) + b) % len(VARIANTS)]


def _write_files(m: Model, home: str, variants: Dict[int, str]) -> None:
    for b, bk in sorted(m.buckets.items()):
        var = variants[b]
        path = bf.bucket_dir(home, m.numbucket, b)
        os.makedirs(path, exist_ok=True)
        chunks = sorted(bk.data)
        for c in chunks:
            with open(os.path.join(path, bf.data_name(c)), "wb") as f:
                f.write(bk.data[c])

        def hint(c, upto=None):
            recs = [r for (cc, off), r in sorted(bk.records.items()) if cc == c and (upto is None or off < upto)]
            items = bf.hint_items_for_records(recs, c)
            size = len(bk.data[c]) if upto is None else upto
            with open(os.path.join(path, bf.hint_name(c, 0)), "wb") as f:
                f.write(bf.encode_hint(items, size))

        if var in "AF":
            for c in chunks:
                hint(c)
            with open(os.path.join(path, bf.htree_name(chunks[-1], 0)), "wb") as f:
                f.write(bk.tree.dump())
        elif var == "B":
            for c in chunks:
                hint(c)
        elif var == "D":
            hint(chunks[0])
            if bk.snap_after_run1 is not None:
                with open(os.path.join(path, bf.htree_name(chunks[0], 0)), "wb") as f:
                    f.write(bk.snap_after_run1)
        elif var == "E":
            hint(chunks[0])
            if len(chunks) > 1:
                offs = sorted(off for (cc, off) in bk.records if cc == chunks[1])
                if len(offs) > 1:
                    hint(chunks[1], upto=offs[len(offs) // 2])
        if var != "C":
            items = list(bk.coll.values())
            with open(os.path.join(path, "collision.yaml"), "wb") as f:
                f.write(bf.encode_collision_yaml(items))
        if var in "BD":
            with open(os.path.join(path, "nextgc.txt"), "wb") as f:
                f.write(bf.encode_nextgc(chunks[0]))


def _torn_tails(m: Model, home: str, variants: Dict[int, str], rnd: random.Random) -> Dict[str, int]:
    out = {}
    by_var = {}
    coll_b = bf.bucket_of(bf.keyhash(COLLISION_KEYS[0]), m.numbucket)
    for b, bk in sorted(m.buckets.items()):
        if b != coll_b and len(bk.data) > 1:
            by_var.setdefault(variants[b], b)
    for var, tail_kind in (("C", "garbage"), ("A", "half")):
        b = by_var.get(var)
        if b is None:
            continue
        bk = m.buckets[b]
        c = max(bk.data)
        rel = os.path.relpath(os.path.join(bf.bucket_dir(home, m.numbucket, b), bf.data_name(c)), home)
        if tail_kind == "garbage":
            tail = rnd.randbytes(100)
        else:
            tail = bf.encode_set(b"torn:key", _text(rnd, 600), 0x10, 1, m.ts + 1)[:300]
        assert bf.decode_record(tail) is None
        with open(os.path.join(home, rel), "ab") as f:
            f.write(tail)
        out[rel.replace(os.sep, "/")] = len(bk.data[c])
    return out


def listing_paths(numbucket: int, rh: bf.RecoveredHome, dense_bucket: int) -> List[str]:
    d = bf.depth_of(numbucket)
    paths = ["@"] + ["@%x" % i for i in range(16)]
    coll = "%016x" % bf.keyhash(COLLISION_KEYS[0])
    dense = ("%0*x" % (d, dense_bucket)) if d else ""
    if numbucket == 256:
        busy = sorted(rh.buckets, key=lambda b: -rh.buckets[b].tree.live_count())[:6]
        paths += ["@%02x" % b for b in busy]
    paths += ["@" + dense] + ["@" + dense + "%x" % i for i in range(0, 16, 5)]
    paths += ["@" + coll[:n] for n in (d, d + 1, d + 2, 4, 8, 16)]
    paths += ["@zz", "@" + "1" * 17]
    seen = []
    for p in paths:
        if p not in seen:
            seen.append(p)
    return seen


def generate(out_dir: str, numbucket: int = 16, height: int = 3, seed: int = 1, torn_tail: bool = True,
             big_value_size: int = 10 * MiB, dense: int = 300) -> dict:
    """Write out_dir/home and out_dir/expected.json; return the expected dict."""
    rnd = random.Random(seed)
    m = Model(numbucket, height)
    kinds = _write_workload(m, rnd, numbucket, big_value_size, dense)
    variants = {b: variant_of(numbucket, b) for b in m.buckets}

    home = os.path.join(out_dir, "home")
    if os.path.exists(home):
        shutil.rmtree(home)
    os.makedirs(home)
    _write_files(m, home, variants)
    truncated = _torn_tails(m, home, variants, rnd) if torn_tail else {}

    rh = bf.RecoveredHome(home, numbucket, height)
    got_trunc = {os.path.relpath(os.path.join(bf.bucket_dir(home, numbucket, b), bf.data_name(c)), home)
                 .replace(os.sep, "/"): size
                 for b, rb in rh.buckets.items() for c, size in rb.truncated.items()}
    assert got_trunc == truncated, (got_trunc, truncated)

    keys = {}
    for key in m.order:
        ans = rh.key_answer(key)
        _cross_check(m, rh, key, ans, variants, truncated)
        keys[key.decode("utf-8")] = ans
    dense_bucket = 5 if numbucket == 16 else 0x55 if numbucket == 256 else 0
    listings = {p: rh.store.listing(p[1:]).decode() for p in listing_paths(numbucket, rh, dense_bucket)}
    raw = {}
    for key in [COLLISION_KEYS[0], kinds["text"][0], kinds["zip"][0], kinds["dense"][0], b"bigtext:0"]:
        kh = bf.keyhash(key)
        it = rh.store.tree_for(kh).get(kh)
        r = rh.raw(kh) if it is not None and it.ver > 0 else None
        if r is not None:
            raw["%016x" % kh] = r.hex()
    exp = {
        "server": "gen_home.py seed %d" % seed,
        "numbucket": numbucket,
        "tree_height": height,
        "config": {"numbucket": numbucket, "tree_height": height, "check_vhash": True,
                   "datafile_max_str": DATAFILE_MAX_STR, "flush_interval": 1},
        "keys": keys,
        "listings": listings,
        "raw": raw,
        "stats_total_items": rh.total_items(),
        "truncated": truncated,
        "variants": {("%x" % b): v for b, v in sorted(variants.items())},
    }
    with open(os.path.join(out_dir, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(exp, f, ensure_ascii=False, indent=1, sort_keys=True)
    return exp


def _cross_check(m: Model, rh: bf.RecoveredHome, key: bytes, ans: dict, variants, truncated) -> None:
    """The file-derived answer must agree with what the model wrote."""
    state = m.values[key]
    if state is None:
        assert not ans["live"], key
        return
    value, flag = state
    assert ans["live"] and ans["flag"] == flag and ans["len"] == len(value), key
    assert ans["sha1"] == bf.sha1_hex(value), key
    b = bf.bucket_of(bf.keyhash(key), m.numbucket)
    rb = rh.buckets[b]
    bk = m.buckets[b]
    if ans["meta"] is None:
        return
    ver = int(ans["meta"].split()[0])
    model_ver = m._current(bk, key)[0]
    full_dump = variants[b] in "AF" and not rb.truncated
    if full_dump:
        assert ver == model_ver, (key, ver, model_ver)
    else:
        hit = rh.lookup(key)
        assert ver == hit[4].ver, key       # rebuilt index: the record's own version


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--numbucket", type=int, default=16, choices=[1, 16, 256])
    ap.add_argument("--height", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-torn-tail", action="store_true")
    ap.add_argument("--big-mib", type=int, default=10, help="size of the big value in MiB")
    a = ap.parse_args(argv)
    exp = generate(a.out_dir, a.numbucket, a.height, a.seed, not a.no_torn_tail, a.big_mib * MiB)
    print("wrote %s: %d keys, %d live index entries, truncated=%s"
          % (a.out_dir, len(exp["keys"]), exp["stats_total_items"], exp["truncated"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
