"""Self-checks of beansfmt.py: the spec's vectors, then the real gobeansdb 2.1 fixture home.

What the real fixture (../shared/fixtures/gobeansdb-2.1-home, written by gobeansdb 2.1.0.18)
taught us, all asserted below:

* Every data record parses with valid CRC and 256-byte alignment; no broken bytes anywhere.
  Every `.idx.s` re-encodes byte-identically with our writer (items sorted by (keyhash, key),
  chunkID 0) and equals the per-key final state of its data file; every `.idx.hash` re-dumps
  byte-identically and passes the count/hash validation. No hint file is large enough to contain
  a sparse-index entry, so that rule is only checked against the spec, not the fixture.
* Our §4.3 compression decision reproduces every stored value byte for byte (which records got
  0x10000 and the exact QuickLZ bytes), including flag 0x10 values and flag-2 values.
* The answers in expected.json follow from "last record by (chunk, offset)" per key, with the
  version taken from the record itself: no key's index version differs from its record version,
  so the "version-only changes" of the README left no visible trace (they were v = 0 same-value
  writes, which change nothing). The one key whose .idx.hash item differs from its own record
  is the collision pair: the tree holds `/subject/10460967/props` (ver 2, inherited from
  `processed_log...` ver 1) for both; `??processed_log...` comes from collision.yaml.
* The `.idx.hash` dump IS needed for: the 60 tombstone metas (`-2 0 0 0 ts chunk off`), the
  tombstone lines (`<kh> 0 -2`) in the listings, and the c80f... line (a rebuild from hints
  replays the two colliding items in (keyhash, key) order, so processed_log... would win).
* `stats total_items` is 537 while 538 keys are live: the collision pair is counted once
  (live index entries per keyhash, not live keys).
* One key (249 bytes) has meta null: `??` + 249 bytes exceeds max_key_len 250, so the server
  answered `CLIENT_ERROR key length error`.
* Bucket e has a 0-byte `000.data` without hints: its first write was the 1 MiB value
  (1048832 B on disk > datafile_max 1M), and gobeansdb rotated away from the empty chunk 0,
  writing it alone into chunk 1; later records went to chunk 2 (run 1) and 3 (run 2).
* Buckets 3 and 7 were GC'd in place (chunk 0 compacted, no gaps; nextgc.txt = "1", no newline).
* Empty collision tables are written in block style: `hintid:\\n  chunk: 0\\n  split: 0\\nitems: {}`.
"""

import hashlib
import json
import os
import random
import struct
import zlib

import pytest

import beansfmt as bf

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FIXTURE = os.path.join(REPO, "..", "shared", "fixtures", "gobeansdb-2.1-home")


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", "").replace("\n", ""))


# ---------------------------------------------------------------------------------------------
# §2.2 hashing vectors
# ---------------------------------------------------------------------------------------------

KEY_VECTORS = [
    # key, fnv signed, fnv unsigned, murmur3, bucket/16, bucket/256
    (b"test", 0xafd071e5, 0xafd071e5, 0xba6bd213, 0xa, 0xaf),
    (b"hello", 0x4f9f2cab, 0x4f9f2cab, 0x248bfa47, 0x4, 0x4f),
    (b"key1", 0x374a6a67, 0x374a6a67, 0x9b970125, 0x3, 0x37),
    (b"foo", 0xa9f37ed7, 0xa9f37ed7, 0xf6a5c420, 0xa, 0xa9),
    (b"", 0x811c9dc5, 0x811c9dc5, 0x00000000, 0x8, 0x81),
    ("你好".encode(), 0x2ada87a3, 0x86938da3, 0x141baa24, 0x2, 0x2a),
    (b"\xff", 0xf9f3a14e, 0x7a0b824e, 0xfd6cf10d, 0xf, 0xf9),
    (b"processed_log_backup_text_20140912102821_1020_13301733", 0xc80f7959, 0xc80f7959, 0x45b78f6b, 0xc, 0xc8),
    (b"/subject/10460967/props", 0xc80f7959, 0xc80f7959, 0x45b78f6b, 0xc, 0xc8),
    (b"/ark/p/385242854/", 0xc67f054e, 0xc67f054e, 0x00800004, 0xc, 0xc6),
    (b"/doumail/849134123/source", 0xc0ca200b, 0xc0ca200b, 0x15800003, 0xc, 0xc0),
]


