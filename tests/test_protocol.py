"""Protocol acceptance tests (node.md §3, §9, §10 "Protocol (node, raw sockets)" and "Counters back
to zero"): the real `beansdb` binary on ephemeral ports, spoken to over raw sockets and with libmc.

Every test ends with `/buffers` back to Count == Size == 0 for all four counters.
"""

import os
import random
import socket
import threading
import time

import pytest

import beansfmt as bf
from nodeproc import ReplyError

MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def meta(c, key: bytes):
    """`??key` as a list of ints (ver vhash flag len ts chunk offset), None on a miss."""
    got = c.get(b"??" + key)
    if got is None:
        return None
    assert got[0] == 0, "special keys answer flag 0"
    return [int(x) for x in got[1].split()]


def short_meta(c, key: bytes):
    got = c.get(b"?" + key)
    if got is None:
        return None
    assert got[0] == 0
    return [int(x) for x in got[1].split()]


def wait_file_size(path: str, size: int, timeout: float = 5.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and os.path.getsize(path) >= size:
            return
        time.sleep(0.02)
    raise AssertionError("%s did not reach %d bytes (now %s)" % (
        path, size, os.path.getsize(path) if os.path.exists(path) else "missing"))


def body_cmd(line: bytes, body: bytes) -> bytes:
    return line + b"\r\n" + body + b"\r\n"


def assert_no_more_output(c, wait: float = 0.3) -> None:
    """Nothing beyond what was consumed arrives within `wait` (and the connection is open)."""
    assert not c.is_closed(wait), "connection closed unexpectedly"
    assert bytes(c.buf) == b"", "unexpected extra output: %r" % bytes(c.buf[:200])


def vhash_twins(length: int = 4, seed: int = 7):
    """Two different values of the same length whose vhash is equal (birthday search)."""
    rnd = random.Random(seed)
    seen = {}
    while True:
        v = bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(length))
        h = bf.vhash(v)
        if h in seen and seen[h] != v:
            return seen[h], v
        seen[h] = v


# ---------------------------------------------------------------------------------------------
# vectors
# ---------------------------------------------------------------------------------------------

def test_vectors_get_forms(node_factory):
    node = node_factory()
    with node.raw() as c:
        assert c.set(b"abc", b"xyz") == b"STORED"
        # runs of spaces collapse, leading/trailing spaces are ignored
        assert c.retrieve(b"get  abc  ") == [(b"abc", 0, b"xyz")]
        assert c.retrieve(b"  get abc") == [(b"abc", 0, b"xyz")]
        assert c.cmd(b"get") == b"CLIENT_ERROR invalid cmd"
        assert c.cmd(b"get   ") == b"CLIENT_ERROR invalid cmd"
        assert c.cmd(b"") == b"CLIENT_ERROR invalid cmd"
        assert c.cmd(b"gets") == b"CLIENT_ERROR invalid cmd"
        # key length: 250 is fine (a miss), 251 fails the whole request
        assert c.retrieve(b"get " + b"a" * 250) == []
        assert c.cmd(b"get " + b"a" * 251) == b"CLIENT_ERROR key length error"
        assert c.cmd(b"get abc " + b"a" * 251) == b"CLIENT_ERROR key length error"
        # gets: cas is always 0
        c.send(b"gets abc\r\n")
        assert c.line() == b"VALUE abc 0 3 0"
        assert c.recv_exact(5) == b"xyz\r\n"
        assert c.line() == b"END"
        # a tab is part of the token: "abc\t" is another key
        assert c.retrieve(b"get abc\t") == []
        assert c.get(b"abc") == (0, b"xyz")
    node.assert_buffers_zero()


def test_vectors_set_forms(node_factory):
    node = node_factory()
    with node.raw() as c:
        assert c.set(b"abc", b"orig") == b"STORED"
        # bad flag: CLIENT_ERROR, the 2-byte body is discarded, connection continues
        c.send(body_cmd(b"set abc a 3 2", b"zz"))
        assert c.line() == b"CLIENT_ERROR invalid cmd"
        assert c.get(b"abc") == (0, b"orig")
        # noreply: no output at all; the next command's reply comes first
        c.send(body_cmd(b"set k 2 3 2 noreply", b"ok") + b"get k\r\n")
        assert c.line() == b"VALUE k 2 2"
        assert c.recv_exact(4) == b"ok\r\n"
        assert c.line() == b"END"
        assert meta(c, b"k")[:4] == [3, bf.vhash(b"ok"), 2, 2]
        # add/replace/cas behave exactly as set (cas value ignored)
        c.send(body_cmd(b"add k 5 0 3", b"add"))
        assert c.line() == b"STORED"
        c.send(body_cmd(b"replace newkey 0 0 3", b"rep"))
        assert c.line() == b"STORED"
        c.send(body_cmd(b"cas k 6 0 3 12345", b"cas"))
        assert c.line() == b"STORED"
        assert c.get(b"k") == (6, b"cas")
        assert c.get(b"newkey") == (0, b"rep")
        # flag is stored as its low 32 bits
        c.send(body_cmd(b"set f 4294967297 0 1", b"f"))
        assert c.line() == b"STORED"
        assert c.get(b"f") == (1, b"f")
        # optional signs; a negative flag keeps its low 32 bits; exptime is the low 32 bits as i32
        c.send(body_cmd(b"set signed +5 +0 +1", b"s"))
        assert c.line() == b"STORED"
        assert c.get(b"signed") == (5, b"s")
        c.send(body_cmd(b"set negflag -1 0 1", b"n"))
        assert c.line() == b"STORED"
        assert c.get(b"negflag") == (0xFFFFFFFF, b"n")
        c.send(body_cmd(b"set e32 0 4294967301 1", b"e"))
        assert c.line() == b"STORED"
        assert meta(c, b"e32")[0] == 5
        # zero-length value
        assert c.set(b"empty", b"") == b"STORED"
        assert c.get(b"empty") == (0, b"")
    node.assert_buffers_zero()


