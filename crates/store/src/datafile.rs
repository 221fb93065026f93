//! Reading data files (`NNN.data`): a streaming scanner with gobeansdb's 256-byte resync over
//! corruption (spec §4.2, §6.3), and a positional single-record read for the read path.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::record::{padded_size_u64, Record, RecordError, RecordHeader, ALIGN, HEADER_SIZE};

/// Default read buffer of the stream reader (gobeansdb's `bufio_cap` default).
pub const STREAM_BUFFER_SIZE: usize = 1 << 20;
/// Key+value sizes above this are CRC-checked by streaming before being loaded, so a garbage
/// header claiming gigabytes cannot make the scanner allocate them.
const STREAM_VERIFY_THRESHOLD: u64 = 64 << 20;
/// The positional reader checks the file size before allocating values larger than this.
const READ_AT_SIZE_CHECK: u64 = 1 << 20;
/// First positional read: covers the whole record for most small values in one syscall.
// One read covers records up to 512 bytes (most values); larger ones need a second read.
const READ_AT_FIRST: usize = 512;

/// One valid record found by [`DataStreamReader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamItem {
    /// File offset of the record.
    pub offset: u32,
    pub record: Record,
    /// On-disk size (padded to 256); `offset + padded_size` is where the next record starts.
    pub padded_size: u32,
    /// Bytes skipped as corrupt between the previous valid record (or the start offset) and
    /// this one.
    pub broken_before: u64,
}

/// Sequential scanner over a data file. Yields every valid record in order; an invalid record
/// makes it try again at the next 256-byte boundary, like gobeansdb's stream reader.
///
/// A record is valid iff `1 <= ksz <= 250`, its `24 + ksz + vsz` bytes lie inside the file and
/// its CRC matches; missing padding after the final record is allowed.
pub struct DataStreamReader {
    path: PathBuf,
    reader: BufReader<File>,
    file_size: u64,
    /// Offset of the next candidate record.
    pos: u64,
    /// Logical position of `reader`.
    cur: u64,
    /// Bytes skipped since the last valid record.
    broken: u64,
    /// Sum of `broken_before` of all yielded records.
    broken_between: u64,
    last_valid_end: u64,
    finished: bool,
    verify_threshold: u64,
}

impl DataStreamReader {
    /// Opens `path` and positions the scanner at `start_offset` (a record boundary, normally 0 or
    /// the `datasize` of the last valid hint split).
    pub fn open(path: impl AsRef<Path>, start_offset: u64) -> io::Result<Self> {
        Self::open_with_capacity(path, start_offset, STREAM_BUFFER_SIZE)
    }

