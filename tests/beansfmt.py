"""Independent Python implementation of the beansdb / gobeansdb 2.1 on-disk formats.

Written from the node specification (docs: node.md §2 hashing, §4 on-disk formats, §5 htree and
listings). It is the test oracle for the Rust node: it parses homes the node wrote, and writes
homes (see gen_home.py) the node must serve. Keep it independent of the Rust code: when the two
disagree, the spec decides.

All integers on disk are little-endian.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import mmh3
import quicklz

# ---------------------------------------------------------------------------------------------
# §2 hashing
# ---------------------------------------------------------------------------------------------

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193
M32 = 0xFFFFFFFF
M64 = (1 << 64) - 1


def fnv1a(data: bytes) -> int:
    """gobeansdb's FNV-1a: every byte is sign-extended before the XOR (bytes >= 0x80 XOR 0xFFFFFFxx)."""
    h = FNV_OFFSET
    for b in data:
        if b >= 0x80:
            b |= 0xFFFFFF00
        h = ((h ^ b) * FNV_PRIME) & M32
    return h


def fnv1a_unsigned(data: bytes) -> int:
    """Standard FNV-1a; only used to show that it differs (wrong for beansdb)."""
    h = FNV_OFFSET
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & M32
    return h


def murmur3(data: bytes) -> int:
    return mmh3.hash(data, 0, signed=False)


def keyhash(key: bytes) -> int:
    return (fnv1a(key) << 32) | murmur3(key)


def depth_of(numbucket: int) -> int:
    try:
        return {1: 0, 16: 1, 256: 2}[numbucket]
    except KeyError:
        raise ValueError("numbucket must be 1, 16 or 256, not %r" % numbucket)


def bucket_of(kh: int, numbucket: int) -> int:
    d = depth_of(numbucket)
    return kh >> (64 - 4 * d) if d else 0


def nibble(kh: int, i: int) -> int:
    return (kh >> (60 - 4 * i)) & 0xF


def vhash(value: bytes) -> int:
    n = len(value)
    h = (n * 97) & M32
    if n <= 1024:
        h = (h + fnv1a(value)) & M32
    else:
        h = (h + fnv1a(value[:512])) & M32
        h = (h * 97) & M32
        h = (h + fnv1a(value[n - 512:])) & M32
    return h & 0xFFFF


def bucket_dir(home: str, numbucket: int, bucket: int) -> str:
    """§4.1 bucket directory layout."""
    if numbucket == 1:
        return home
    if numbucket == 16:
        return os.path.join(home, "%x" % bucket)
    return os.path.join(home, "%x" % (bucket >> 4), "%x" % (bucket & 0xF))


# ---------------------------------------------------------------------------------------------
# §4.3 compression decision and QuickLZ
# ---------------------------------------------------------------------------------------------

FLAG_CLIENT_COMPRESSED = 0x10
FLAG_SERVER_COMPRESSED = 0x10000
FLAG_INCR = 0x204
DEFAULT_NOT_COMPRESS = frozenset({"audio/wave", "audio/mpeg"})
COMPRESS_SAMPLE = 10240

_WS = b"\t\n\x0c\r "


def _first_non_ws(data: bytes) -> int:
    i = 0
    while i < len(data) and data[i] in _WS:
        i += 1
    return i


def _html_sig(sig: bytes):
    def match(data: bytes, fnws: int) -> Optional[str]:
        d = data[fnws:]
        if len(d) < len(sig) + 1:
            return None
        for i, b in enumerate(sig):
            db = d[i]
            if 0x41 <= b <= 0x5A:  # letters compare case-insensitively
                db &= 0xDF
            if b != db:
                return None
        if d[len(sig)] not in b" >":  # must be followed by a tag-terminating byte
            return None
        return "text/html; charset=utf-8"
    return match


def _masked(pat: bytes, mask: bytes, ct: str, skip_ws: bool = False):
    def match(data: bytes, fnws: int) -> Optional[str]:
        d = data[fnws:] if skip_ws else data
        if len(d) < len(pat):
            return None
        for i in range(len(pat)):
            if d[i] & mask[i] != pat[i]:
                return None
        return ct
    return match


def _exact(pat: bytes, ct: str):
    def match(data: bytes, fnws: int) -> Optional[str]:
        return ct if data.startswith(pat) else None
    return match


def _mp4(data: bytes, fnws: int) -> Optional[str]:
    if len(data) < 12:
        return None
    box = struct.unpack(">I", data[:4])[0]
    if len(data) < box or box % 4 != 0 or data[4:8] != b"ftyp":
        return None
    for st in range(8, box, 4):
        if st == 12:  # the minor version field
            continue
        if data[st:st + 3] == b"mp4":
            return "video/mp4"
    return None


def _text(data: bytes, fnws: int) -> Optional[str]:
    for b in data[fnws:]:
        if b <= 0x08 or b == 0x0B or 0x0E <= b <= 0x1A or 0x1C <= b <= 0x1F:
            return None
    return "text/plain; charset=utf-8"