def test_vectors_misc_commands(node_factory):
    node = node_factory()
    with node.raw() as c:
        assert c.set(b"keep", b"me") == b"STORED"
        assert c.cmd(b"flush_all") == b"OK"
        assert c.cmd(b"flush_all 10") == b"OK"
        assert c.get(b"keep") == (0, b"me"), "flush_all must delete nothing"
        assert c.cmd(b"verbosity 1") == b"OK"
        assert c.cmd(b"verbosity") == b"OK"
        # noreply honoured by flush_all / verbosity
        c.send(b"flush_all noreply\r\nverbosity 1 noreply\r\nversion\r\n")
        v = c.line()
        assert v.startswith(b"VERSION 2.1"), v
        assert len(v.split(b" ")) == 2, "version string must not contain spaces: %r" % v
        assert c.cmd(b"version") == v
        assert c.cmd(b"optimize_stat") == b"none"
        # unknown command → ERROR, connection usable
        assert c.cmd(b"bogus") == b"ERROR"
        assert c.cmd(b"GET keep") == b"ERROR"
        assert c.cmd(b"touch keep 10") == b"ERROR"
        assert c.get(b"keep") == (0, b"me")
        # prepend/append: body read, nothing stored; decr refused; connection usable
        c.send(body_cmd(b"prepend keep 0 0 3", b"pre"))
        assert c.line() == b"SERVER_ERROR operation not support"
        c.send(body_cmd(b"append keep 0 0 3", b"app"))
        assert c.line() == b"SERVER_ERROR operation not support"
        c.send(body_cmd(b"append newone 0 0 3", b"app"))
        assert c.line() == b"SERVER_ERROR operation not support"
        assert c.cmd(b"decr keep 1") == b"SERVER_ERROR operation not support"
        assert c.get(b"keep") == (0, b"me")
        assert c.get(b"newone") is None
        # delete forms: optional time, noreply as the last token
        for k in (b"d1", b"d2", b"d3"):
            assert c.set(k, b"x") == b"STORED"
        assert c.cmd(b"delete d1 0") == b"DELETED"
        c.send(b"delete d2 noreply\r\ndelete d3 0 noreply\r\nget d1 d2 d3\r\n")
        assert c.line() == b"END"
        assert c.cmd(b"delete d1") == b"NOT_FOUND"
        assert c.cmd(b"delete").startswith(b"CLIENT_ERROR")
        # quit closes without a reply
        c.send(b"quit\r\n")
        assert c.is_closed(2.0), "quit must close the connection"
        assert bytes(c.buf) == b""
    with node.raw() as c:
        assert c.get(b"keep") == (0, b"me")
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# special keys (§3.6)
# ---------------------------------------------------------------------------------------------

def test_special_meta_keys(node_factory):
    node = node_factory()
    with node.raw() as c:
        t0 = int(time.time())
        assert c.set(b"hello", b"world") == b"STORED"
        t1 = int(time.time())
        m = short_meta(c, b"hello")
        assert m[:4] == [1, 60024, 0, 5] and len(m) == 5, m
        assert t0 <= m[4] <= t1
        mm = meta(c, b"hello")
        assert mm == m + [0, 0], "first record of a fresh node is chunk 0 offset 0: %r" % mm
        # `gets` answers special keys too
        assert c.retrieve(b"gets ?hello") == [(b"?hello", 0, ("1 60024 0 5 %d" % m[4]).encode())]
        # flag without 0x10000, len uncompressed
        c.send(body_cmd(b"set flagged 123 0 3", b"abc"))
        assert c.line() == b"STORED"
        assert short_meta(c, b"flagged")[:4] == [1, bf.vhash(b"abc"), 123, 3]
        # ? alone / ?? alone / invalid and missing keys
        with pytest.raises(ReplyError) as e:
            c.get(b"?")
        assert e.value.line == b"SERVER_ERROR bad key ?"
        assert c.get(b"??") is None
        assert c.get(b"?nosuchkey") is None
        assert c.get(b"??nosuchkey") is None
        assert c.get(b"?@hello") is None
        assert c.get(b"?a\x0fb") is None
        # after a delete the tombstone still answers, with a negative version
        assert c.delete(b"hello") == b"DELETED"
        assert c.get(b"hello") is None
        m2 = short_meta(c, b"hello")
        assert m2[:4] == [-2, 0, 0, 0], m2
        mm2 = meta(c, b"hello")
        assert mm2[5:] == [0, 256], mm2
        assert c.get(b"?hello") is not None
    node.assert_buffers_zero()