    pub fn open_with_capacity(
        path: impl AsRef<Path>,
        start_offset: u64,
        capacity: usize,
    ) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = File::open(&path)?;
        let file_size = file.metadata()?.len();
        file.seek(SeekFrom::Start(start_offset))?;
        Ok(DataStreamReader {
            path,
            reader: BufReader::with_capacity(capacity.max(HEADER_SIZE), file),
            file_size,
            pos: start_offset,
            cur: start_offset,
            broken: 0,
            broken_between: 0,
            last_valid_end: start_offset,
            finished: false,
            verify_threshold: STREAM_VERIFY_THRESHOLD,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file when it was opened.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// End (offset + padded size) of the last valid record, or the start offset if none was
    /// found. May exceed `file_size()` by less than 256 when the final record lacks its
    /// padding: the file can then be zero-extended to this size.
    pub fn last_valid_end(&self) -> u64 {
        self.last_valid_end
    }

    /// After the scan finished: bytes after the last valid record (a torn tail to truncate).
    /// 0 while the scan is still running.
    pub fn trailing_garbage(&self) -> u64 {
        if self.finished {
            self.file_size.saturating_sub(self.last_valid_end)
        } else {
            0
        }
    }

    /// All bytes skipped so far: corrupt stretches between records plus, once finished, the
    /// trailing garbage (GC's `SizeBroken`).
    pub fn total_broken(&self) -> u64 {
        self.broken_between + self.trailing_garbage()
    }

    /// Whether `next_record` has returned `None`.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next valid record, or `None` at the end of the file. I/O errors other than the file
    /// shrinking under the scanner are returned.
    pub fn next_record(&mut self) -> io::Result<Option<StreamItem>> {
        loop {
            // Offsets are u32 in every index structure; nothing valid can start beyond that.
            if self.pos >= self.file_size || self.pos > u32::MAX as u64 {
                self.finished = true;
                return Ok(None);
            }
            let offset = self.pos;
            match self.try_record_at(offset)? {
                Some((record, padded)) => {
                    let item = StreamItem {
                        offset: offset as u32,
                        record,
                        padded_size: padded,
                        broken_before: self.broken,
                    };
                    self.broken_between += self.broken;
                    self.broken = 0;
                    self.pos = offset + padded as u64;
                    self.last_valid_end = self.pos;
                    return Ok(Some(item));
                }
                None => {
                    // Resync at the next 256-byte boundary, as gobeansdb does.
                    let next = (offset & !(ALIGN as u64 - 1)) + ALIGN as u64;
                    self.broken += next - offset;
                    self.pos = next;
                }
            }
        }
    }

    fn goto(&mut self, target: u64) -> io::Result<()> {
        if target != self.cur {
            let delta = target as i128 - self.cur as i128;
            match i64::try_from(delta) {
                // Keeps the buffer when the target lies inside it.
                Ok(d) => self.reader.seek_relative(d)?,
                Err(_) => {
                    self.reader.seek(SeekFrom::Start(target))?;
                }
            }
            self.cur = target;
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.reader.read_exact(buf)?;
        self.cur += buf.len() as u64;
        Ok(())
    }

    /// Checks the CRC of the record at the current position without loading it.
    fn streaming_crc_ok(&mut self, header: &RecordHeader) -> io::Result<bool> {
        let h = header.encode();
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&h[4..]);
        let mut left = header.ksz as u64 + header.vsz as u64;
        let mut chunk = vec![0u8; 1 << 16];
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            self.read_exact(&mut chunk[..n])?;
            hasher.update(&chunk[..n]);
            left -= n as u64;
        }
        Ok(hasher.finalize() == header.crc)
    }

    /// The valid record at `offset` with its padded size, or `None` if there is none.
    fn try_record_at(&mut self, offset: u64) -> io::Result<Option<(Record, u32)>> {
        match self.try_record_at_inner(offset) {
            // The file shrank while scanning: what is gone is not a record.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            other => other,
        }
    }

    fn try_record_at_inner(&mut self, offset: u64) -> io::Result<Option<(Record, u32)>> {
        if self.file_size - offset < HEADER_SIZE as u64 {
            return Ok(None);
        }
        self.goto(offset)?;
        let mut hbuf = [0u8; HEADER_SIZE];
        self.read_exact(&mut hbuf)?;
        let header = RecordHeader::parse(&hbuf);
        if header.check_key_size().is_err() {
            return Ok(None);
        }
        let len = header.record_len();
        if len > self.file_size - offset {
            return Ok(None);
        }
        let Ok(padded) = u32::try_from(padded_size_u64(len)) else {
            // Cannot be addressed by u32 offsets/datasize of the hint and index formats.
            return Ok(None);
        };
        if header.ksz as u64 + header.vsz as u64 > self.verify_threshold {
            if !self.streaming_crc_ok(&header)? {
                return Ok(None);
            }
            self.goto(offset + HEADER_SIZE as u64)?;
        }
        let mut key = vec![0u8; header.ksz as usize];
        self.read_exact(&mut key)?;
        let mut value = vec![0u8; header.vsz as usize];
        self.read_exact(&mut value)?;
        match Record::from_header(&header, key, value) {
            Ok(rec) => Ok(Some((rec, padded))),
            Err(_) => Ok(None),
        }
    }
}

impl Iterator for DataStreamReader {
    type Item = io::Result<StreamItem>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Reads as much of `buf` as the file holds at `offset` (short only at end of file).
fn read_up_to_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Positional read of the record at `offset`, validated (key size, bounds, CRC).
pub fn read_record_at(file: &File, offset: u64) -> Result<Record, RecordError> {
    let mut first = vec![0u8; READ_AT_FIRST];
    let n = read_up_to_at(file, &mut first, offset)?;
    first.truncate(n);
    if n < HEADER_SIZE {
        return Err(RecordError::BeyondEof {
            offset,
            file_size: offset + n as u64,
        });
    }
    let mut hbuf = [0u8; HEADER_SIZE];
    hbuf.copy_from_slice(&first[..HEADER_SIZE]);
    let header = RecordHeader::parse(&hbuf);
    header.check_key_size()?;
    let len = header.record_len();
    if len <= n as u64 {
        let (rec, _) = Record::decode(&first)?;
        return Ok(rec);
    }
    if n < READ_AT_FIRST {
        // The short read already hit the end of the file.
        return Err(RecordError::BeyondEof {
            offset,
            file_size: offset + n as u64,
        });
    }
    if len > READ_AT_SIZE_CHECK {
        // Do not trust a (possibly corrupt) header with a big allocation.
        let file_size = file.metadata()?.len();
        if offset.saturating_add(len) > file_size {
            return Err(RecordError::BeyondEof { offset, file_size });
        }
    }
    let ksz = header.ksz as usize;
    let vsz = header.vsz as usize;
    // `first` holds 24 + ksz bytes at least (ksz <= 250 < READ_AT_FIRST - 24).
    let key = first[HEADER_SIZE..HEADER_SIZE + ksz].to_vec();
    let have = n - HEADER_SIZE - ksz;
    let mut value = Vec::with_capacity(vsz);
    value.extend_from_slice(&first[HEADER_SIZE + ksz..]);
    value.resize(vsz, 0);
    let rest_at = offset + n as u64;
    if let Err(e) = file.read_exact_at(&mut value[have..], rest_at) {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            let file_size = file.metadata()?.len();
            return Err(RecordError::BeyondEof { offset, file_size });
        }
        return Err(e.into());
    }
    Record::from_header(&header, key, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::FLAG_CLIENT_COMPRESSED;
    use std::io::Write;

    fn rec(key: &[u8], value: &[u8], flag: u32, ver: i32) -> Record {
        Record {
            ts: 1_700_000_000,
            flag,
            ver,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn scan(path: &Path, start: u64) -> (Vec<StreamItem>, DataStreamReader) {
        let mut r = DataStreamReader::open(path, start).unwrap();
        let mut items = Vec::new();
        while let Some(it) = r.next_record().unwrap() {
            items.push(it);
        }
        (items, r)
    }

    /// The seven records of the §10 corruption-resync test, uncorrupted.
    fn seven_records() -> Vec<u8> {
        let mut buf = Vec::new();
        for i in 0..7 {
            let r = if i == 4 {
                rec(b"key", &[b'x'; 768], FLAG_CLIENT_COMPRESSED, i + 1)
            } else {
                rec(b"key", format!("value_{i}").as_bytes(), 0, i + 1)
            };
            r.encode_into(&mut buf, true);
        }
        buf
    }

    #[test]
    fn clean_file_scan() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = seven_records();
        assert_eq!(bytes.len(), 2560);
        let p = write_file(dir.path(), "000.data", &bytes);
        let (items, r) = scan(&p, 0);
        let offsets: Vec<u32> = items.iter().map(|i| i.offset).collect();
        assert_eq!(offsets, [0, 256, 512, 768, 1024, 2048, 2304]);
        assert_eq!(items[4].padded_size, 1024);
        assert_eq!(items[4].record.value, vec![b'x'; 768]);
        assert!(items.iter().all(|i| i.broken_before == 0));
        assert_eq!(r.last_valid_end(), 2560);
        assert_eq!(r.trailing_garbage(), 0);
        assert_eq!(r.total_broken(), 0);
        // Starting in the middle.
        let (items, _) = scan(&p, 2048);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].record.value, b"value_5");
        // Positional reads agree.
        let f = File::open(&p).unwrap();
        for it in scan(&p, 0).0 {
            assert_eq!(read_record_at(&f, it.offset as u64).unwrap(), it.record);
        }
    }