_FF4_0_4 = b"\xFF\xFF\xFF\xFF\x00\x00\x00\x00\xFF\xFF\xFF\xFF"

# Go 1.13 net/http sniff table, in Go's order (text sniff last).
_SNIFF = [_html_sig(s) for s in (
    b"<!DOCTYPE HTML", b"<HTML", b"<HEAD", b"<SCRIPT", b"<IFRAME", b"<H1", b"<DIV", b"<FONT",
    b"<TABLE", b"<A", b"<STYLE", b"<TITLE", b"<B", b"<BODY", b"<BR", b"<P", b"<!--")] + [
    _masked(b"<?xml", b"\xFF" * 5, "text/xml; charset=utf-8", skip_ws=True),
    _exact(b"%PDF-", "application/pdf"),
    _exact(b"%!PS-Adobe-", "application/postscript"),
    _masked(b"\xFE\xFF\x00\x00", b"\xFF\xFF\x00\x00", "text/plain; charset=utf-16be"),
    _masked(b"\xFF\xFE\x00\x00", b"\xFF\xFF\x00\x00", "text/plain; charset=utf-16le"),
    _masked(b"\xEF\xBB\xBF\x00", b"\xFF\xFF\xFF\x00", "text/plain; charset=utf-8"),
    _exact(b"\x00\x00\x01\x00", "image/x-icon"),
    _exact(b"\x00\x00\x02\x00", "image/x-icon"),
    _exact(b"BM", "image/bmp"),
    _exact(b"GIF87a", "image/gif"),
    _exact(b"GIF89a", "image/gif"),
    _masked(b"RIFF\x00\x00\x00\x00WEBPVP", _FF4_0_4 + b"\xFF\xFF", "image/webp"),
    _exact(b"\x89PNG\x0D\x0A\x1A\x0A", "image/png"),
    _exact(b"\xFF\xD8\xFF", "image/jpeg"),
    _masked(b".snd", b"\xFF" * 4, "audio/basic"),
    _masked(b"FORM\x00\x00\x00\x00AIFF", _FF4_0_4, "audio/aiff"),
    _masked(b"ID3", b"\xFF" * 3, "audio/mpeg"),
    _masked(b"OggS\x00", b"\xFF" * 5, "application/ogg"),
    _masked(b"MThd\x00\x00\x00\x06", b"\xFF" * 8, "audio/midi"),
    _masked(b"RIFF\x00\x00\x00\x00AVI ", _FF4_0_4, "video/avi"),
    _masked(b"RIFF\x00\x00\x00\x00WAVE", _FF4_0_4, "audio/wave"),
    _mp4,
    _exact(b"\x1A\x45\xDF\xA3", "video/webm"),
    _masked(b"\x00" * 34 + b"LP", b"\x00" * 34 + b"\xFF\xFF", "application/vnd.ms-fontobject"),
    _exact(b"\x00\x01\x00\x00", "application/font-ttf"),
    _exact(b"OTTO", "application/font-off"),
    _exact(b"ttcf", "application/font-cff"),
    _exact(b"wOFF", "application/font-woff"),
    _exact(b"\x1F\x8B\x08", "application/x-gzip"),
    _exact(b"PK\x03\x04", "application/zip"),
    _exact(b"Rar!\x1A\x07\x00", "application/x-rar-compressed"),
    _exact(b"Rar!\x1A\x07\x01\x00", "application/x-rar-compressed"),
    _exact(b"\x00\x61\x73\x6D", "application/wasm"),
    _text,
]


def sniff_content_type(data: bytes) -> str:
    """Go http.DetectContentType-compatible sniff (first 512 bytes)."""
    data = data[:512]
    fnws = _first_non_ws(data)
    for sig in _SNIFF:
        ct = sig(data, fnws)
        if ct:
            return ct
    return "application/octet-stream"


def qlz_header(c: bytes) -> Tuple[int, int, bool]:
    """(total size incl. header, decompressed size, compressed?) of a QuickLZ 1.4.1 stream."""
    if len(c) < 3:
        raise ValueError("quicklz: short header")
    b0 = c[0]
    if b0 & 2:
        if len(c) < 9:
            raise ValueError("quicklz: short long header")
        total, dec = struct.unpack_from("<II", c, 1)
    else:
        total, dec = c[1], c[2]
    return total, dec, bool(b0 & 1)


def qlz_compress(data: bytes) -> bytes:
    return quicklz.compress(bytes(data))


def qlz_decompress(c: bytes) -> bytes:
    total, dec, _ = qlz_header(c)
    if total != len(c):  # §4.3: header size must equal the stored length
        raise ValueError("quicklz: header says %d bytes, stored %d" % (total, len(c)))
    out = quicklz.decompress(bytes(c))
    if len(out) != dec:
        raise ValueError("quicklz: decompressed size mismatch")
    return out