def test_special_raw_record(node_factory):
    node = node_factory()
    plain_key, plain_val = b"hello", b"world"
    comp_key, comp_val = b"k" * 170, b"v" * 63            # r = 257 → compressed on disk (§4.2)
    with node.raw() as c:
        assert c.set(plain_key, plain_val) == b"STORED"
        c.send(body_cmd(b"set " + comp_key + b" 7 0 63", comp_val))
        assert c.line() == b"STORED"
        for key, val, flag in ((plain_key, plain_val, 0), (comp_key, comp_val, 7)):
            kh = bf.keyhash(key)
            got = c.get(b"@@%016x" % kh)
            assert got is not None and got[0] == 0
            raw = got[1]
            rec = bf.decode_record(raw)
            assert rec is not None, "@@ answer is not a valid record (CRC/size): %r" % raw[:40]
            assert len(raw) == 24 + len(key) + len(val), "no padding in @@ answers"
            assert rec.key == key and rec.stored == val
            assert rec.flag == flag, "compression bit must be cleared: %#x" % rec.flag
            m = short_meta(c, key)
            assert (rec.ver, rec.ts) == (m[0], m[4])
            # upper-case hex works as well
            assert c.get(b"@@%016X" % kh) == got
        # the compressed one really is compressed on disk, and @@ equals the decoded file record
        bdir = node.bucket_path(bf.bucket_of(bf.keyhash(comp_key), 16))
        deadline = time.time() + 5
        while True:
            wait_file_size(os.path.join(bdir, "000.data"), 256)
            disk = [r for r in bf.read_data_file(os.path.join(bdir, "000.data")).records if r.key == comp_key]
            if disk or time.time() > deadline:
                break
            time.sleep(0.02)
        assert disk and disk[0].flag == 7 | 0x10000 and len(disk[0].stored) == 18
        assert c.get(b"@@%016x" % bf.keyhash(comp_key))[1] == bf.raw_record(disk[0])
        # tombstones are answered as records too
        assert c.delete(plain_key) == b"DELETED"
        rec = bf.decode_record(c.get(b"@@%016x" % bf.keyhash(plain_key))[1])
        assert rec is not None and rec.ver == -2 and rec.stored == b"" and rec.flag == 0
        # absent keyhash → miss; wrong length or non-hex → SERVER_ERROR
        assert c.get(b"@@0123456789abcdef") is None
        for bad in (b"@@" + b"1" * 15, b"@@" + b"1" * 17, b"@@zzzzzzzzzzzzzzzz", b"@@", b"@@0123456789abcdeg"):
            with pytest.raises(ReplyError) as e:
                c.get(bad)
            assert e.value.line == b"SERVER_ERROR bad command line format", bad
    node.assert_buffers_zero()


def test_special_listing_and_stubs(node_factory):
    node = node_factory()
    with node.raw() as c:
        assert c.set(b"hello", b"world") == b"STORED"
        got = c.retrieve(b"get @")
        assert len(got) == 1 and got[0][:2] == (b"@", 0)
        lines = got[0][2].decode().splitlines()
        assert len(lines) == 16
        assert lines == ["4/ 15912 1" if d == 4 else "%x/ 0 0" % d for d in range(16)]
        assert c.get(b"@4") == (0, b"4f9f2cab248bfa47 60024 1\n")
        assert c.get(b"@4f") == (0, b"4f9f2cab248bfa47 60024 1\n")
        # empty node / invalid hex / more than 16 digits → zero-length value, never a miss
        for path in (b"@40", b"@zz", b"@4g", b"@" + b"4" * 17, b"@" + b"0" * 17):
            assert c.retrieve(b"get " + path) == [(path, 0, b"")], path
        # collision stubs
        assert c.get(b"@collision_x") == (0, b"0 0 0 0")
        assert c.get(b"@collision_abcdef") == (0, b"0 0 0 0")
        assert c.get(b"@collision_all_x") is None
        # "@collision_" is 11 characters: a listing of the invalid path "collision_"
        assert c.retrieve(b"get @collision_") == [(b"@collision_", 0, b"")]
    node.assert_buffers_zero()


def test_multi_get_order(node_factory):
    node = node_factory()
    with node.raw() as c:
        assert c.set(b"a", b"1") == b"STORED"
        assert c.set(b"b", b"22") == b"STORED"
        assert c.retrieve(b"get b a b c") == [(b"b", 0, b"22"), (b"a", 0, b"1")]
        assert c.set(b"c", b"333") == b"STORED"
        assert c.retrieve(b"get b a b c") == [(b"b", 0, b"22"), (b"a", 0, b"1"), (b"c", 0, b"333")]
        assert c.retrieve(b"get c c c c") == [(b"c", 0, b"333")]
        assert c.retrieve(b"get x b y a") == [(b"b", 0, b"22"), (b"a", 0, b"1")]
        # special keys mix with plain ones, in order
        got = c.retrieve(b"get ?a b ?a")
        assert [k for k, _, _ in got] == [b"?a", b"b"]
    mc = node.mc()
    assert mc.get_multi(["b", "a", "c", "zz"]) == {"b": b"22", "a": b"1", "c": b"333"}
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# versions (§3.7)
# ---------------------------------------------------------------------------------------------

