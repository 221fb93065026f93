//! Data record format (spec §4.2).
//!
//! A record is a 24-byte little-endian header (`crc ts flag ver ksz vsz`), the key, the stored
//! (possibly server-compressed) value and zero padding up to the next multiple of 256. The CRC
//! covers header bytes 4..24, the key and the stored value.

use std::borrow::Cow;

use thiserror::Error;

use crate::compress::qlz_decompress;

/// Size of the fixed record header.
pub const HEADER_SIZE: usize = 24;
/// Records start at multiples of this and are zero-padded to it.
pub const ALIGN: usize = 256;
/// Value compressed by the server (QuickLZ); cleared before any reply.
pub const FLAG_COMPRESSED: u32 = 0x10000;
/// Value compressed by the client; the server never compresses it.
pub const FLAG_CLIENT_COMPRESSED: u32 = 0x10;
/// Counter written by `incr`.
pub const FLAG_INCR: u32 = 0x204;
/// Largest key a valid record may carry.
pub const MAX_KEY_LEN: usize = 250;

/// On-disk size of a record of `record_len = 24 + ksz + vsz` bytes.
pub fn padded_size(record_len: usize) -> usize {
    record_len.div_ceil(ALIGN) * ALIGN
}

/// `padded_size` in u64 arithmetic, for sizes computed from untrusted headers.
pub fn padded_size_u64(record_len: u64) -> u64 {
    record_len.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// Why a byte range is not a valid record.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("bad key size {0} (must be 1..=250)")]
    BadKeySize(u32),
    #[error("truncated record: need {need} bytes, have {have}")]
    Truncated { need: u64, have: u64 },
    #[error("crc mismatch: header says {expected:#010x}, computed {actual:#010x}")]
    BadCrc { expected: u32, actual: u32 },
    #[error("record at offset {offset} extends beyond end of file ({file_size} bytes)")]
    BeyondEof { offset: u64, file_size: u64 },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// The decoded 24-byte header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub crc: u32,
    pub ts: u32,
    pub flag: u32,
    pub ver: i32,
    pub ksz: u32,
    pub vsz: u32,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl RecordHeader {
    pub fn parse(buf: &[u8; HEADER_SIZE]) -> Self {
        RecordHeader {
            crc: le_u32(buf, 0),
            ts: le_u32(buf, 4),
            flag: le_u32(buf, 8),
            ver: le_u32(buf, 12) as i32,
            ksz: le_u32(buf, 16),
            vsz: le_u32(buf, 20),
        }
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut h = [0u8; HEADER_SIZE];
        h[0..4].copy_from_slice(&self.crc.to_le_bytes());
        h[4..8].copy_from_slice(&self.ts.to_le_bytes());
        h[8..12].copy_from_slice(&self.flag.to_le_bytes());
        h[12..16].copy_from_slice(&self.ver.to_le_bytes());
        h[16..20].copy_from_slice(&self.ksz.to_le_bytes());
        h[20..24].copy_from_slice(&self.vsz.to_le_bytes());
        h
    }

    /// `1 <= ksz <= 250`; the only structural check a header allows on its own.
    pub fn check_key_size(&self) -> Result<(), RecordError> {
        if self.ksz == 0 || self.ksz as usize > MAX_KEY_LEN {
            Err(RecordError::BadKeySize(self.ksz))
        } else {
            Ok(())
        }
    }

    /// Unpadded record length `24 + ksz + vsz` (u64: the header may be garbage).
    pub fn record_len(&self) -> u64 {
        HEADER_SIZE as u64 + self.ksz as u64 + self.vsz as u64
    }

    /// On-disk (padded) length.
    pub fn padded_len(&self) -> u64 {
        padded_size_u64(self.record_len())
    }

    /// CRC that a record with this header (ignoring `crc`), key and value must carry.
    pub fn compute_crc(&self, key: &[u8], value: &[u8]) -> u32 {
        let h = self.encode();
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&h[4..]);
        hasher.update(key);
        hasher.update(value);
        hasher.finalize()
    }
}