def compress_decision(key: bytes, value: bytes, flag: int,
                      not_compress: Iterable[str] = DEFAULT_NOT_COMPRESS) -> Tuple[bytes, int]:
    """§4.3: returns (stored value, stored flag) for a live record written by a set."""
    if flag & (FLAG_CLIENT_COMPRESSED | FLAG_SERVER_COMPRESSED):
        return value, flag
    if 24 + len(key) + len(value) <= 256:
        return value, flag
    sample = value[:COMPRESS_SAMPLE]
    if sniff_content_type(sample) in set(not_compress):
        return value, flag
    c = qlz_compress(sample)
    if 10 * len(c) > 7 * len(sample):
        return value, flag
    if len(value) > COMPRESS_SAMPLE:
        c = qlz_compress(value)
    return c, flag | FLAG_SERVER_COMPRESSED


# ---------------------------------------------------------------------------------------------
# §4.2 data records
# ---------------------------------------------------------------------------------------------

HEADER = struct.Struct("<IIIiII")  # crc ts flag ver ksz vsz
PAD = 256


def padded_size(r: int) -> int:
    return ((r + 255) >> 8) << 8


def record_crc(header_tail: bytes, key: bytes, value: bytes) -> int:
    c = zlib.crc32(header_tail)
    c = zlib.crc32(key, c)
    return zlib.crc32(value, c) & M32


@dataclass
class Record:
    key: bytes
    stored: bytes          # value bytes as on disk (maybe QuickLZ)
    flag: int              # flag as on disk (maybe with 0x10000)
    ver: int
    ts: int
    crc: int = 0
    offset: int = 0        # byte offset in its data file
    chunk: int = 0

    @property
    def size(self) -> int:
        return 24 + len(self.key) + len(self.stored)

    @property
    def disk_size(self) -> int:
        return padded_size(self.size)

    @property
    def keyhash(self) -> int:
        return keyhash(self.key)

    def value(self) -> bytes:
        """Uncompressed value (§3.9: undecodable 0x10000 values are returned raw)."""
        if self.flag & FLAG_SERVER_COMPRESSED:
            try:
                return qlz_decompress(self.stored)
            except Exception:
                return self.stored
        return self.stored

    def client_flag(self) -> int:
        if self.flag & FLAG_SERVER_COMPRESSED:
            try:
                qlz_decompress(self.stored)
                return self.flag & ~FLAG_SERVER_COMPRESSED
            except Exception:
                return self.flag
        return self.flag

    def vhash(self) -> int:
        return vhash(self.value()) if self.ver > 0 else 0


def encode_record(key: bytes, stored: bytes, flag: int, ver: int, ts: int, pad: bool = True) -> bytes:
    """Encode a record from its *stored* value (call compress_decision first for a set)."""
    tail = struct.pack("<IIiII", ts & M32, flag & M32, ver, len(key), len(stored))
    crc = record_crc(tail, key, stored)
    rec = struct.pack("<I", crc) + tail + key + stored
    if pad:
        rec += b"\0" * (padded_size(len(rec)) - len(rec))
    return rec


def encode_set(key: bytes, value: bytes, flag: int, ver: int, ts: int,
               not_compress: Iterable[str] = DEFAULT_NOT_COMPRESS) -> bytes:
    stored, sflag = compress_decision(key, value, flag, not_compress)
    return encode_record(key, stored, sflag, ver, ts)


def encode_tombstone(key: bytes, ver: int, ts: int) -> bytes:
    assert ver < 0
    return encode_record(key, b"", 0, ver, ts)


def raw_record(rec: Record) -> bytes:
    """§3.6 `@@` answer: header + key + decompressed value, 0x10000 cleared, CRC recomputed, no pad."""
    return encode_record(rec.key, rec.value(), rec.client_flag(), rec.ver, rec.ts, pad=False)


def decode_record(buf: bytes, offset: int = 0, end: Optional[int] = None) -> Optional[Record]:
    """Decode the record at `offset`; None if it is not valid (§4.2 validity rule)."""
    if end is None:
        end = len(buf)
    if offset + 24 > end:
        return None
    crc, ts, flag, ver, ksz, vsz = HEADER.unpack_from(buf, offset)
    if not 1 <= ksz <= 250:
        return None
    r = 24 + ksz + vsz
    if offset + r > end:
        return None
    body = bytes(buf[offset + 4:offset + r])
    if zlib.crc32(body) & M32 != crc:
        return None
    key = body[20:20 + ksz]
    return Record(key=key, stored=body[20 + ksz:], flag=flag, ver=ver, ts=ts, crc=crc, offset=offset)


@dataclass
class ScanResult:
    records: List[Record]
    broken: List[Tuple[int, int]]   # (offset where skipping started, bytes skipped) before a valid record
    valid_end: int                  # end offset (padded, capped at file size) of the last valid record
    size: int


def iter_records(buf: bytes, start: int = 0, chunk: int = 0) -> Iterator[Tuple[Record, int]]:
    """Stream records with 256-byte resync. Yields (record, broken bytes skipped before it)."""
    pos, broken = start, 0
    n = len(buf)
    while pos + 24 <= n:
        rec = decode_record(buf, pos, n)
        if rec is None:
            pos += PAD
            broken += PAD
            continue
        rec.chunk = chunk
        yield rec, broken
        broken = 0
        pos += rec.disk_size