def test_version_sequence_check_vhash(node_factory):
    node = node_factory(overrides={"hstore": {"data": {"check_vhash": True}}})
    k = b"key1"

    def step(c, req, body, reply, ver, chunk, off):
        if body is None:
            got = c.cmd(req)
        else:
            c.send(body_cmd(req, body))
            got = c.line()
        assert got == reply, (req, got, reply)
        m = meta(c, k)
        assert (m[0], m[5], m[6]) == (ver, chunk, off), (req, m)

    with node.raw() as c:
        step(c, b"set key1 0 0 3", b"aaa", b"STORED", 1, 0, 0)
        step(c, b"set key1 0 3 3", b"bbb", b"STORED", 3, 0, 256)
        step(c, b"set key1 0 4 3", b"bbb", b"STORED", 4, 0, 256)
        step(c, b"set key1 0 2 3", b"ccc", b"STORED", 4, 0, 256)
        assert c.get(k) == (0, b"bbb")
        step(c, b"set key1 0 0 3", b"bbb", b"STORED", 4, 0, 256)
        step(c, b"delete key1", None, b"DELETED", -5, 0, 512)
        assert c.get(k) is None
        m = short_meta(c, k)
        assert m[:4] == [-5, 0, 0, 0], m
        step(c, b"delete key1", None, b"NOT_FOUND", -5, 0, 512)
        step(c, b"set key1 0 -1 3", b"xyz", b"SERVER_ERROR NOT_FOUND", -5, 0, 512)
        step(c, b"set key1 0 0 3", b"ddd", b"STORED", 6, 0, 768)
        assert c.get(k) == (0, b"ddd")
        step(c, b"set key1 0 -1 3", b"xyz", b"STORED", -7, 0, 1024)
        assert c.get(k) is None
        step(c, b"incr key1 5", None, b"5", 8, 0, 1280)
        assert c.get(k) == (0x204, b"5")
        # the data file holds exactly the written records, the negative-exptime set as an empty tombstone
        path = os.path.join(node.bucket_path(3), "000.data")
        wait_file_size(path, 1536)
        recs = bf.read_data_file(path).records
        assert [(r.offset, r.ver, r.stored) for r in recs] == [
            (0, 1, b"aaa"), (256, 3, b"bbb"), (512, -5, b""), (768, 6, b"ddd"), (1024, -7, b""), (1280, 8, b"5")]
        assert recs[4].flag == 0 and recs[5].flag == 0x204
    node.assert_buffers_zero()


def test_version_sequence_no_check_vhash(node_factory):
    node = node_factory(overrides={"hstore": {"data": {"check_vhash": False}}})
    with node.raw() as c:
        seq = [
            (b"set key1 0 0 3", b"aaa", b"STORED", (1, 0, 0)),
            (b"set key1 0 3 3", b"bbb", b"STORED", (3, 0, 256)),
            (b"set key1 0 4 3", b"bbb", b"STORED", (4, 0, 512)),
            (b"set key1 0 2 3", b"ccc", b"STORED", (4, 0, 512)),
            (b"set key1 0 0 3", b"bbb", b"STORED", (5, 0, 768)),
        ]
        for req, body, reply, pos in seq:
            c.send(body_cmd(req, body))
            assert c.line() == reply, req
            m = meta(c, b"key1")
            assert (m[0], m[5], m[6]) == pos, (req, m)
        assert c.get(b"key1") == (0, b"bbb")
        assert c.delete(b"key1") == b"DELETED"
        m = meta(c, b"key1")
        assert (m[0], m[5], m[6]) == (-6, 0, 1024)
    node.assert_buffers_zero()


def test_same_vhash_different_bytes_is_stored(node_factory):
    node = node_factory(overrides={"hstore": {"data": {"check_vhash": True}}})
    v1, v2 = vhash_twins()
    assert bf.vhash(v1) == bf.vhash(v2) and v1 != v2
    with node.raw() as c:
        assert c.set(b"twin", v1) == b"STORED"
        assert c.set(b"twin", v2) == b"STORED"
        assert c.get(b"twin") == (0, v2), "D5: equal vhash but different bytes must be stored"
        m = meta(c, b"twin")
        assert (m[0], m[6]) == (2, 256)
        # same bytes, different flag → stored too
        assert c.set(b"twin", v2, flag=3) == b"STORED"
        assert c.get(b"twin") == (3, v2)
        assert meta(c, b"twin")[0] == 3
        # same bytes and flag → skipped (no new record)
        assert c.set(b"twin", v2, flag=3) == b"STORED"
        m = meta(c, b"twin")
        assert (m[0], m[6]) == (3, 512)
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# incr (§3.8)
# ---------------------------------------------------------------------------------------------

