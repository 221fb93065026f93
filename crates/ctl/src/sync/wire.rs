//! Parsers for the node replies sync relies on: merkle listings (tools.md §1.2), `@@` raw
//! records (§1.4) and `?key` meta lines. Pure functions; every malformed input is an error.

use beansdb_store::record::{RecordHeader, HEADER_SIZE};

use super::decide::State;

/// One key line: the node's view of a key in the merkle tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyLine {
    pub khash: u64,
    pub vhash: u16,
    /// Negative for a tombstone.
    pub ver: i32,
}

/// A parsed listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    /// `(hash, live count)` of each child digit 0..16.
    Dir([(u16, u32); 16]),
    /// Key lines whose khash starts with the listed path.
    Keys(Vec<KeyLine>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    /// A C-beansdb node (key-name listings).
    #[error("unsupported listing format")]
    Unsupported,
    #[error("malformed listing: {0}")]
    Malformed(String),
}

enum Line {
    Dir(usize, u16, u32),
    Key(KeyLine),
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_line(line: &str) -> Option<Line> {
    let mut it = line.split(' ');
    let (a, b, c) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || !is_digits(b) {
        return None;
    }
    if let Some(d) = a.strip_suffix('/') {
        if d.len() != 1 || !is_lower_hex(d) || !is_digits(c) {
            return None;
        }
        let digit = usize::from_str_radix(d, 16).ok()?;
        return Some(Line::Dir(digit, b.parse().ok()?, c.parse().ok()?));
    }
    let unsigned = c.strip_prefix('-').unwrap_or(c);
    if a.len() != 16 || !is_lower_hex(a) || !is_digits(unsigned) {
        return None;
    }
    Some(Line::Key(KeyLine {
        khash: u64::from_str_radix(a, 16).ok()?,
        vhash: b.parse().ok()?,
        ver: c.parse().ok()?,
    }))
}

/// Parses the body of `get @<path>`; `None` (a miss) and an empty body are an empty key list.
pub fn parse_listing(body: Option<&[u8]>, path: &str) -> Result<Listing, ListingError> {
    let body = body.unwrap_or_default();
    // Lossy: a non-UTF-8 line simply fails to parse and is classified below.
    let text = String::from_utf8_lossy(body);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let mut dirs: Vec<(usize, u16, u32)> = Vec::new();
    let mut keys: Vec<KeyLine> = Vec::new();
    for line in &lines {
        match parse_line(line) {
            Some(Line::Dir(d, h, c)) => dirs.push((d, h, c)),
            Some(Line::Key(k)) => keys.push(k),
            None => {
                let first = line.split(' ').next().unwrap_or_default();
                let dir_like = first.len() == 2 && first.ends_with('/');
                let key_like = first.len() == 16 && first.bytes().all(|b| b.is_ascii_hexdigit());
                return Err(if dir_like || key_like {
                    ListingError::Malformed(format!("bad line {:?}", preview(line)))
                } else {
                    ListingError::Unsupported
                });
            }
        }
    }
    if !dirs.is_empty() {
        if !keys.is_empty() || dirs.len() != 16 {
            return Err(ListingError::Malformed(format!(
                "{} dir lines and {} key lines",
                dirs.len(),
                keys.len()
            )));
        }
        let mut out = [(0u16, 0u32); 16];
        let mut seen = [false; 16];
        for (d, h, c) in dirs {
            if seen[d] {
                return Err(ListingError::Malformed(format!("digit {d:x} listed twice")));
            }
            seen[d] = true;
            out[d] = (h, c);
        }
        return Ok(Listing::Dir(out));
    }
    keys.retain(|k| format!("{:016x}", k.khash).starts_with(path));
    Ok(Listing::Keys(keys))
}

fn preview(s: &str) -> &str {
    let mut end = s.len().min(60);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A validated `@@` record: the key, the client flag and the uncompressed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub key: Vec<u8>,
    pub flag: u32,
    pub value: Vec<u8>,
    /// On-disk version: informational only, never used for decisions.
    pub disk_ver: i32,
    /// Header timestamp (unix seconds) of the on-disk record.
    pub ts: u32,
}

/// Parses and checks a `@@<khash>` reply: exact length, CRC, `khash(key)`, and the value
/// hash when `expect_vhash` is given (live copies).
pub fn parse_raw(body: &[u8], khash: u64, expect_vhash: Option<u16>) -> Result<RawRecord, String> {
    let hdr: &[u8; HEADER_SIZE] = body
        .get(..HEADER_SIZE)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| format!("record of {} bytes is shorter than its header", body.len()))?;
    let h = RecordHeader::parse(hdr);
    let want = h.record_len();
    if body.len() as u64 != want {
        return Err(format!(
            "record length {} but header says {want}",
            body.len()
        ));
    }
    h.check_key_size().map_err(|e| e.to_string())?;
    let kend = HEADER_SIZE + h.ksz as usize;
    let (key, value) = (&body[HEADER_SIZE..kend], &body[kend..]);
    let crc = h.compute_crc(key, value);
    if crc != h.crc {
        return Err(format!(
            "crc mismatch: header {:#010x}, computed {crc:#010x}",
            h.crc
        ));
    }
    let kh = beansdb_hash::keyhash(key);
    if kh != khash {
        return Err(format!("key hashes to {kh:016x}, not {khash:016x}"));
    }
    if let Some(vh) = expect_vhash {
        let got = beansdb_hash::vhash(value);
        if got != vh {
            return Err(format!("value hash {got} but listed {vh}"));
        }
    }
    Ok(RawRecord {
        key: key.to_vec(),
        flag: h.flag,
        value: value.to_vec(),
        disk_ver: h.ver,
        ts: h.ts,
    })
}