def scan_data(buf: bytes, start: int = 0, chunk: int = 0) -> ScanResult:
    recs, broken, end = [], [], start
    for rec, b in iter_records(buf, start, chunk):
        if b:
            broken.append((rec.offset - b, b))
        recs.append(rec)
        end = min(rec.offset + rec.disk_size, len(buf))
    return ScanResult(recs, broken, end, len(buf))


def read_data_file(path: str, chunk: int = 0, start: int = 0) -> ScanResult:
    with open(path, "rb") as f:
        return scan_data(f.read(), start, chunk)


# ---------------------------------------------------------------------------------------------
# §4.4 hint files
# ---------------------------------------------------------------------------------------------

HINT_ITEM = struct.Struct("<QIIiHB")  # keyhash chunk offset ver vhash ksz
HINT_HEADER = struct.Struct("<QII")   # indexOffset numKey datasize


@dataclass
class HintItem:
    keyhash: int
    chunk: int
    offset: int
    ver: int
    vhash: int
    key: bytes

    def sort_key(self):
        return (self.keyhash, self.key)


def encode_hint(items: Iterable[HintItem], datasize: int, index_interval: int = 4096,
                merged: bool = False) -> bytes:
    """Write a hint file; items are sorted here. `.idx.s` stores chunk 0 (merged=False)."""
    items = sorted(items, key=HintItem.sort_key)
    body = bytearray(16)
    index: List[Tuple[int, int]] = []
    last = 0
    for it in items:
        o = len(body)
        if o - last > index_interval - 279:
            index.append((it.keyhash, o))
            last = o
        body += HINT_ITEM.pack(it.keyhash, it.chunk if merged else 0, it.offset, it.ver,
                               it.vhash, len(it.key)) + it.key
    index_offset = len(body)
    HINT_HEADER.pack_into(body, 0, index_offset, len(items), datasize)
    for kh, o in index:
        body += struct.pack("<Qq", kh, o)
    return bytes(body)


@dataclass
class HintFile:
    items: List[HintItem]
    datasize: int
    index: List[Tuple[int, int]]
    index_offset: int


def decode_hint(buf: bytes, chunk: Optional[int] = None) -> HintFile:
    """Parse and validate (§4.4 loading rules, except the datasize-vs-data-file check)."""
    if len(buf) < 16:
        raise ValueError("hint: short header")
    index_offset, num_key, datasize = HINT_HEADER.unpack_from(buf, 0)
    if index_offset > len(buf) or index_offset < 16 or (len(buf) - index_offset) % 16:
        raise ValueError("hint: bad indexOffset %d for size %d" % (index_offset, len(buf)))
    items = []
    pos = 16
    while pos < index_offset:
        if pos + HINT_ITEM.size > index_offset:
            raise ValueError("hint: item crosses indexOffset")
        kh, c, off, ver, vh, ksz = HINT_ITEM.unpack_from(buf, pos)
        pos += HINT_ITEM.size
        key = bytes(buf[pos:pos + ksz])
        pos += ksz
        if pos > index_offset or ksz == 0:
            raise ValueError("hint: bad key size")
        items.append(HintItem(kh, c if chunk is None else chunk, off, ver, vh, key))
    if pos != index_offset:
        raise ValueError("hint: items do not end at indexOffset")
    if num_key != len(items):
        raise ValueError("hint: numKey %d != %d items" % (num_key, len(items)))
    index = [struct.unpack_from("<Qq", buf, o) for o in range(index_offset, len(buf), 16)]
    return HintFile(items, datasize, index, index_offset)


def hint_items_for_records(records: Sequence[Record], chunk: int = 0) -> List[HintItem]:
    """Final state per distinct key of a sequence of records (later position wins)."""
    slots: Dict[bytes, HintItem] = {}
    for r in records:
        slots[r.key] = HintItem(keyhash(r.key), chunk, r.offset, r.ver, r.vhash(), r.key)
    return list(slots.values())


# ---------------------------------------------------------------------------------------------
# §5 htree
# ---------------------------------------------------------------------------------------------

KHASH_LENS = [8, 8, 7, 7, 6, 6, 5, 5]


@dataclass
class LeafItem:
    keyhash: int   # full 64-bit keyhash
    ver: int
    vhash: int
    offset: int
    chunk: int


def leaf_khash_len(numbucket: int, height: int) -> int:
    return KHASH_LENS[depth_of(numbucket) + height - 1]


def encode_leaf_item(it: LeafItem, k: int) -> bytes:
    assert it.offset % 256 == 0
    return ((it.keyhash & ((1 << (8 * k)) - 1)).to_bytes(k, "little")
            + struct.pack("<iH", it.ver, it.vhash & 0xFFFF)
            + (it.offset >> 8).to_bytes(3, "little")
            + struct.pack("<H", it.chunk))