def test_incr(node_factory):
    node = node_factory()
    with node.raw() as c:
        assert c.cmd(b"incr cnt 10") == b"10"
        assert c.get(b"cnt") == (0x204, b"10")
        assert c.cmd(b"incr cnt 5") == b"15"
        assert c.cmd(b"incr cnt -20") == b"-5"
        assert meta(c, b"cnt")[:4] == [3, bf.vhash(b"-5"), 0x204, 2]
        # wrapping i64
        c.send(body_cmd(b"set big 516 0 19", b"9223372036854775807"))
        assert c.line() == b"STORED"
        assert c.cmd(b"incr big 1") == b"-9223372036854775808"
        # a string value, or a numeric one without flag 0x204 → 0, nothing written
        assert c.set(b"str", b"abc") == b"STORED"
        assert c.cmd(b"incr str 5") == b"0"
        assert c.get(b"str") == (0, b"abc")
        assert meta(c, b"str")[0] == 1
        assert c.set(b"num", b"12") == b"STORED"
        assert c.cmd(b"incr num 1") == b"0"
        assert c.get(b"num") == (0, b"12")
        # after a delete: restarts from 0 with version |old| + 1
        assert c.cmd(b"incr d 1") == b"1"
        assert c.cmd(b"incr d 1") == b"2"
        assert c.delete(b"d") == b"DELETED"
        assert meta(c, b"d")[0] == -3
        assert c.cmd(b"incr d 7") == b"7"
        assert meta(c, b"d")[0] == 4
        # bad delta, invalid key, noreply
        assert c.cmd(b"incr cnt abc") == b"CLIENT_ERROR invalid number"
        assert c.cmd(b"incr cnt 99999999999999999999") == b"CLIENT_ERROR invalid number"
        assert c.cmd(b"incr ?bad 3") == b"0"
        assert c.cmd(b"incr a\x01b 3") == b"0"
        c.send(b"incr cnt 5 noreply\r\nget cnt\r\n")
        assert c.line() == b"VALUE cnt 516 1"
        assert c.recv_exact(3) == b"0\r\n"
        assert c.line() == b"END"
    mc = node.mc()
    assert mc.get_raw("cnt") == (b"0", 0x204)
    assert mc.incr("cnt", 4) == 4
    assert mc.incr("fresh", 10) == 10
    assert mc.get_raw("fresh") == (b"10", 0x204)
    node.assert_buffers_zero()