/// A data record with its value as stored on disk (compressed iff `flag & FLAG_COMPRESSED`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub ts: u32,
    pub flag: u32,
    pub ver: i32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Record {
    /// Header with sizes taken from `key`/`value` and the CRC filled in.
    pub fn header(&self) -> RecordHeader {
        let mut h = RecordHeader {
            crc: 0,
            ts: self.ts,
            flag: self.flag,
            ver: self.ver,
            ksz: self.key.len() as u32,
            vsz: self.value.len() as u32,
        };
        h.crc = h.compute_crc(&self.key, &self.value);
        h
    }

    pub fn crc(&self) -> u32 {
        self.header().crc
    }

    /// `24 + ksz + vsz`.
    pub fn record_len(&self) -> usize {
        HEADER_SIZE + self.key.len() + self.value.len()
    }

    /// Bytes the record takes in a data file (padded to 256).
    pub fn on_disk_size(&self) -> usize {
        padded_size(self.record_len())
    }

    /// Appends header + key + value (+ zero padding when `pad`) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>, pad: bool) {
        let len = self.record_len();
        let total = if pad { padded_size(len) } else { len };
        out.reserve(total);
        out.extend_from_slice(&self.header().encode());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&self.value);
        if pad {
            out.resize(out.len() + (total - len), 0);
        }
    }

    /// The exact bytes written to a data file.
    pub fn encode_padded(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out, true);
        out
    }

    /// Decodes the record at the start of `buf` and returns it with its padded size. The padding
    /// itself need not be present (a final record may lack it).
    pub fn decode(buf: &[u8]) -> Result<(Record, usize), RecordError> {
        let hdr: &[u8; HEADER_SIZE] = buf
            .get(..HEADER_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or(RecordError::Truncated {
                need: HEADER_SIZE as u64,
                have: buf.len() as u64,
            })?;
        let header = RecordHeader::parse(hdr);
        header.check_key_size()?;
        let need = header.record_len();
        if (buf.len() as u64) < need {
            return Err(RecordError::Truncated {
                need,
                have: buf.len() as u64,
            });
        }
        let kend = HEADER_SIZE + header.ksz as usize;
        let vend = kend + header.vsz as usize;
        let rec = Record::from_header(
            &header,
            buf[HEADER_SIZE..kend].to_vec(),
            buf[kend..vend].to_vec(),
        )?;
        Ok((rec, padded_size(vend)))
    }

    /// Builds a record from a parsed header and its key/value, verifying sizes and CRC.
    pub fn from_header(
        header: &RecordHeader,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<Record, RecordError> {
        header.check_key_size()?;
        let need = header.ksz as u64 + header.vsz as u64;
        let have = key.len() as u64 + value.len() as u64;
        if key.len() as u64 != header.ksz as u64 || value.len() as u64 != header.vsz as u64 {
            return Err(RecordError::Truncated {
                need: need + HEADER_SIZE as u64,
                have: have + HEADER_SIZE as u64,
            });
        }
        let actual = header.compute_crc(&key, &value);
        if actual != header.crc {
            return Err(RecordError::BadCrc {
                expected: header.crc,
                actual,
            });
        }
        Ok(Record {
            ts: header.ts,
            flag: header.flag,
            ver: header.ver,
            key,
            value,
        })
    }

    /// Flag and value as a client sees them (§3.9): a server-compressed value is decompressed
    /// and the compression bit cleared; if it does not decode, the raw bytes are returned with
    /// the flag unchanged (gobeansdb behaviour).
    pub fn client_view(&self) -> (u32, Cow<'_, [u8]>) {
        if self.flag & FLAG_COMPRESSED != 0 {
            if let Ok(v) = qlz_decompress(&self.value) {
                return (self.flag & !FLAG_COMPRESSED, Cow::Owned(v));
            }
        }
        (self.flag, Cow::Borrowed(&self.value))
    }

    /// Like [`Record::client_view`], consuming the record so an uncompressed value is moved,
    /// not copied.
    pub fn into_client_view(self) -> (u32, Vec<u8>) {
        if self.flag & FLAG_COMPRESSED != 0 {
            if let Ok(v) = qlz_decompress(&self.value) {
                return (self.flag & !FLAG_COMPRESSED, v);
            }
        }
        (self.flag, self.value)
    }

    /// The `@@khash` reply body (§3.6): header + key + value with the value decompressed, the
    /// compression bit cleared, the CRC recomputed and no padding.
    pub fn raw_for_at_at(&self) -> Vec<u8> {
        let (flag, value) = self.client_view();
        let plain = Record {
            ts: self.ts,
            flag,
            ver: self.ver,
            key: self.key.clone(),
            value: value.into_owned(),
        };
        let mut out = Vec::new();
        plain.encode_into(&mut out, false);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::qlz_compress;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn crc_check_value() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn padding_sizes() {
        assert_eq!(padded_size(0), 0);
        assert_eq!(padded_size(1), 256);
        assert_eq!(padded_size(24 + 1), 256);
        assert_eq!(padded_size(256), 256);
        assert_eq!(padded_size(257), 512);
        assert_eq!(padded_size(512), 512);
        assert_eq!(padded_size(24 + 8 + 10_485_760), 10_486_016);
        assert_eq!(padded_size_u64(257), 512);
        assert_eq!(padded_size_u64(24 + 250 + u32::MAX as u64), 4_294_967_808);
    }

    #[test]
    fn hello_world_bytes() {
        let rec = Record {
            ts: 1_700_000_000,
            flag: 0,
            ver: 1,
            key: b"hello".to_vec(),
            value: b"world".to_vec(),
        };
        let mut want = hex(
            "3b 0a 91 a0 00 f1 53 65 00 00 00 00 01 00 00 00 05 00 00 00 05 00 00 00 \
             68 65 6c 6c 6f 77 6f 72 6c 64",
        );
        want.resize(256, 0);
        assert_eq!(rec.crc(), 0xa091_0a3b);
        assert_eq!(rec.encode_padded(), want);
        assert_eq!(rec.on_disk_size(), 256);
        let (dec, padded) = Record::decode(&want).unwrap();
        assert_eq!(dec, rec);
        assert_eq!(padded, 256);
        // Padding is not required for decoding.
        let (dec, padded) = Record::decode(&want[..34]).unwrap();
        assert_eq!(dec, rec);
        assert_eq!(padded, 256);
        let mut unpadded = Vec::new();
        rec.encode_into(&mut unpadded, false);
        assert_eq!(unpadded, &want[..34]);
        // Plain record: @@ form is the unpadded record itself.
        assert_eq!(rec.raw_for_at_at(), &want[..34]);
        let hdr = RecordHeader::parse(want[..24].try_into().unwrap());
        assert_eq!(
            hdr,
            RecordHeader {
                crc: 0xa0910a3b,
                ts: 0x6553f100,
                flag: 0,
                ver: 1,
                ksz: 5,
                vsz: 5
            }
        );
        assert_eq!(&hdr.encode()[..], &want[..24]);
    }

    #[test]
    fn tombstone_bytes() {
        let rec = Record {
            ts: 1_700_000_001,
            flag: 0,
            ver: -2,
            key: b"hello".to_vec(),
            value: Vec::new(),
        };
        let mut want = hex(
            "32 b2 17 00 01 f1 53 65 00 00 00 00 fe ff ff ff 05 00 00 00 00 00 00 00 \
             68 65 6c 6c 6f",
        );
        want.resize(256, 0);
        assert_eq!(rec.crc(), 0x0017_b232);
        assert_eq!(rec.encode_padded(), want);
        let (dec, padded) = Record::decode(&want).unwrap();
        assert_eq!(dec, rec);
        assert_eq!(padded, 256);
    }

    #[test]
    fn compressed_example_bytes() {
        let key = vec![b'k'; 170];
        let plain = vec![b'v'; 63];
        let stored = qlz_compress(&plain);
        assert_eq!(
            stored,
            hex("4d 12 3f 08 00 00 80 76 76 76 83 9a 01 00 76 76 76 76")
        );
        let rec = Record {
            ts: 1_700_000_000,
            flag: FLAG_COMPRESSED,
            ver: 1,
            key: key.clone(),
            value: stored.clone(),
        };
        let bytes = rec.encode_padded();
        assert_eq!(bytes.len(), 256);
        assert_eq!(
            &bytes[..24],
            &hex("ef bf 83 d6 00 f1 53 65 00 00 01 00 01 00 00 00 aa 00 00 00 12 00 00 00")[..]
        );
        assert_eq!(&bytes[24..194], &key[..]);
        assert_eq!(&bytes[194..212], &stored[..]);
        assert!(bytes[212..].iter().all(|&b| b == 0));
        let (dec, padded) = Record::decode(&bytes).unwrap();
        assert_eq!(dec, rec);
        assert_eq!(padded, 256);

        // Client view and @@ form: decompressed, bit cleared, CRC recomputed, no padding.
        let (flag, v) = dec.client_view();
        assert_eq!(flag, 0);
        assert_eq!(&v[..], &plain[..]);
        let raw = dec.raw_for_at_at();
        assert_eq!(raw.len(), 24 + 170 + 63);
        let (raw_rec, raw_padded) = Record::decode(&raw).unwrap();
        assert_eq!(raw_padded, 512);
        assert_eq!(raw_rec.flag, 0);
        assert_eq!(raw_rec.ver, 1);
        assert_eq!(raw_rec.ts, 1_700_000_000);
        assert_eq!(raw_rec.key, key);
        assert_eq!(raw_rec.value, plain);
    }

    #[test]
    fn undecodable_compressed_value_is_returned_raw() {
        let rec = Record {
            ts: 5,
            flag: FLAG_COMPRESSED | 3,
            ver: 7,
            key: b"k".to_vec(),
            value: b"not quicklz".to_vec(),
        };
        let (flag, v) = rec.client_view();
        assert_eq!(flag, FLAG_COMPRESSED | 3);
        assert_eq!(&v[..], b"not quicklz");
        let mut want = Vec::new();
        rec.encode_into(&mut want, false);
        assert_eq!(rec.raw_for_at_at(), want);
    }

    #[test]
    fn decode_rejects_bad_records() {
        let rec = Record {
            ts: 1,
            flag: 0,
            ver: 1,
            key: b"key".to_vec(),
            value: b"value".to_vec(),
        };
        let good = rec.encode_padded();

        assert!(matches!(
            Record::decode(&good[..10]),
            Err(RecordError::Truncated { need: 24, have: 10 })
        ));
        assert!(matches!(
            Record::decode(&good[..31]),
            Err(RecordError::Truncated { need: 32, have: 31 })
        ));

        let mut b = good.clone();
        b[16] = 0; // ksz = 0
        assert!(matches!(
            Record::decode(&b),
            Err(RecordError::BadKeySize(0))
        ));
        let mut b = good.clone();
        b[16] = 251;
        assert!(matches!(
            Record::decode(&b),
            Err(RecordError::BadKeySize(251))
        ));
        let mut b = good.clone();
        b[16..20].copy_from_slice(&0x7878_7878u32.to_le_bytes());
        assert!(matches!(
            Record::decode(&b),
            Err(RecordError::BadKeySize(_))
        ));

        let mut b = good.clone();
        b[28] ^= 1; // value byte
        assert!(matches!(
            Record::decode(&b),
            Err(RecordError::BadCrc { .. })
        ));
        let mut b = good.clone();
        b[4] ^= 1; // ts is covered too
        assert!(matches!(
            Record::decode(&b),
            Err(RecordError::BadCrc { .. })
        ));
        let mut b = good.clone();
        b[0] ^= 1; // stored crc
        assert!(matches!(
            Record::decode(&b),
            Err(RecordError::BadCrc { .. })
        ));

        // A huge vsz in a small buffer is a truncation, not an allocation.
        let mut b = good.clone();
        b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Record::decode(&b),
            Err(RecordError::Truncated { .. })
        ));
    }

    #[test]
    fn max_key_and_sizes() {
        let rec = Record {
            ts: 9,
            flag: FLAG_INCR,
            ver: i32::MAX,
            key: vec![b'a'; MAX_KEY_LEN],
            value: vec![1u8; 1000],
        };
        let bytes = rec.encode_padded();
        assert_eq!(bytes.len(), padded_size(24 + 250 + 1000));
        assert_eq!(bytes.len(), rec.on_disk_size());
        let (dec, padded) = Record::decode(&bytes).unwrap();
        assert_eq!(dec, rec);
        assert_eq!(padded, bytes.len());
    }
}