def decode_leaf_item(b: bytes, k: int, prefix_bits: int = 0) -> LeafItem:
    """prefix_bits = the leaf's path nibbles as the top bits of a keyhash (restores dropped bytes)."""
    mask = (1 << (8 * k)) - 1
    stored = int.from_bytes(b[:k], "little")
    ver, vh = struct.unpack_from("<iH", b, k)
    off = int.from_bytes(b[k + 6:k + 9], "little") << 8
    chunk = struct.unpack_from("<H", b, k + 9)[0]
    return LeafItem((stored & mask) | (prefix_bits & ~mask & M64), ver, vh, off, chunk)


def _fold97(hashes: Iterable[int]) -> int:
    h = 0
    for x in hashes:
        h = (h * 97 + x) & 0xFFFF
    return h


class HTree:
    """One bucket's Merkle tree (§5.1–5.3) with items kept in leaf order."""

    def __init__(self, numbucket: int = 16, bucket: int = 0, height: int = 3):
        self.numbucket, self.bucket, self.height = numbucket, bucket, height
        self.depth = depth_of(numbucket)
        if height < 2 or self.depth + height > 8:
            raise ValueError("bad tree height %d for %d buckets" % (height, numbucket))
        self.k = leaf_khash_len(numbucket, height)
        self.nleaves = 16 ** (height - 1)
        self.leaves: List[List[LeafItem]] = [[] for _ in range(self.nleaves)]

    # --- addressing
    def leaf_index(self, kh: int) -> int:
        return (kh >> (64 - 4 * (self.depth + self.height - 1))) & (self.nleaves - 1)

    def leaf_prefix_bits(self, leaf: int) -> int:
        top = self.bucket << (64 - 4 * self.depth) if self.depth else 0
        return top | (leaf << (64 - 4 * (self.depth + self.height - 1)))

    # --- mutation (insert appends, update in place, removal closes the gap)
    def get(self, kh: int) -> Optional[LeafItem]:
        for it in self.leaves[self.leaf_index(kh)]:
            if it.keyhash == kh:
                return it
        return None

    def set(self, kh: int, ver: int, vh: int, offset: int, chunk: int) -> None:
        leaf = self.leaves[self.leaf_index(kh)]
        for it in leaf:
            if it.keyhash == kh:
                it.ver, it.vhash, it.offset, it.chunk = ver, vh, offset, chunk
                return
        leaf.append(LeafItem(kh, ver, vh, offset, chunk))

    def remove(self, kh: int) -> None:
        leaf = self.leaves[self.leaf_index(kh)]
        for i, it in enumerate(leaf):
            if it.keyhash == kh:
                del leaf[i]
                return

    def items(self) -> Iterator[LeafItem]:
        for leaf in self.leaves:
            yield from leaf

    # --- §5.3 arithmetic
    @staticmethod
    def leaf_count_hash(items: Iterable[LeafItem]) -> Tuple[int, int]:
        count, h = 0, 0
        for it in items:
            if it.ver > 0:
                count += 1
                h = (h + it.vhash * ((it.keyhash >> 32) & 0xFFFF)) & 0xFFFF
        return count, h

    def node(self, level: int, index: int) -> Tuple[int, int]:
        """(count, hash) of the node at `level` (0 = root) and `index` within the level."""
        if level == self.height - 1:
            return self.leaf_count_hash(self.leaves[index])
        kids = [self.node(level + 1, index * 16 + i) for i in range(16)]
        count = sum(c for c, _ in kids)
        if count > 256:
            return count, _fold97(h for _, h in kids)
        return count, sum(h for _, h in kids) & 0xFFFF

    def root(self) -> Tuple[int, int]:
        return self.node(0, 0)

    def live_count(self) -> int:
        return sum(1 for it in self.items() if it.ver > 0)

    # --- §4.5 dump
    def dump(self) -> bytes:
        heads, bodies = bytearray(), bytearray()
        for leaf in self.leaves:
            c, h = self.leaf_count_hash(leaf)
            heads += struct.pack("<IH", c, h)
            data = b"".join(encode_leaf_item(it, self.k) for it in leaf)
            bodies += struct.pack("<I", len(data)) + data
        return bytes(heads + bodies)

    @classmethod
    def load(cls, buf: bytes, numbucket: int, bucket: int, height: int) -> "HTree":
        """Parse and validate a `.idx.hash` (§4.5); raises ValueError on any mismatch."""
        t = cls(numbucket, bucket, height)
        n, isz = t.nleaves, t.k + 11
        if len(buf) < 10 * n:
            raise ValueError("htree: short file")
        pos = 6 * n
        for i in range(n):
            if pos + 4 > len(buf):
                raise ValueError("htree: truncated at leaf %d" % i)
            ln = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
            if ln % isz or pos + ln > len(buf):
                raise ValueError("htree: bad len %d at leaf %d" % (ln, i))
            pre = t.leaf_prefix_bits(i)
            t.leaves[i] = [decode_leaf_item(buf[o:o + isz], t.k, pre) for o in range(pos, pos + ln, isz)]
            pos += ln
            c, h = struct.unpack_from("<IH", buf, 6 * i)
            if (c, h) != cls.leaf_count_hash(t.leaves[i]):
                raise ValueError("htree: leaf %d count/hash mismatch" % i)
        if pos != len(buf):
            raise ValueError("htree: %d trailing bytes" % (len(buf) - pos))
        return t