def test_incr_concurrent(node_factory):
    node = node_factory()
    n_threads, per_thread = 8, 125
    errors = []

    def worker():
        try:
            with node.raw() as c:
                # pipeline in small batches to keep the test quick
                for _ in range(per_thread // 25):
                    c.send(b"incr counter 1\r\n" * 25)
                    for _ in range(25):
                        int(c.line())
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    with node.raw() as c:
        assert c.get(b"counter") == (0x204, b"%d" % (n_threads * per_thread))
        assert meta(c, b"counter")[0] == n_threads * per_thread
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# unserved buckets (D4d)
# ---------------------------------------------------------------------------------------------

def test_unserved_bucket(node_factory):
    node = node_factory(buckets=range(8))          # buckets 0..7 only
    assert bf.bucket_of(bf.keyhash(b"test"), 16) == 0xa
    with node.raw() as c:
        assert c.set(b"test", b"v") == b"SERVER_ERROR bucket not served"
        assert c.delete(b"test") == b"SERVER_ERROR bucket not served"
        assert c.cmd(b"incr test 1") == b"SERVER_ERROR bucket not served"
        assert c.retrieve(b"get test") == []
        assert c.get(b"?test") is None
        assert c.get(b"@@afd071e5ba6bd213") is None
        assert c.retrieve(b"get @a") == [(b"@a", 0, b"")]
        # noreply also suppresses the SERVER_ERROR of an executed command
        c.send(body_cmd(b"set test 0 0 1 noreply", b"v") + b"version\r\n")
        assert c.line().startswith(b"VERSION ")
        # served buckets still work, and the unserved one stayed empty
        assert c.set(b"hello", b"world") == b"STORED"
        assert c.get(b"hello") == (0, b"world")
        lines = c.get(b"@")[1].decode().splitlines()
        assert lines[0xa] == "a/ 0 0" and lines[4] == "4/ 15912 1"
        assert int(c.stats(b"curr_items")["curr_items"]) == 1
    assert not os.path.exists(os.path.join(node.bucket_path(0xa), "000.data"))
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# stats (§9)
# ---------------------------------------------------------------------------------------------

STATS_FIELDS = ["pid", "uptime", "time", "version", "rusage_user", "rusage_system", "rusage_maxrss",
                "curr_connections", "total_connections", "cmd_get", "cmd_set", "cmd_delete", "slow_cmd",
                "get_hits", "get_misses", "curr_items", "total_items", "avail_space", "total_space",
                "bytes_read", "bytes_written", "threads"]


def test_stats_fields_and_order(node_factory):
    node = node_factory()
    with node.raw() as c:
        version = c.cmd(b"version").split(b" ", 1)[1].decode()
        st = c.stats()
        assert list(st) == STATS_FIELDS
        assert int(st["pid"]) == node.proc.pid
        assert abs(int(st["time"]) - time.time()) < 5
        assert 0 <= int(st["uptime"]) < 60
        assert st["version"] == version
        for name in STATS_FIELDS:
            if name != "version":
                assert int(st[name]) >= 0, name
        assert int(st["rusage_maxrss"]) > 0
        assert 0 < int(st["avail_space"]) <= int(st["total_space"])
        assert int(st["threads"]) >= 1
        assert int(st["curr_connections"]) >= 1

        # selected names in request order; unknown → 0; nothing reset
        c.send(b"stats cmd_set pid nosuch reset\r\n")
        lines = [c.line() for _ in range(5)]
        assert lines[0].startswith(b"STAT cmd_set ")
        assert lines[1] == b"STAT pid %d" % node.proc.pid
        assert lines[2:] == [b"STAT nosuch 0", b"STAT reset 0", b"END"]

        # counters (§3.3)
        s0 = c.stats()
        assert c.set(b"k1", b"abc") == b"STORED"
        assert c.set(b"k2", b"defg") == b"STORED"
        assert c.retrieve(b"get k1 k2 nokey") == [(b"k1", 0, b"abc"), (b"k2", 0, b"defg")]
        assert c.delete(b"k2") == b"DELETED"
        assert c.cmd(b"incr cnt 12") == b"12"
        s1 = c.stats()
        d = {k: int(s1[k]) - int(s0[k]) for k in STATS_FIELDS if k not in ("version",)}
        assert d["cmd_get"] == 3 and d["get_hits"] == 2 and d["get_misses"] == 1
        assert d["bytes_written"] == 7
        assert d["cmd_set"] == 3
        assert d["bytes_read"] == 3 + 4 + 2
        assert d["cmd_delete"] == 1
        assert int(s1["curr_items"]) == 2 and int(s1["total_items"]) == 2

        c2 = node.raw()
        c2.cmd(b"version")
        s2 = c.stats(b"curr_connections", b"total_connections")
        assert int(s2["curr_connections"]) == int(s1["curr_connections"]) + 1
        assert int(s2["total_connections"]) == int(s1["total_connections"]) + 1
        c2.close()
        deadline = time.time() + 2
        while int(c.stats(b"curr_connections")["curr_connections"]) != int(s1["curr_connections"]):
            assert time.time() < deadline, "curr_connections not decremented after a close"
            time.sleep(0.02)
    node.assert_buffers_zero()


def test_stats_curr_items_exact(node_factory):
    node = node_factory(overrides={"hstore": {"data": {"check_vhash": True}}})

    def items(c):
        st = c.stats(b"curr_items", b"total_items")
        assert st["curr_items"] == st["total_items"]
        return int(st["curr_items"])

    with node.raw() as c:
        assert items(c) == 0
        keys = [b"item%d" % i for i in range(40)]
        for k in keys:
            assert c.set(k, b"v") == b"STORED"
        assert items(c) == 40
        for k in keys[:10]:
            assert c.set(k, b"w") == b"STORED"             # overwrite
        assert c.set(keys[10], b"v") == b"STORED"          # same-value skip
        assert items(c) == 40
        for k in keys[:5]:
            assert c.delete(k) == b"DELETED"
        assert c.delete(keys[0]) == b"NOT_FOUND"
        assert c.delete(b"never") == b"NOT_FOUND"
        assert items(c) == 35
        c.send(body_cmd(b"set " + keys[5] + b" 0 -1 1", b"x"))  # negative exptime = delete
        assert c.line() == b"STORED"
        assert items(c) == 34
        assert c.set(keys[0], b"back") == b"STORED"        # resurrect
        assert c.cmd(b"incr newcounter 1") == b"1"
        assert items(c) == 36
        assert c.set(b"bad\x01", b"v") == b"NOT_STORED"
        assert items(c) == 36
    node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# bad input matrix (§3.1, §3.2, §3.4)
# ---------------------------------------------------------------------------------------------

BODY_MAX = 1024
SMALL = {"mc": {"body_max_str": "1K"}}
POISON = b"delete victim \r\n"          # 16 bytes; if ever parsed as a command it deletes `victim`


def victim_ok(c):
    assert c.get(b"victim") == (0, b"alive"), "the connection must still work and victim survive"


@pytest.fixture
def small_node(node_factory):
    node = node_factory(overrides=SMALL)
    with node.raw() as c:
        assert c.set(b"victim", b"alive") == b"STORED"
    yield node
    with node.raw() as c:
        victim_ok(c)
    assert node.running()


def test_bad_data_chunk(small_node):
    with small_node.raw() as c:
        # announced 5, the "body" is 3 bytes + CRLF, then two more bytes that are not CRLF
        c.send(b"set short 0 0 5\r\nabc\r\nXXget short\r\n")
        assert c.line() == b"CLIENT_ERROR bad data chunk"
        assert c.line() == b"END"
        # gobeansdb vector: exactly "CLIENT_ERROR bad data chunk" first
        c.send(b"set /test/set 0 0 3\r\naaaa\r\n")
        assert c.line() == b"CLIENT_ERROR bad data chunk"
        c.send(b"version\r\n")
        while True:
            ln = c.line()
            if ln.startswith(b"VERSION"):
                break
            assert ln.startswith(b"CLIENT_ERROR") or ln == b"ERROR", ln
        assert c.get(b"/test/set") is None
        victim_ok(c)
    small_node.assert_buffers_zero()


def test_value_too_large(small_node):
    with small_node.raw() as c:
        body = (POISON * ((BODY_MAX + 1) // len(POISON) + 1))[:BODY_MAX + 1]
        c.send(body_cmd(b"set big 0 0 %d" % (BODY_MAX + 1), body))
        assert c.line() == b"CLIENT_ERROR value too large"
        assert_no_more_output(c)
        victim_ok(c)
        assert c.get(b"big") is None
        # a parse-level error is answered even with noreply
        c.send(body_cmd(b"set big 0 0 %d noreply" % (BODY_MAX + 1), body))
        assert c.line() == b"CLIENT_ERROR value too large"
        victim_ok(c)
        # exactly body_max is accepted
        ok = b"y" * BODY_MAX
        c.send(body_cmd(b"set big 0 0 %d" % BODY_MAX, ok))
        assert c.line() == b"STORED"
        assert c.get(b"big") == (0, ok)
        # a large (2 MB) but sane size is discarded without closing the connection
        big = POISON * (2 * 1000 * 1000 // len(POISON))
        c.send(body_cmd(b"set huge 0 0 %d" % len(big), big))
        assert c.line() == b"CLIENT_ERROR value too large"
        victim_ok(c)
        assert c.get(b"huge") is None
    small_node.assert_buffers_zero()
    b = small_node.buffers()
    assert b["SetData"]["MaxSize"] < 1000 * 1000, "an oversize body must not be buffered: %r" % b


def test_rejected_command_body_discarded(small_node):
    with small_node.raw() as c:
        for line in (b"set k x 0 16", b"set k 0 y 16", b"set k 99999999999999999999 0 16",
                     b"set k 0 0 16 bogus", b"cas k 0 0 16 0 bogus", b"cas k 0 0 16 0 noreplyx"):
            c.send(body_cmd(line, POISON))
            assert c.line() == b"CLIENT_ERROR invalid cmd", line
            victim_ok(c)
        assert c.get(b"k") is None
    small_node.assert_buffers_zero()


@pytest.mark.parametrize("line,reply", [
    (b"set k 0 0", b"CLIENT_ERROR invalid cmd"),
    (b"set k 0 0 z", b"CLIENT_ERROR invalid cmd"),
    (b"set k 0 0 -1", b"CLIENT_ERROR value too large"),
    (b"set k 0 0 99999999999", b"CLIENT_ERROR value too large"),
    (b"set k x 0 99999999999", None),
])
def test_unskippable_body_closes(small_node, line, reply):
    with small_node.raw() as c:
        c.send(line + b"\r\n" + POISON)
        got = c.line()
        if reply is None:
            assert got.startswith(b"CLIENT_ERROR"), got
        else:
            assert got == reply
        assert c.is_closed(2.0), "%r: the connection must be closed after the reply" % line
        assert bytes(c.buf) == b"", "nothing after the error reply: %r" % bytes(c.buf)
    small_node.assert_buffers_zero()


def test_invalid_write_keys(small_node):
    bad_keys = [b"a\x0fb", b"a\tb", b"\x1fabc", b"a\x7fb", b"a\xc2\xa0b", b"a\xe3\x80\x80b", b"a\xc2\x85b",
                b"?k", b"??k", b"@k", b"@@k", b"x" * 251]
    with small_node.raw() as c:
        for k in bad_keys:
            assert c.set(k, b"v") == b"NOT_STORED", k
            assert c.delete(k) == b"NOT_FOUND", k
            assert c.cmd(b"incr " + k + b" 1") == b"0", k
        for k in bad_keys[:7]:
            assert c.retrieve(b"get " + k) == [], k
        # valid non-ASCII keys and the 250-byte limit
        for k in (b"\xe4\xbd\xa0\xe5\xa5\xbd", b"x" * 250, b"a\xffb", b"k?@"):
            assert c.set(k, b"v") == b"STORED", k
            assert c.get(k) == (0, b"v"), k
        victim_ok(c)
        assert int(c.stats(b"curr_items")["curr_items"]) == 5
    small_node.assert_buffers_zero()


def test_bare_newline_and_long_line(small_node):
    with small_node.raw() as c:
        c.send(b"get victim\n")
        assert c.line() == b"CLIENT_ERROR invalid cmd"
        victim_ok(c)
        c.send(b"\n")
        assert c.line() == b"CLIENT_ERROR invalid cmd"
        victim_ok(c)
    # 16 MiB + 1 bytes without a line end → line too long, then close
    with small_node.raw() as c:
        try:
            c.send(b"get " + b"a" * (16 * MiB + 1 - 4))
        except OSError:
            pass                                       # the node may close while we still send
        assert c.line() == b"CLIENT_ERROR line too long"
        assert c.is_closed(2.0)
    # a line of 16 MiB including its CRLF is still accepted: a get with a too-long key
    with small_node.raw(timeout=30) as c:
        c.send(b"get " + b"a" * (16 * MiB - 6) + b"\r\n")
        assert c.line() == b"CLIENT_ERROR key length error"
        victim_ok(c)
    small_node.assert_buffers_zero()


def test_binary_garbage(small_node):
    rnd = random.Random(1234)
    garbage = bytes(rnd.randrange(256) for _ in range(8192)).replace(b"\n", b"").replace(b"\r", b"")
    assert not garbage.startswith((b"set", b"get", b"quit"))
    with small_node.raw() as c:
        c.send(garbage + b"\r\n")
        assert c.line() in (b"ERROR", b"CLIENT_ERROR invalid cmd")
        victim_ok(c)
    with small_node.raw() as c:
        c.send(bytes(range(256)) * 64)                # includes CR/LF/NUL everywhere
        c.send(b"\r\nquit\r\n")
        deadline = time.time() + 5
        while not c.is_closed(0.5):
            assert time.time() < deadline, "garbage connection neither answered nor closed"
    with small_node.raw() as c:
        victim_ok(c)
    small_node.assert_buffers_zero()


def test_half_command_then_eof(small_node):
    for partial in (b"set half 0 0 10\r\nabc", b"get vic", b"set half 0 0 10", b"set half 0 0 3\r\nabc\r",
                    b"set half 0 0 600\r\n" + b"z" * 300):
        c = small_node.raw()
        c.send(partial)
        c.sock.shutdown(socket.SHUT_WR)
        assert c.is_closed(2.0), partial
        c.close()
        assert small_node.running()
        with small_node.raw() as c2:
            victim_ok(c2)
            assert c2.get(b"half") is None
    small_node.assert_buffers_zero()


def test_pipelined_requests_in_order(small_node):
    reqs, expect, model = [], [], {}
    for i in range(1000):
        if i % 7 == 3:
            reqs.append(body_cmd(b"set ?bad%d 0 0 1" % i, b"x"))
            expect.append(b"NOT_STORED")
        else:
            v = b"v%d" % i
            reqs.append(body_cmd(b"set pk%d %d 0 %d" % (i, i, len(v)), v))
            expect.append(b"STORED")
            model[b"pk%d" % i] = (i, v)
        if i % 100 == 99:
            k = b"pk%d" % (i - 1)
            reqs.append(b"get %s\r\n" % k)
            if k in model:
                expect += [b"VALUE %s %d %d" % (k, model[k][0], len(model[k][1])), model[k][1]]
            expect.append(b"END")
        if i % 250 == 0:
            k = b"pk%d" % i
            reqs.append(b"delete %s\r\n" % k)
            expect.append(b"DELETED" if model.pop(k, None) else b"NOT_FOUND")
    with small_node.raw(timeout=30) as c:
        c.send(b"".join(reqs))
        got = [c.line() for _ in expect]
        assert got == expect
        assert_no_more_output(c, 0.2)
        keys = [b"pk%d" % i for i in range(1000)]
        res = c.retrieve(b"get " + b" ".join(keys))
        assert res == [(k, model[k][0], model[k][1]) for k in keys if k in model]
    small_node.assert_buffers_zero()


# ---------------------------------------------------------------------------------------------
# timeouts and panics (§3.5, D4b)
# ---------------------------------------------------------------------------------------------

def test_timeout_when_slot_held(node_factory):
    node = node_factory(overrides={"mc": {"max_req": 1, "timeout_ms": 200}},
                        env={"BEANSDB_TEST_HOOKS": "sleep=slowkey:1000"})
    with node.raw() as c:
        assert c.set(b"other", b"o") == b"STORED"
        slow0 = int(c.stats(b"slow_cmd")["slow_cmd"])
    a, b = node.raw(), node.raw()
    try:
        t0 = time.time()
        a.send(b"get slowkey\r\n")
        time.sleep(0.05)
        # a get and a set queued behind the held slot: neither is executed
        b.send(b"get other\r\n" + body_cmd(b"set other 0 0 3", b"new"))
        assert b.line() == b"SERVER_ERROR timeout"
        assert b.line() == b"SERVER_ERROR timeout"
        # the slow request started in time: it returns its real result
        assert a.line() == b"END"
        assert time.time() - t0 >= 0.9
        assert_no_more_output(a, 0.2)
        assert_no_more_output(b, 0.2)
        # both connections continue
        assert b.get(b"other") == (0, b"o"), "a timed-out set must not be executed"
        assert a.get(b"other") == (0, b"o")
        assert int(a.stats(b"slow_cmd")["slow_cmd"]) >= slow0 + 1
    finally:
        a.close()
        b.close()
    node.assert_buffers_zero()


def test_panic_in_handler(node_factory):
    node = node_factory(env={"BEANSDB_TEST_HOOKS": "panic=boom"})
    with node.raw() as c:
        assert c.set(b"fine", b"ok") == b"STORED"
        assert c.cmd(b"get boom") == b"SERVER_ERROR internal error"
        assert c.get(b"fine") == (0, b"ok")
        c.send(body_cmd(b"set boom 0 0 200", b"p" * 200))
        assert c.line() == b"SERVER_ERROR internal error"
        assert c.delete(b"boom") == b"SERVER_ERROR internal error"
        assert c.cmd(b"incr boom 1") == b"SERVER_ERROR internal error"
        assert_no_more_output(c, 0.2)
        assert c.get(b"fine") == (0, b"ok")
    assert node.running()
    with node.raw() as c:
        assert c.get(b"fine") == (0, b"ok")
    node.assert_buffers_zero()