    #[test]
    fn corruption_resync_vector() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = seven_records();
        bytes[16] = 0; // record 0: ksz
        bytes[256 + 20] = 0; // record 1: vsz
        bytes[512 + 24] = 0; // record 2: key
        bytes[768 + 27] = 0; // record 3: value
        bytes[1024 + 256] = 0; // record 4: value
        let p = write_file(dir.path(), "000.data", &bytes);
        let mut r = DataStreamReader::open(&p, 0).unwrap();
        let first = r.next_record().unwrap().unwrap();
        assert_eq!(first.record.value, b"value_5");
        assert_eq!(first.offset, 2048);
        assert_eq!(first.broken_before, 2048);
        let second = r.next_record().unwrap().unwrap();
        assert_eq!(second.record.value, b"value_6");
        assert_eq!(second.offset, 2304);
        assert_eq!(second.broken_before, 0);
        assert!(r.next_record().unwrap().is_none());
        assert_eq!(r.last_valid_end(), 2560);
        assert_eq!(r.trailing_garbage(), 0);
        assert_eq!(r.total_broken(), 2048);

        let f = File::open(&p).unwrap();
        assert!(matches!(
            read_record_at(&f, 0),
            Err(RecordError::BadKeySize(0))
        ));
        for off in [256, 512, 768, 1024] {
            assert!(matches!(
                read_record_at(&f, off),
                Err(RecordError::BadCrc { .. })
            ));
        }
        assert!(matches!(
            read_record_at(&f, 1280),
            Err(RecordError::BadKeySize(_))
        ));
    }