class Store:
    """All served buckets' trees plus the store-level nodes, for §5.4 listings."""

    def __init__(self, numbucket: int = 16, height: int = 3, served: Optional[Iterable[int]] = None):
        self.numbucket, self.height, self.depth = numbucket, height, depth_of(numbucket)
        served = range(numbucket) if served is None else served
        self.trees: Dict[int, HTree] = {b: HTree(numbucket, b, height) for b in served}

    def tree_for(self, kh: int) -> Optional[HTree]:
        return self.trees.get(bucket_of(kh, self.numbucket))

    def bucket_root(self, b: int) -> Tuple[int, int]:
        t = self.trees.get(b)
        return t.root() if t else (0, 0)

    def store_node(self, prefix: str) -> Tuple[int, int]:
        """(count, hash) of a store-level node; at full depth this is a bucket root."""
        if len(prefix) == self.depth:
            return self.bucket_root(int(prefix, 16) if prefix else 0)
        kids = [self.store_node(prefix + "%x" % i) for i in range(16)]
        return sum(c for c, _ in kids), _fold97(h for _, h in kids)

    def live_count(self) -> int:
        return sum(t.live_count() for t in self.trees.values())

    def listing(self, path: str) -> bytes:
        """`get @<path>` body (§5.4); b'' for the zero-length answers."""
        if len(path) > 16 or any(ch not in "0123456789abcdefABCDEF" for ch in path):
            return b""
        path = path.lower()
        if self.numbucket > 1 and len(path) < self.depth:
            out = []
            for i in range(16):
                c, h = self.store_node(path + "%x" % i)
                out.append("%x/ %d %d\n" % (i, h, c))
            return "".join(out).encode()
        t = self.trees.get(int(path[:self.depth], 16) if self.depth else 0)
        if t is None:
            return b""
        rel = path[self.depth:]
        level = min(len(rel), t.height - 1)
        idx = int(rel[:level], 16) if level else 0
        count, _ = t.node(level, idx)
        if level == t.height - 1 or count < 256:
            bits = 4 * len(path)
            want = int(path, 16) if path else 0
            span = 16 ** (t.height - 1 - level)
            out = []
            for leaf in range(idx * span, (idx + 1) * span):
                for it in t.leaves[leaf]:
                    if bits == 0 or it.keyhash >> (64 - bits) == want:
                        out.append("%016x %d %d\n" % (it.keyhash, it.vhash, it.ver))
            return "".join(out).encode()
        out = []
        for i in range(16):
            c, h = t.node(level + 1, idx * 16 + i)
            out.append("%x/ %d %d\n" % (i, h, c))
        return "".join(out).encode()


# ---------------------------------------------------------------------------------------------
# §4.6 collision.yaml, §4.7 nextgc.txt, file names
# ---------------------------------------------------------------------------------------------

@dataclass
class CollisionItem:
    key: bytes
    keyhash: int
    chunk: int
    offset: int
    ver: int
    vhash: int


def encode_collision_yaml(items: Iterable[CollisionItem], hint_chunk: int = 0, hint_split: int = 0) -> bytes:
    """Block style as gobeansdb's YAML library writes it (map keys sorted, keyhash decimal)."""
    by_kh: Dict[int, Dict[bytes, CollisionItem]] = {}
    for it in items:
        by_kh.setdefault(it.keyhash, {})[it.key] = it
    lines = ["hintid:", "  chunk: %d" % hint_chunk, "  split: %d" % hint_split]
    if not by_kh:
        lines.append("items: {}")
    else:
        lines.append("items:")
        for kh in sorted(by_kh):
            lines.append("  %d:" % kh)
            for key in sorted(by_kh[kh]):
                it = by_kh[kh][key]
                k = key.decode("utf-8")
                lines += ["    %s:" % k, "      hintitemmeta:", "        keyhash: %d" % kh,
                          "        pos:", "          chunkid: %d" % it.chunk,
                          "          offset: %d" % it.offset, "        ver: %d" % it.ver,
                          "        vhash: %d" % it.vhash, "      key: %s" % k]
    return ("\n".join(lines) + "\n").encode()


def parse_collision_yaml(text: bytes) -> Tuple[Tuple[int, int], List[CollisionItem]]:
    import yaml
    doc = yaml.safe_load(text) or {}
    hid = doc.get("hintid") or {}
    out = []
    for kh, per_key in (doc.get("items") or {}).items():
        for key, ent in (per_key or {}).items():
            m = ent["hintitemmeta"]
            out.append(CollisionItem(str(ent.get("key", key)).encode(), int(m["keyhash"]),
                                     int(m["pos"]["chunkid"]), int(m["pos"]["offset"]),
                                     int(m["ver"]), int(m["vhash"])))
            assert int(kh) == int(m["keyhash"])
    return (int(hid.get("chunk", 0)), int(hid.get("split", 0))), out


def encode_nextgc(chunk: int) -> bytes:
    return b"%d" % chunk