@pytest.mark.parametrize("key,fs,fu,mm,b16,b256", KEY_VECTORS)
def test_key_hash_vectors(key, fs, fu, mm, b16, b256):
    assert bf.fnv1a(key) == fs
    assert bf.fnv1a_unsigned(key) == fu
    assert bf.murmur3(key) == mm
    kh = bf.keyhash(key)
    assert kh == (fs << 32) | mm
    assert bf.bucket_of(kh, 16) == b16
    assert bf.bucket_of(kh, 256) == b256
    assert bf.bucket_of(kh, 1) == 0


def test_key_hash_misc():
    assert bf.fnv1a(b"test") == 2949673445
    assert bf.keyhash(b"/subject/10460967/props") == 14415874356564954987
    assert [bf.nibble(0x4f9f2cab248bfa47, i) for i in range(3)] == [4, 0xf, 9]
    assert bf.bucket_dir("H", 256, 0xa3) == os.path.join("H", "a", "3")
    assert bf.bucket_dir("H", 16, 0xa) == os.path.join("H", "a")
    assert bf.bucket_dir("H", 1, 0) == "H"


B2000 = (bytes(range(256)) * 8)[:2000]

VHASH_VECTORS = [
    (b"aaa", 54405), (b"bar", 32317), (b"", 40389), (b"world", 60024), (b"value", 54703),
    (b"10", 11014), (b"a" * 1024, 13765), (b"a" * 1025, 25131), ("你好".encode(), 35305),
    (B2000, 7482),
]


@pytest.mark.parametrize("value,expected", VHASH_VECTORS)
def test_vhash_vectors(value, expected):
    assert bf.vhash(value) == expected


def _vhash_unsigned(v: bytes) -> int:
    n = len(v)
    x = n * 97
    if n <= 1024:
        x += bf.fnv1a_unsigned(v)
    else:
        x = ((x + bf.fnv1a_unsigned(v[:512])) * 97 + bf.fnv1a_unsigned(v[n - 512:]))
    return x & 0xFFFF


def test_vhash_signed_vs_unsigned():
    assert (3 * 97 + bf.fnv1a(b"aaa")) & 0xFFFFFFFF == 0x3445d485
    assert _vhash_unsigned("你好".encode()) == 36841
    assert _vhash_unsigned(B2000) == 62778


# ---------------------------------------------------------------------------------------------
# §4.2 records, §4.3 compression
# ---------------------------------------------------------------------------------------------

def test_crc_check_value():
    assert zlib.crc32(b"123456789") == 0xCBF43926


def test_record_plain_example():
    rec = bf.encode_record(b"hello", b"world", 0, 1, 1700000000)
    want = h("3b 0a 91 a0 00 f1 53 65 00 00 00 00 01 00 00 00 05 00 00 00 05 00 00 00"
             "68 65 6c 6c 6f 77 6f 72 6c 64") + b"\0" * 222
    assert rec == want and len(rec) == 256
    r = bf.decode_record(rec)
    assert (r.key, r.value(), r.flag, r.ver, r.ts, r.crc) == (b"hello", b"world", 0, 1, 1700000000, 0xa0910a3b)
    assert r.vhash() == 60024
    assert bf.encode_set(b"hello", b"world", 0, 1, 1700000000) == want


def test_record_tombstone_example():
    rec = bf.encode_tombstone(b"hello", -2, 1700000001)
    want = h("32 b2 17 00 01 f1 53 65 00 00 00 00 fe ff ff ff 05 00 00 00 00 00 00 00"
             "68 65 6c 6c 6f") + b"\0" * 227
    assert rec == want
    r = bf.decode_record(rec)
    assert (r.ver, r.value(), r.flag, r.vhash(), r.crc) == (-2, b"", 0, 0, 0x0017b232)


def test_record_compressed_example():
    key, value = b"k" * 170, b"v" * 63
    comp = h("4d 12 3f 08 00 00 80 76 76 76 83 9a 01 00 76 76 76 76")
    assert bf.qlz_compress(value) == comp
    stored, flag = bf.compress_decision(key, value, 0)
    assert (stored, flag) == (comp, 0x10000)
    rec = bf.encode_set(key, value, 0, 1, 1700000000)
    assert rec[:24] == h("ef bf 83 d6 00 f1 53 65 00 00 01 00 01 00 00 00 aa 00 00 00 12 00 00 00")
    assert rec[24:24 + 170] == key and rec[194:212] == comp and len(rec) == 256
    r = bf.decode_record(rec)
    assert r.value() == value and r.client_flag() == 0 and r.flag == 0x10000
    raw = bf.raw_record(r)
    assert len(raw) == 24 + 170 + 63 and struct.unpack_from("<I", raw, 8)[0] == 0
    assert bf.decode_record(raw).value() == value