/// Parses a `?key` body: `ver vhash flag len ts` (or `ver vhash flag ts`); a miss is Absent.
pub fn parse_meta(body: Option<&[u8]>) -> Result<State, String> {
    let Some(body) = body else {
        return Ok(State::Absent);
    };
    let text = std::str::from_utf8(body).map_err(|_| "meta reply is not UTF-8".to_string())?;
    let f: Vec<&str> = text.trim_end().split(' ').collect();
    if f.len() != 4 && f.len() != 5 {
        return Err(format!(
            "meta reply {:?} has {} fields",
            preview(text),
            f.len()
        ));
    }
    let bad = || format!("bad meta reply {:?}", preview(text));
    let ver: i32 = f[0].parse().map_err(|_| bad())?;
    let vhash: u16 = f[1].parse().map_err(|_| bad())?;
    let flag: u32 = f[2].parse().map_err(|_| bad())?;
    if f.len() == 5 {
        f[3].parse::<u64>().map_err(|_| bad())?;
    }
    let ts: u32 = f[f.len() - 1].parse().map_err(|_| bad())?;
    Ok(match ver {
        v if v > 0 => State::Live {
            ver,
            vhash,
            flag,
            ts,
        },
        v if v < 0 => State::Tomb { ver, ts },
        // Version 0 never exists on a node; treat it as absent rather than guess.
        _ => State::Absent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use beansdb_store::record::Record;

    fn dir_body(skip: Option<usize>) -> String {
        let mut s = String::new();
        for d in (0..16).rev() {
            if Some(d) != skip {
                s.push_str(&format!("{d:x}/ {} {}\n", d * 10, d));
            }
        }
        s
    }

    #[test]
    fn dir_listing_in_any_order() {
        match parse_listing(Some(dir_body(None).as_bytes()), "") {
            Ok(Listing::Dir(d)) => {
                assert_eq!(d[3], (30, 3));
                assert_eq!(d[15], (150, 15));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_listing_filtered_by_path() {
        let body = "4f9f2cab248bfa47 60024 1\n4a00000000000000 0 -3\n";
        match parse_listing(Some(body.as_bytes()), "4f") {
            Ok(Listing::Keys(k)) => assert_eq!(
                k,
                vec![KeyLine {
                    khash: 0x4f9f2cab248bfa47,
                    vhash: 60024,
                    ver: 1
                }]
            ),
            other => panic!("{other:?}"),
        }
        match parse_listing(Some(body.as_bytes()), "4") {
            Ok(Listing::Keys(k)) => assert_eq!(k[1].ver, -3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_and_miss_are_empty_keys() {
        assert_eq!(parse_listing(None, "3"), Ok(Listing::Keys(vec![])));
        assert_eq!(parse_listing(Some(b""), "3"), Ok(Listing::Keys(vec![])));
    }

    #[test]
    fn malformed_listings() {
        let fifteen = dir_body(Some(4));
        let mixed = format!("{}4f9f2cab248bfa47 1 1\n", dir_body(None));
        let twice = dir_body(Some(4)) + "5/ 1 1\n";
        for bad in [
            fifteen.as_str(),
            mixed.as_str(),
            twice.as_str(),
            "4f9f2cab248bfa47 1\n",
            "4f9f2cab248bfa47 70000 1\n",
            "4F9F2CAB248BFA47 1 1\n",
            "4f9f2cab248bfa47 1 1 1\n",
            "g/ 1 1\n",
            "4/ -1 1\n",
        ] {
            assert!(
                matches!(
                    parse_listing(Some(bad.as_bytes()), ""),
                    Err(ListingError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn c_beansdb_key_name_listing_is_unsupported() {
        assert_eq!(
            parse_listing(Some(b"user:1 1234 3\n"), ""),
            Err(ListingError::Unsupported)
        );
    }

    fn record(key: &[u8], value: &[u8], ver: i32) -> Vec<u8> {
        let r = Record {
            ts: 1_700_000_000,
            flag: 7,
            ver,
            key: key.to_vec(),
            value: value.to_vec(),
        };
        let mut out = Vec::new();
        r.encode_into(&mut out, false);
        out
    }

    #[test]
    fn raw_record_ok() {
        let body = record(b"hello", b"world", 3);
        let kh = beansdb_hash::keyhash(b"hello");
        let r = parse_raw(&body, kh, Some(60024)).expect("valid");
        assert_eq!(
            (r.key.as_slice(), r.flag, r.value.as_slice(), r.disk_ver),
            (&b"hello"[..], 7, &b"world"[..], 3)
        );
        // A tombstone: empty value, no vhash check.
        let t = record(b"hello", b"", -4);
        assert_eq!(parse_raw(&t, kh, None).expect("tomb").disk_ver, -4);
    }

    #[test]
    fn raw_record_errors() {
        let kh = beansdb_hash::keyhash(b"hello");
        let mut body = record(b"hello", b"world", 3);
        let last = body.len() - 1;
        body[last] ^= 1;
        assert!(parse_raw(&body, kh, None).unwrap_err().contains("crc"));
        let mut padded = record(b"hello", b"world", 3);
        padded.push(0);
        assert!(parse_raw(&padded, kh, None).unwrap_err().contains("length"));
        assert!(parse_raw(&padded[..10], kh, None).is_err());
        let ok = record(b"hello", b"world", 3);
        assert!(parse_raw(&ok, kh ^ 1, None).unwrap_err().contains("hashes"));
        assert!(parse_raw(&ok, kh, Some(1))
            .unwrap_err()
            .contains("value hash"));
    }

    #[test]
    fn meta_forms() {
        assert_eq!(
            parse_meta(Some(b"1 60024 0 5 1700000000")),
            Ok(State::Live {
                ver: 1,
                vhash: 60024,
                flag: 0,
                ts: 1_700_000_000
            })
        );
        assert_eq!(
            parse_meta(Some(b"-5 0 0 1700000001")),
            Ok(State::Tomb {
                ver: -5,
                ts: 1_700_000_001
            })
        );
        assert_eq!(parse_meta(None), Ok(State::Absent));
        assert!(parse_meta(Some(b"1 2 3")).is_err());
        assert!(parse_meta(Some(b"x 2 3 4 5")).is_err());
    }
}