def parse_nextgc(buf: bytes) -> int:
    return int(buf[:10].strip() or b"0")


def data_name(chunk: int) -> str:
    return "%03d.data" % chunk


def hint_name(chunk: int, split: int, merged: bool = False) -> str:
    return "%03d.%03d.idx.%s" % (chunk, split, "m" if merged else "s")


def htree_name(chunk: int, split: int) -> str:
    return "%03d.%03d.idx.hash" % (chunk, split)


def parse_file_name(name: str) -> Optional[Tuple[str, int, int]]:
    """('data'|'s'|'m'|'hash', chunk, split) or None for names beansdb does not own."""
    parts = name.split(".")
    try:
        if len(parts) == 2 and parts[1] == "data" and len(parts[0]) == 3:
            return "data", int(parts[0]), 0
        if len(parts) == 4 and parts[2] == "idx" and parts[3] in ("s", "m", "hash"):
            if len(parts[0]) == 3 and len(parts[1]) == 3:
                return parts[3], int(parts[0]), int(parts[1])
    except ValueError:
        pass
    return None


# ---------------------------------------------------------------------------------------------
# Whole-bucket reading helpers (used by tests that inspect homes)
# ---------------------------------------------------------------------------------------------

@dataclass
class BucketFiles:
    path: str
    data: Dict[int, ScanResult] = field(default_factory=dict)
    hints: Dict[Tuple[int, int], HintFile] = field(default_factory=dict)
    htrees: Dict[Tuple[int, int], HTree] = field(default_factory=dict)
    collision: Optional[Tuple[Tuple[int, int], List[CollisionItem]]] = None
    nextgc: Optional[int] = None


def read_bucket(path: str, numbucket: int, bucket: int, height: int) -> BucketFiles:
    """Parse every beansdb file of one bucket directory (raises on a malformed file)."""
    bf = BucketFiles(path)
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        parsed = parse_file_name(name)
        if parsed is None:
            if name == "collision.yaml":
                with open(full, "rb") as f:
                    bf.collision = parse_collision_yaml(f.read())
            elif name == "nextgc.txt":
                with open(full, "rb") as f:
                    bf.nextgc = parse_nextgc(f.read())
            continue
        kind, chunk, split = parsed
        with open(full, "rb") as f:
            buf = f.read()
        if kind == "data":
            bf.data[chunk] = scan_data(buf, 0, chunk)
        elif kind == "s":
            bf.hints[(chunk, split)] = decode_hint(buf, chunk)
        elif kind == "hash":
            bf.htrees[(chunk, split)] = HTree.load(buf, numbucket, bucket, height)
    return bf


def final_records(bf: BucketFiles) -> Dict[bytes, Record]:
    """Per key, the record at the latest (chunk, offset) position."""
    out: Dict[bytes, Record] = {}
    for chunk in sorted(bf.data):
        for r in bf.data[chunk].records:
            out[r.key] = r
    return out


def sha1_hex(b: bytes) -> str:
    return hashlib.sha1(b).hexdigest()


# ---------------------------------------------------------------------------------------------
# §6.3 recovery model: what a compatible node's index holds after opening a home
# ---------------------------------------------------------------------------------------------

@dataclass
class RecoveredBucket:
    bucket: int
    tree: HTree
    tree_id: Optional[Tuple[int, int]]          # (chunk, split) of the loaded .idx.hash, None = rebuilt
    truncated: Dict[int, int]                   # chunk -> size after torn-tail repair
    collisions: Dict[Tuple[int, bytes], CollisionItem]
    records: Dict[Tuple[int, int], Record]      # (chunk, offset) -> record, after repair


def _valid_hint_splits(bf: BucketFiles, chunk: int, size: int) -> List[HintFile]:
    """Contiguous splits 000, 001, ... while valid (§4.4 loading rule incl. datasize <= size)."""
    out = []
    split = 0
    while (chunk, split) in bf.hints and bf.hints[(chunk, split)].datasize <= size:
        out.append(bf.hints[(chunk, split)])
        split += 1
    return out