    #[test]
    fn torn_tail_garbage() {
        let dir = tempfile::tempdir().unwrap();
        for fill in [0xABu8, 0x00, 0x01] {
            let mut bytes = seven_records();
            bytes.extend_from_slice(&[fill; 100]);
            let p = write_file(dir.path(), "000.data", &bytes);
            let (items, r) = scan(&p, 0);
            assert_eq!(items.len(), 7);
            assert_eq!(r.last_valid_end(), 2560);
            assert_eq!(r.trailing_garbage(), 100);
            assert_eq!(r.total_broken(), 100);
        }
    }

    #[test]
    fn torn_tail_half_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = seven_records();
        let big = rec(b"key", &[b'y'; 900], 0, 9).encode_padded();
        assert_eq!(big.len(), 1024);
        bytes.extend_from_slice(&big[..512]);
        let p = write_file(dir.path(), "000.data", &bytes);
        let (items, r) = scan(&p, 0);
        assert_eq!(items.len(), 7);
        assert_eq!(r.last_valid_end(), 2560);
        assert_eq!(r.trailing_garbage(), 512);

        // Half of a small record: the header is there, the value is not.
        let mut bytes = seven_records();
        let small = rec(b"key", b"some value", 0, 9).encode_padded();
        bytes.extend_from_slice(&small[..30]);
        let p = write_file(dir.path(), "000.data", &bytes);
        let (items, r) = scan(&p, 0);
        assert_eq!(items.len(), 7);
        assert_eq!(r.trailing_garbage(), 30);
        let f = File::open(&p).unwrap();
        assert!(matches!(
            read_record_at(&f, 2560),
            Err(RecordError::BeyondEof { .. })
        ));
    }

    #[test]
    fn final_record_without_padding_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = seven_records();
        let last = rec(b"key", b"value_7", 0, 8);
        last.encode_into(&mut bytes, false);
        assert_eq!(bytes.len(), 2560 + 34);
        let p = write_file(dir.path(), "000.data", &bytes);
        let (items, r) = scan(&p, 0);
        assert_eq!(items.len(), 8);
        assert_eq!(items[7].offset, 2560);
        assert_eq!(items[7].padded_size, 256);
        assert_eq!(items[7].record, last);
        assert_eq!(r.last_valid_end(), 2816, "beyond the file: zero-extend");
        assert_eq!(r.file_size(), 2594);
        assert_eq!(r.trailing_garbage(), 0);
        let f = File::open(&p).unwrap();
        assert_eq!(read_record_at(&f, 2560).unwrap(), last);
    }

    #[test]
    fn empty_and_tiny_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = write_file(dir.path(), "000.data", b"");
        let (items, r) = scan(&p, 0);
        assert!(items.is_empty());
        assert_eq!((r.last_valid_end(), r.trailing_garbage()), (0, 0));
        let p = write_file(dir.path(), "001.data", &[7u8; 10]);
        let (items, r) = scan(&p, 0);
        assert!(items.is_empty());
        assert_eq!((r.last_valid_end(), r.trailing_garbage()), (0, 10));
        let f = File::open(&p).unwrap();
        assert!(matches!(
            read_record_at(&f, 0),
            Err(RecordError::BeyondEof { .. })
        ));
        assert!(matches!(
            read_record_at(&f, 1000),
            Err(RecordError::BeyondEof { .. })
        ));
    }

    #[test]
    fn big_records_and_streaming_verification() {
        let dir = tempfile::tempdir().unwrap();
        let big_value: Vec<u8> = (0..10 * 1024 * 1024u32)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        let big = rec(b"big", &big_value, 0, 1);
        let after = rec(b"after", b"next", 0, 1);
        let p = dir.path().join("000.data");
        {
            let mut f = File::create(&p).unwrap();
            f.write_all(&big.encode_padded()).unwrap();
            f.write_all(&after.encode_padded()).unwrap();
        }
        let size = padded_size_u64(24 + 3 + 10_485_760);
        assert_eq!(size, 10_486_016);
        // Both the direct path and the streaming-verification path, with a small buffer.
        for threshold in [STREAM_VERIFY_THRESHOLD, 1000] {
            let mut r = DataStreamReader::open_with_capacity(&p, 0, 4096).unwrap();
            r.verify_threshold = threshold;
            let a = r.next_record().unwrap().unwrap();
            assert_eq!(a.offset, 0);
            assert_eq!(a.padded_size as u64, size);
            assert!(a.record == big);
            let b = r.next_record().unwrap().unwrap();
            assert_eq!(b.offset as u64, size);
            assert_eq!(b.record, after);
            assert!(r.next_record().unwrap().is_none());
        }
        let f = File::open(&p).unwrap();
        assert!(read_record_at(&f, 0).unwrap() == big);
        assert_eq!(read_record_at(&f, size).unwrap(), after);

        // A corrupt byte deep inside the big value is caught by both paths.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[5_000_000] ^= 0x20;
        std::fs::write(&p, &bytes).unwrap();
        for threshold in [STREAM_VERIFY_THRESHOLD, 1000] {
            let mut r = DataStreamReader::open_with_capacity(&p, 0, 4096).unwrap();
            r.verify_threshold = threshold;
            let b = r.next_record().unwrap().unwrap();
            assert_eq!(b.record, after);
            assert_eq!(b.broken_before, size);
        }
        let f = File::open(&p).unwrap();
        assert!(matches!(
            read_record_at(&f, 0),
            Err(RecordError::BadCrc { .. })
        ));
    }

    #[test]
    fn garbage_header_claiming_huge_value() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = seven_records();
        // Record 2 now claims a 3 GiB value: beyond the file, so invalid; no allocation.
        bytes[512 + 20..512 + 24].copy_from_slice(&(3u32 << 30).to_le_bytes());
        let p = write_file(dir.path(), "000.data", &bytes);
        let (items, _) = scan(&p, 0);
        let offsets: Vec<u32> = items.iter().map(|i| i.offset).collect();
        assert_eq!(offsets, [0, 256, 768, 1024, 2048, 2304]);
        assert_eq!(items[2].broken_before, 256);
        let f = File::open(&p).unwrap();
        assert!(matches!(
            read_record_at(&f, 512),
            Err(RecordError::BeyondEof { .. })
        ));
    }

    /// Every data file of the gobeansdb-written fixture scans cleanly, and the final state of
    /// each key per chunk equals the chunk's hint file (positions, versions, value hashes).
    #[test]
    fn gobeansdb_fixture_data_files() {
        use crate::hint::{read_hint_file, HintItem};
        use std::collections::BTreeMap;
        let home = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/fixtures/gobeansdb-2.1-home/home"
        ));
        assert!(home.is_dir(), "fixture home missing: {}", home.display());
        let mut files = 0;
        let mut compressed = 0;
        for bucket in std::fs::read_dir(home).unwrap() {
            let bucket = bucket.unwrap().path();
            for entry in std::fs::read_dir(&bucket).unwrap() {
                let p = entry.unwrap().path();
                let name = p.file_name().unwrap().to_str().unwrap().to_string();
                let Some(chunk) = name.strip_suffix(".data") else {
                    continue;
                };
                files += 1;
                let hint = bucket.join(format!("{chunk}.000.idx.s"));
                let (items, r) = scan(&p, 0);
                if r.file_size() == 0 {
                    // gobeansdb leaves an empty chunk behind when a big record rotates at once.
                    assert!(items.is_empty() && !hint.exists(), "{}", p.display());
                    continue;
                }
                assert!(!items.is_empty(), "{}", p.display());
                assert_eq!(r.total_broken(), 0, "{}", p.display());
                assert_eq!(r.last_valid_end(), r.file_size(), "{}", p.display());
                let f = File::open(&p).unwrap();
                let mut last: BTreeMap<Vec<u8>, HintItem> = BTreeMap::new();
                for it in &items {
                    assert_eq!(read_record_at(&f, it.offset as u64).unwrap(), it.record);
                    if it.record.flag & crate::record::FLAG_COMPRESSED != 0 {
                        compressed += 1;
                        let (flag, v) = it.record.client_view();
                        assert!(matches!(v, std::borrow::Cow::Owned(_)), "decodes");
                        assert_eq!(flag & crate::record::FLAG_COMPRESSED, 0);
                    }
                    let hi = HintItem::from_record(&it.record, 0, it.offset);
                    last.insert(it.record.key.clone(), hi);
                }
                let hf = read_hint_file(&hint).unwrap();
                assert_eq!(hf.datasize as u64, r.file_size(), "{}", hint.display());
                let from_hint: BTreeMap<Vec<u8>, HintItem> = hf
                    .items
                    .iter()
                    .map(|h| (h.key.clone(), h.clone()))
                    .collect();
                assert_eq!(from_hint, last, "{}", hint.display());
            }
        }
        assert!(files >= 30, "found only {files} data files");
        assert!(compressed > 0, "fixture has server-compressed values");
    }
}