def test_padding_sizes():
    assert bf.padded_size(256) == 256 and bf.padded_size(257) == 512 and bf.padded_size(24 + 1) == 256
    assert len(bf.encode_record(b"k" * 169, b"v" * 63, 0, 1, 0)) == 256       # r = 256
    assert len(bf.encode_record(b"k" * 170, b"v" * 63, 0, 1, 0)) == 512       # r = 257 raw
    assert bf.padded_size(24 + 8 + 10485760) == 10486016


def test_record_validity():
    rec = bytearray(bf.encode_record(b"key", b"value", 0, 1, 5))
    assert bf.decode_record(bytes(rec)) is not None
    assert bf.decode_record(bytes(rec[:24 + 3 + 4])) is None        # does not fit in the file
    for off in (0, 5, 16, 20, 24, 28):
        bad = bytearray(rec)
        bad[off] ^= 0x55
        assert bf.decode_record(bytes(bad)) is None
    zero_key = bytearray(rec)
    struct.pack_into("<I", zero_key, 16, 0)
    assert bf.decode_record(bytes(zero_key)) is None


def test_quicklz_roundtrip_and_pyquicklz_crosscheck():
    rnd = random.Random(7)
    text = b"the quick brown fox jumps over the lazy dog; " * 8000
    inputs = [b"0123456789", bytes(rnd.getrandbits(8) for _ in range(100)), text[:215], text[:216],
              text[:1000], bytes(rnd.getrandbits(8) for _ in range(5000)), text[:65536],
              text[:300000], bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(20000))]
    for data in inputs:
        c = bf.qlz_compress(data)
        total, dec, _ = bf.qlz_header(c)
        assert total == len(c) and dec == len(data)
        assert (len(c) > 9) == bool(c[0] & 2) or len(data) < 216
        assert bf.qlz_decompress(c) == data
    c = bf.qlz_compress(text[:1000])
    with pytest.raises(ValueError):
        bf.qlz_decompress(c + b"\0")            # header total != stored length
    with pytest.raises(ValueError):
        bf.qlz_decompress(c[:-1])


def test_compression_decision_table():
    t = b"compressible text " * 100
    assert bf.compress_decision(b"k" * 169, b"v" * 63, 0) == (b"v" * 63, 0)             # r = 256
    assert bf.compress_decision(b"k" * 170, b"v" * 63, 0)[1] == 0x10000                  # r = 257
    assert bf.compress_decision(b"k", t, 0x10) == (t, 0x10)
    assert bf.compress_decision(b"k", t, 0x10000) == (t, 0x10000)
    assert bf.compress_decision(b"k", t, 2)[1] == 0x10002
    rnd = random.Random(1)
    noise = bytes(rnd.getrandbits(8) for _ in range(4000))
    assert bf.compress_decision(b"k", noise, 0) == (noise, 0)                            # ratio > 0.7
    wave = b"RIFF\x10\x20\x30\x40WAVE" + t
    id3 = b"ID3" + t
    assert bf.compress_decision(b"k", wave, 0) == (wave, 0)
    assert bf.compress_decision(b"k", id3, 0) == (id3, 0)
    avi = b"RIFF\x10\x20\x30\x40AVI " + t
    assert bf.compress_decision(b"k", avi, 0)[1] == 0x10000                              # not in list
    assert bf.compress_decision(b"k", avi, 0, {"video/avi"} | bf.DEFAULT_NOT_COMPRESS) == (avi, 0)
    big = b"abcdefgh" * 5000                                                              # > 10240
    stored, flag = bf.compress_decision(b"k", big, 0)
    assert flag == 0x10000 and bf.qlz_decompress(stored) == big
    assert bf.qlz_header(stored)[1] == len(big)                                          # whole value