def recover_bucket(bf: BucketFiles, numbucket: int, bucket: int, height: int) -> RecoveredBucket:
    """Apply §6.3 steps 2–4 to parsed files and return the resulting index.

    bf.data must hold full-file scans (read_bucket does that). Tombstones in replayed hints remove
    the key's entry; tombstones and in-place raised versions survive only via a loaded .idx.hash.
    """
    sizes = {c: s.size for c, s in bf.data.items() if s.size > 0}
    chunks = sorted(sizes)
    truncated: Dict[int, int] = {}
    if chunks:
        newest = chunks[-1]
        for c in chunks:
            if c != newest and sizes[c] % 256 == 0:
                continue
            splits = _valid_hint_splits(bf, c, sizes[c])
            start = max([h.datasize for h in splits], default=0)
            ends = [r.offset + r.disk_size for r in bf.data[c].records if r.offset >= start]
            end = max(ends) if ends else start
            if end < sizes[c]:
                truncated[c] = end
                sizes[c] = end
    records = {(c, r.offset): r for c in chunks for r in bf.data[c].records
               if r.offset + r.size <= sizes[c]}

    htrees = {} if truncated else bf.htrees
    cand = sorted(k for k in htrees if chunks and k[0] <= chunks[-1])
    if cand:
        tree_id = cand[-1]
        src = htrees[tree_id]
        tree = HTree(numbucket, bucket, height)
        tree.leaves = [[LeafItem(i.keyhash, i.ver, i.vhash, i.offset, i.chunk) for i in leaf]
                       for leaf in src.leaves]
        C, S = tree_id
    else:
        tree_id, tree, C, S = None, HTree(numbucket, bucket, height), 0, -1

    for c in chunks:
        if c < C:
            continue
        splits = _valid_hint_splits(bf, c, sizes[c])
        items_by_split = [h.items for h in splits]
        covered = max([h.datasize for h in splits], default=0)
        if covered < sizes[c]:
            tail = [r for r in bf.data[c].records if covered <= r.offset and r.offset + r.size <= sizes[c]]
            items_by_split.append(sorted(hint_items_for_records(tail, c), key=HintItem.sort_key))
        for s, items in enumerate(items_by_split):
            if c == C and s <= S:
                continue
            for it in items:
                if it.ver > 0:
                    tree.set(it.keyhash, it.ver, it.vhash, it.offset, c)
                else:
                    tree.remove(it.keyhash)

    coll = {}
    if bf.collision:
        for it in bf.collision[1]:
            coll[(it.keyhash, it.key)] = it
    return RecoveredBucket(bucket, tree, tree_id, truncated, coll, records)


class RecoveredHome:
    """A whole home after recovery, answering like a compatible node would (§3.6, §5.4, §9)."""

    def __init__(self, home: str, numbucket: int, height: int, served: Optional[Iterable[int]] = None):
        self.home, self.numbucket, self.height = home, numbucket, height
        self.store = Store(numbucket, height, served)
        self.buckets: Dict[int, RecoveredBucket] = {}
        self.files: Dict[int, BucketFiles] = {}
        for b in list(self.store.trees):
            path = bucket_dir(home, numbucket, b)
            if not os.path.isdir(path):
                continue
            bf = read_bucket(path, numbucket, b, height)
            rb = recover_bucket(bf, numbucket, b, height)
            self.files[b], self.buckets[b] = bf, rb
            self.store.trees[b] = rb.tree

    def all_keys(self) -> List[bytes]:
        seen: Dict[bytes, None] = {}
        for rb in self.buckets.values():
            for pos in sorted(rb.records):
                seen.setdefault(rb.records[pos].key, None)
        return list(seen)

    def lookup(self, key: bytes) -> Optional[Tuple[int, int, int, int, Record]]:
        """(ver, vhash, chunk, offset, record) as the index answers for `key`, or None (miss)."""
        kh = keyhash(key)
        rb = self.buckets.get(bucket_of(kh, self.numbucket))
        if rb is None:
            return None
        ci = rb.collisions.get((kh, key))
        if ci is not None:
            rec = rb.records.get((ci.chunk, ci.offset))
            return None if rec is None else (ci.ver, ci.vhash, ci.chunk, ci.offset, rec)
        it = rb.tree.get(kh)
        if it is None:
            return None
        rec = rb.records.get((it.chunk, it.offset))
        if rec is None:
            return None
        if rec.key != key:
            # same keyhash, other key, not in collision.yaml: the node finds this key's newest record
            own = [r for p, r in sorted(rb.records.items()) if r.key == key]
            if not own:
                return None
            r = own[-1]
            return (r.ver, r.vhash(), r.chunk, r.offset, r)
        return (it.ver, it.vhash, it.chunk, it.offset, rec)

    def key_answer(self, key: bytes, max_key_len: int = 250) -> dict:
        """One `keys` entry of expected.json."""
        hit = self.lookup(key)
        live = hit is not None and hit[0] > 0
        out = {"live": live, "flag": None, "len": None, "sha1": None, "value_hex": None, "meta": None}
        if live:
            v = hit[4].value()
            out.update(flag=hit[4].client_flag(), len=len(v), sha1=sha1_hex(v),
                       value_hex=v.hex() if len(v) <= 64 else None)
        if hit is not None and len(key) + 2 <= max_key_len:
            ver, vh, chunk, off, rec = hit
            if ver > 0:
                v = rec.value()
                out["meta"] = "%d %d %d %d %d %d %d" % (ver, vh, rec.client_flag(), len(v), rec.ts, chunk, off)
            else:
                out["meta"] = "%d 0 0 0 %d %d %d" % (ver, rec.ts, chunk, off)
        return out

    def raw(self, kh: int) -> Optional[bytes]:
        """`@@<16 hex>` body: the record the index entry of kh points at."""
        rb = self.buckets.get(bucket_of(kh, self.numbucket))
        it = rb.tree.get(kh) if rb else None
        if it is None:
            return None
        rec = rb.records.get((it.chunk, it.offset))
        return None if rec is None else raw_record(rec)

    def total_items(self) -> int:
        return self.store.live_count()