@pytest.mark.parametrize("data,ct", [
    (b"ID3\x03\x00", "audio/mpeg"), (b"OggS\x00\x02", "application/ogg"),
    (b"MThd\x00\x00\x00\x06\x00", "audio/midi"), (b"FORM\x00\x00\x00\x00AIFF", "audio/aiff"),
    (b"RIFF\x01\x02\x03\x04AVI x", "video/avi"), (b"RIFF\x01\x02\x03\x04WAVEfmt", "audio/wave"),
    (b"hello world\n", "text/plain; charset=utf-8"), (b"\x00\x01binary", "application/octet-stream"),
    (b"  <html><body>", "text/html; charset=utf-8"), (b"\x89PNG\r\n\x1a\n....", "image/png"),
    (b"\x1f\x8b\x08\x00", "application/x-gzip"), (b"%PDF-1.4", "application/pdf"),
    (b"GIF89a", "image/gif"), (b"\xff\xd8\xff\xe0", "image/jpeg"), (b"PK\x03\x04", "application/zip"),
    (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", "video/mp4"),
    (b"x\x9c\xcbH\xcd\xc9\xc9\x07\x00", "application/octet-stream"),
])
def test_sniff(data, ct):
    assert bf.sniff_content_type(data) == ct


# ---------------------------------------------------------------------------------------------
# data stream reader with resync (§10 corruption example)
# ---------------------------------------------------------------------------------------------

def test_stream_resync_example():
    recs = []
    for i in range(7):
        if i == 4:
            recs.append(bf.encode_record(b"key", b"x" * 768, 0x10, 1 + i, 100))
        else:
            recs.append(bf.encode_record(b"key", b"value_%d" % i, 0, 1 + i, 100))
    buf = bytearray(b"".join(recs))
    assert len(recs[4]) == 1024 and len(buf) == 6 * 256 + 1024
    for rec_i, rel in ((0, 16), (1, 20), (2, 24), (3, 27), (4, 256)):
        buf[rec_i * 256 + rel] = 0
    got = list(bf.iter_records(bytes(buf)))
    assert [(r.value(), r.offset, b) for r, b in got] == [(b"value_5", 2048, 2048), (b"value_6", 2304, 0)]
    res = bf.scan_data(bytes(buf))
    assert res.broken == [(0, 2048)] and res.valid_end == 2560


def test_stream_torn_tail():
    a = bf.encode_record(b"a", b"1", 0, 1, 1)
    b = bf.encode_record(b"b", b"x" * 300, 0x10, 1, 1)
    for tail in (b"\x07" * 100, b[:150]):
        res = bf.scan_data(a + tail)
        assert [r.key for r in res.records] == [b"a"] and res.valid_end == 256
    unpadded = b[:24 + 1 + 300]                       # complete record without its padding
    res = bf.scan_data(a + unpadded)
    assert [r.key for r in res.records] == [b"a", b"b"] and res.valid_end == 256 + len(unpadded)


# ---------------------------------------------------------------------------------------------
# §4.4 hint files
# ---------------------------------------------------------------------------------------------

def test_hint_example_bytes():
    it = bf.HintItem(bf.keyhash(b"hello"), 0, 0, 1, 60024, b"hello")
    raw = bf.encode_hint([it], 256)
    assert raw == h("2c 00 00 00 00 00 00 00 01 00 00 00 00 01 00 00"
                    "47 fa 8b 24 ab 2c 9f 4f 00 00 00 00 00 00 00 00 01 00 00 00 78 ea 05 68 65 6c 6c 6f")
    hf = bf.decode_hint(raw, 0)
    assert hf.items == [it] and hf.datasize == 256 and hf.index == []


def test_hint_sort_and_merged_chunk():
    kh = bf.keyhash(b"processed_log_backup_text_20140912102821_1020_13301733")
    items = [bf.HintItem(kh, 3, 0, 1, 1, b"processed_log_backup_text_20140912102821_1020_13301733"),
             bf.HintItem(kh, 3, 256, 2, 2, b"/subject/10460967/props"),
             bf.HintItem(bf.keyhash(b"test"), 3, 512, 1, 3, b"test")]
    raw = bf.encode_hint(items, 768)
    got = bf.decode_hint(raw)
    assert [i.key for i in got.items] == [b"test", b"/subject/10460967/props",
                                          b"processed_log_backup_text_20140912102821_1020_13301733"]
    assert all(i.chunk == 0 for i in got.items)
    assert all(i.chunk == 3 for i in bf.decode_hint(bf.encode_hint(items, 768, merged=True)).items)


@pytest.mark.parametrize("interval", [4096, 1024])
def test_hint_sparse_index(interval):
    rnd = random.Random(interval)
    keys = {("key:%d:%s" % (i, "x" * rnd.randrange(0, 40))).encode() for i in range(1000)}
    items = [bf.HintItem(bf.keyhash(k), 0, 256 * i, 1, i & 0xFFFF, k) for i, k in enumerate(keys)]
    raw = bf.encode_hint(items, 256 * len(items), index_interval=interval)
    hf = bf.decode_hint(raw)
    assert len(raw) == hf.index_offset + 16 * len(hf.index)
    offsets, o = {}, 16
    for it in hf.items:
        offsets[o] = it
        o += 23 + len(it.key)
    # independent restatement of the rule: an entry before item at o iff o - last > interval - 279
    last, want = 0, []
    for o in sorted(offsets):
        if o - last > interval - 279:
            want.append((offsets[o].keyhash, o))
            last = o
    assert hf.index == want and len(want) > 5
    assert all(b - a > interval - 279 for (_, a), (_, b) in zip(want, want[1:]))


def test_hint_reader_rejects():
    it = bf.HintItem(bf.keyhash(b"hello"), 0, 0, 1, 60024, b"hello")
    raw = bytearray(bf.encode_hint([it], 256))
    for bad in (raw[:10], raw[:-1], raw + b"\0" * 3):
        with pytest.raises(ValueError):
            bf.decode_hint(bytes(bad))
    wrong_num = bytearray(raw)
    wrong_num[8] = 2
    with pytest.raises(ValueError):
        bf.decode_hint(bytes(wrong_num))


# ---------------------------------------------------------------------------------------------
# §4.5 .idx.hash, §5.2 leaf items, §5.3/5.4 node arithmetic and listings
# ---------------------------------------------------------------------------------------------

def test_htree_example_bytes():
    t = bf.HTree(16, 4, 2)
    t.set(bf.keyhash(b"hello"), 1, 60024, 0, 0)
    d = t.dump()
    assert len(d) == 178
    assert d[90:96] == h("01 00 00 00 28 3e") and d[:90] == b"\0" * 90
    assert d[96:] == b"\0" * 60 + h("12 00 00 00 47 fa 8b 24 ab 2c 9f 01 00 00 00 78 ea 00 00 00 00 00")
    t2 = bf.HTree.load(d, 16, 4, 2)
    assert [(i.keyhash, i.ver, i.vhash) for i in t2.items()] == [(bf.keyhash(b"hello"), 1, 60024)]


def test_htree_loader_rejects():
    t = bf.HTree(16, 4, 2)
    t.set(bf.keyhash(b"hello"), 1, 60024, 0, 0)
    d = t.dump()
    bad_len = bytearray(d)
    bad_len[156] = 0x11                       # len no longer a multiple of 18
    bad_count = bytearray(d)
    bad_count[90] = 2
    bad_hash = bytearray(d)
    bad_hash[94] ^= 1
    for bad in (d[:-1], d + b"\0", bytes(bad_len), bytes(bad_count), bytes(bad_hash)):
        with pytest.raises(ValueError):
            bf.HTree.load(bad, 16, 4, 2)


def test_leaf_item_example():
    it = bf.LeafItem(bf.keyhash(b"hello"), 1, 60024, 0x1200, 2)
    assert bf.encode_leaf_item(it, 7) == h("47 fa 8b 24 ab 2c 9f 01 00 00 00 78 ea 12 00 00 02 00")
    t = bf.HTree(16, 4, 3)
    assert t.leaf_index(it.keyhash) == 0xf9 == 249
    back = bf.decode_leaf_item(bf.encode_leaf_item(it, 7), 7, t.leaf_prefix_bits(249))
    assert back == it


@pytest.mark.parametrize("numbucket,height", [(n, hh) for n in (1, 16, 256)
                                              for hh in range(2, 9 - bf.depth_of(n))])
def test_leaf_keyhash_reconstruction(numbucket, height):
    rnd = random.Random(numbucket * 10 + height)
    k = bf.leaf_khash_len(numbucket, height)
    assert 8 * (8 - k) <= 4 * (bf.depth_of(numbucket) + height - 1)
    for _ in range(50):
        kh = rnd.getrandbits(64)
        t = bf.HTree.__new__(bf.HTree)          # no leaf arrays needed (h 8 would be 16^7 leaves)
        t.numbucket, t.height, t.depth = numbucket, height, bf.depth_of(numbucket)
        t.bucket, t.nleaves = bf.bucket_of(kh, numbucket), 16 ** (height - 1)
        leaf = t.leaf_index(kh)
        it = bf.LeafItem(kh, -3, 0, 256 * rnd.randrange(1 << 24), rnd.randrange(998))
        assert bf.decode_leaf_item(bf.encode_leaf_item(it, k), k, t.leaf_prefix_bits(leaf)) == it


def test_listing_examples_16():
    s = bf.Store(16, 3)
    kh = bf.keyhash(b"hello")
    s.tree_for(kh).set(kh, 1, 60024, 0, 0)
    lines = s.listing("").decode().splitlines()
    assert len(lines) == 16 and lines[4] == "4/ 15912 1"
    assert all(l == "%x/ 0 0" % i for i, l in enumerate(lines) if i != 4)
    assert s.listing("4") == s.listing("4f") == b"4f9f2cab248bfa47 60024 1\n"
    assert s.listing("40") == b""
    assert s.listing("zz") == b"" and s.listing("4" * 17) == b""
    assert s.listing("4f9f2cab248bfa47") == b"4f9f2cab248bfa47 60024 1\n"


def test_listing_examples_256():
    s = bf.Store(256, 3)
    for k, v in ((b"foo", b"bar"), (b"test", b"aaa")):
        kh = bf.keyhash(k)
        s.tree_for(kh).set(kh, 1, bf.vhash(v), 0, 0)
    lines = s.listing("").decode().splitlines()
    assert lines[10] == "a/ 37876 2" and all(l == "%x/ 0 0" % i for i, l in enumerate(lines) if i != 10)
    la = s.listing("a").decode().splitlines()
    assert la[9] == "9/ 2875 1" and la[15] == "f/ 53241 1"
    assert all(l == "%x/ 0 0" % i for i, l in enumerate(la) if i not in (9, 15))
    assert s.listing("a9") == b"a9f37ed7f6a5c420 32317 1\n"
    # unserved bucket -> zero-length value
    s2 = bf.Store(256, 3, served=[0xa9])
    assert s2.listing("af") == b""


def _filled_tree(n_live, n_tomb=0, height=3):
    t = bf.HTree(16, 5, height)
    rnd = random.Random(n_live)
    for i in range(n_live + n_tomb):
        kh = (5 << 60) | rnd.getrandbits(60)
        t.set(kh, 1 if i < n_live else -2, rnd.getrandbits(16) if i < n_live else 0, 0, 0)
    return t


def test_node_count_rules():
    s = bf.Store(16, 3)
    for n, lists_keys in ((255, True), (256, False), (257, False)):
        s.trees[5] = t = _filled_tree(n, n_tomb=3)
        count, hsh = t.root()
        kids = [t.node(1, i) for i in range(16)]
        assert count == n == sum(c for c, _ in kids)
        if n <= 256:
            assert hsh == sum(x for _, x in kids) & 0xFFFF
        else:
            fold = 0
            for _, x in kids:
                fold = (fold * 97 + x) & 0xFFFF
            assert hsh == fold
        body = s.listing("5").decode().splitlines()
        if lists_keys:
            assert len(body) == n + 3 and sum(1 for l in body if l.endswith(" 0 -2")) == 3
        else:
            assert len(body) == 16 and body[0].startswith("0/ ")
        # a leaf always lists keys
        leaf_path = "5%02x" % t.leaf_index(next(t.items()).keyhash)
        assert all(len(l.split()[0]) == 16 for l in s.listing(leaf_path).decode().splitlines())
    # store level always folds
    _, root = s.store_node("")
    fold = 0
    for b in range(16):
        fold = (fold * 97 + s.bucket_root(b)[1]) & 0xFFFF
    assert root == fold


def test_tombstones_not_counted():
    t = bf.HTree(16, 4, 3)
    kh = bf.keyhash(b"hello")
    t.set(kh, -2, 0, 256, 0)
    assert t.root() == (0, 0)
    t.set(kh, 3, 60024, 512, 0)
    assert t.root() == (1, (60024 * 0x2cab) & 0xFFFF)
    t.remove(kh)
    assert list(t.items()) == []


# ---------------------------------------------------------------------------------------------
# §4.6 collision.yaml, §4.7 nextgc.txt
# ---------------------------------------------------------------------------------------------

SPEC_COLLISION = b"""hintid:
  chunk: 0
  split: 0
items:
  14415874356564954987:
    /subject/10460967/props:
      hintitemmeta:
        keyhash: 14415874356564954987
        pos:
          chunkid: 0
          offset: 256
        ver: 2
        vhash: 33296
      key: /subject/10460967/props
    processed_log_backup_text_20140912102821_1020_13301733:
      hintitemmeta:
        keyhash: 14415874356564954987
        pos: {chunkid: 0, offset: 0}
        ver: 1
        vhash: 36303
      key: processed_log_backup_text_20140912102821_1020_13301733
"""


def test_collision_yaml():
    hid, items = bf.parse_collision_yaml(SPEC_COLLISION)
    assert hid == (0, 0) and len(items) == 2
    got = {i.key: (i.keyhash, i.chunk, i.offset, i.ver, i.vhash) for i in items}
    assert got[b"/subject/10460967/props"] == (14415874356564954987, 0, 256, 2, 33296)
    assert got[b"processed_log_backup_text_20140912102821_1020_13301733"] == (14415874356564954987, 0, 0, 1, 36303)
    out = bf.encode_collision_yaml(items)
    assert out == SPEC_COLLISION.replace(b"pos: {chunkid: 0, offset: 0}", b"pos:\n          chunkid: 0\n          offset: 0")
    assert bf.parse_collision_yaml(out) == (hid, items)
    flow = b"{hintid: {chunk: 3, split: 1}, items: {}}"
    assert bf.parse_collision_yaml(flow) == ((3, 1), [])
    assert bf.encode_collision_yaml([]) == b"hintid:\n  chunk: 0\n  split: 0\nitems: {}\n"


def test_nextgc():
    assert bf.encode_nextgc(12) == b"12"
    assert bf.parse_nextgc(b" 7\n") == 7


def test_file_names():
    assert bf.data_name(3) == "003.data" and bf.hint_name(3, 1) == "003.001.idx.s"
    assert bf.htree_name(1, 0) == "001.000.idx.hash" and bf.hint_name(2, 0, True) == "002.000.idx.m"
    assert bf.parse_file_name("001.000.idx.hash") == ("hash", 1, 0)
    assert bf.parse_file_name("007.data") == ("data", 7, 0)
    assert bf.parse_file_name("007.data.tmp") is None and bf.parse_file_name("collision.yaml") is None


# ---------------------------------------------------------------------------------------------
# The real gobeansdb fixture
# ---------------------------------------------------------------------------------------------

def _fixture():
    # Missing fixture is a failure, never a skip (§10).
    assert os.path.isdir(os.path.join(FIXTURE, "home")), "shared fixture missing: %s" % FIXTURE
    with open(os.path.join(FIXTURE, "expected.json"), encoding="utf-8") as f:
        exp = json.load(f)
    return os.path.join(FIXTURE, "home"), exp


def test_fixture_files_parse_and_reencode():
    home, exp = _fixture()
    nb, ht = exp["numbucket"], exp["tree_height"]
    n_rec = 0
    for b in range(nb):
        path = bf.bucket_dir(home, nb, b)
        bfs = bf.read_bucket(path, nb, b, ht)
        for c, scan in bfs.data.items():
            assert scan.broken == [] and scan.valid_end == scan.size and scan.size % 256 == 0
            n_rec += len(scan.records)
            for r in scan.records:
                if r.ver < 0:
                    assert r.flag == 0 and r.stored == b""
                else:        # our compression decision reproduces the stored bytes exactly
                    assert bf.compress_decision(r.key, r.value(), r.client_flag()) == (r.stored, r.flag)
        for (c, s), hf in bfs.hints.items():
            with open(os.path.join(path, bf.hint_name(c, s)), "rb") as f:
                assert bf.encode_hint(hf.items, hf.datasize) == f.read()
            assert hf.datasize <= bfs.data[c].size
            recs = [r for r in bfs.data[c].records if r.offset < hf.datasize]
            want = sorted((i.keyhash, i.key, i.offset, i.ver, i.vhash) for i in bf.hint_items_for_records(recs, c))
            assert sorted((i.keyhash, i.key, i.offset, i.ver, i.vhash) for i in hf.items) == want
        assert len(bfs.htrees) == 1
        for (c, s), t in bfs.htrees.items():
            with open(os.path.join(path, bf.htree_name(c, s)), "rb") as f:
                assert t.dump() == f.read()
            assert c == max(bfs.data) and (c, s) in bfs.hints
        assert bfs.collision is not None
        if bfs.collision[1]:
            with open(os.path.join(path, "collision.yaml"), "rb") as f:
                assert bf.encode_collision_yaml(bfs.collision[1], *bfs.collision[0]) == f.read()
    assert n_rec > 600


def test_fixture_replay_reproduces_expected():
    home, exp = _fixture()
    nb, ht = exp["numbucket"], exp["tree_height"]
    # Independent of the recovery model: newest record per key, versions from the dumped tree.
    final, trees, coll = {}, {}, {}
    for b in range(nb):
        bfs = bf.read_bucket(bf.bucket_dir(home, nb, b), nb, b, ht)
        final.update(bf.final_records(bfs))
        trees[b] = bfs.htrees[max(bfs.htrees)]
        coll.update({(i.keyhash, i.key): i for i in bfs.collision[1]})
    assert set(k.encode() for k in exp["keys"]) == set(final)
    replay = bf.Store(nb, ht)
    for key, e in exp["keys"].items():
        r = final[key.encode()]
        kh = r.keyhash
        it = trees[bf.bucket_of(kh, nb)].get(kh)
        ver = r.ver
        if it is not None and (it.chunk, it.offset) == (r.chunk, r.offset):
            ver = it.ver                      # the dump's version wins when it covers this record
        else:
            assert (kh, r.key) in coll        # only the collision pair's loser is not in the tree
        v = r.value()
        live = r.ver > 0
        assert e["live"] == live, key
        if live:
            assert (e["flag"], e["len"], e["sha1"]) == (r.client_flag(), len(v), hashlib.sha1(v).hexdigest()), key
            assert e["value_hex"] == (v.hex() if len(v) <= 64 else None)
        meta = "%d %d %d %d %d %d %d" % (ver, r.vhash(), r.client_flag() if live else 0,
                                         len(v) if live else 0, r.ts, r.chunk, r.offset)
        if e["meta"] is None:
            assert len(key.encode()) + 2 > 250, key
        else:
            assert e["meta"] == meta, key
    # listings from the data replay (index semantics: one entry per keyhash, tombstones kept)
    for b in range(nb):
        bfs = bf.read_bucket(bf.bucket_dir(home, nb, b), nb, b, ht)
        for c in sorted(bfs.data):
            for r in bfs.data[c].records:
                replay.trees[b].set(r.keyhash, r.ver, r.vhash(), r.offset, c)
    dumped = bf.Store(nb, ht)
    dumped.trees = trees
    for path, text in exp["listings"].items():
        assert sorted(replay.listing(path[1:]).decode().splitlines()) == sorted(text.splitlines()), path
        assert sorted(dumped.listing(path[1:]).decode().splitlines()) == sorted(text.splitlines()), path
    assert dumped.live_count() == replay.live_count() == exp["stats_total_items"]
    for khx, hexrec in exp["raw"].items():
        kh = int(khx, 16)
        it = trees[bf.bucket_of(kh, nb)].get(kh)
        rec = [r for r in final.values() if (r.chunk, r.offset, r.keyhash) == (it.chunk, it.offset, kh)][0]
        assert bf.raw_record(rec).hex() == hexrec


def test_fixture_recovery_model_matches_expected():
    """The §6.3 recovery model (used by gen_home for its expectations) gives the same answers."""
    home, exp = _fixture()
    rh = bf.RecoveredHome(home, exp["numbucket"], exp["tree_height"])
    assert all(rb.tree_id is not None and not rb.truncated for rb in rh.buckets.values())
    for key, e in exp["keys"].items():
        assert rh.key_answer(key.encode()) == e, key
    for path, text in exp["listings"].items():
        assert rh.store.listing(path[1:]).decode() == text, path
    for khx, hexrec in exp["raw"].items():
        assert rh.raw(int(khx, 16)).hex() == hexrec
    assert rh.total_items() == exp["stats_total_items"]


# ---------------------------------------------------------------------------------------------
# gen_home.py (the Python fixture generator)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("numbucket", [16, 256])
def test_gen_home_consistent(tmp_path, numbucket):
    import gen_home
    exp = gen_home.generate(str(tmp_path), numbucket=numbucket, seed=3, torn_tail=True)
    with open(tmp_path / "expected.json", encoding="utf-8") as f:
        assert json.load(f) == exp
    home = str(tmp_path / "home")
    # files parse; torn tails are really there
    for rel, size in exp["truncated"].items():
        assert os.path.getsize(os.path.join(home, rel)) > size
    # deterministic: same seed, same expected answers
    exp2 = gen_home.generate(str(tmp_path / "again"), numbucket=numbucket, seed=3, torn_tail=True)
    assert exp2 == exp
    keys = exp["keys"]
    live = [k for k, e in keys.items() if e["live"]]
    assert any(e["flag"] == 0x10 for e in keys.values())
    assert any(e["len"] == 10 * 1024 * 1024 for e in keys.values())
    assert any(e["meta"] and e["meta"].startswith("-") for e in keys.values())     # tombstone meta
    assert any(not e["live"] and e["meta"] is None for e in keys.values())        # vanished tombstone
    assert exp["stats_total_items"] <= len(live)
    assert exp["listings"]["@"].count("\n") == 16
    dense_root = "@5" if numbucket == 16 else "@55"        # > 256 keys: lists children, folds
    assert exp["listings"][dense_root].startswith("0/ ") and exp["listings"][dense_root].count("\n") == 16
    assert exp["listings"]["@zz"] == "" and set(exp["variants"].values()) == set("ABCDEF")
