//! Server-side value compression (spec §4.3): the content sniffer, the compression decision and
//! QuickLZ level 3 (via the `quicklz` crate, byte-identical with QuickLZ 1.4.1 level 3).

use std::collections::HashSet;
use std::io::Cursor;

use thiserror::Error;

use crate::record::{FLAG_CLIENT_COMPRESSED, FLAG_COMPRESSED, HEADER_SIZE};

/// The sniffer looks at no more than this many bytes (as Go's `DetectContentType`).
const SNIFF_LEN: usize = 512;
/// The compression decision looks at no more than this prefix of the value.
pub const SAMPLE_LEN: usize = 10240;
/// Values that do not exceed this record size are never compressed.
const MIN_RECORD_TO_COMPRESS: usize = 256;
/// A stored QuickLZ stream claiming more than this is treated as corrupt (avoids huge
/// allocations from garbage headers; real values are limited by `body_max`, 50 MiB by default).
pub const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Why a stored value could not be decompressed.
#[derive(Debug, Error)]
pub enum CompressError {
    #[error("quicklz: stream too short for its header ({0} bytes)")]
    TooShort(usize),
    #[error("quicklz: header total {header_total} != stored length {stored}")]
    SizeMismatch { header_total: u64, stored: u64 },
    #[error("quicklz: decompressed size {0} too large")]
    TooLarge(u64),
    #[error("quicklz: {0}")]
    Corrupt(String),
}

// ------------------------------------------------------------------------------------------------
// Content sniffing: a port of the Go 1.13 `net/http.DetectContentType` algorithm (WHATWG MIME
// sniffing subset). Only exact string equality of the result with `not_compress` keys matters.

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const OCTET_STREAM: &str = "application/octet-stream";

/// Bytes Go treats as whitespace before a tag or `<?xml`.
fn is_ws(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' ')
}

/// Bytes that terminate an HTML tag name.
fn is_tag_terminator(b: u8) -> bool {
    b == b' ' || b == b'>'
}

enum Sig {
    /// Case-insensitive HTML tag after leading whitespace, followed by ' ' or '>'.
    Html(&'static [u8]),
    /// `data` starts with the bytes.
    Exact(&'static [u8], &'static str),
    /// `data[i] & mask[i] == pat[i]` for every i; optionally after leading whitespace.
    Masked {
        mask: &'static [u8],
        pat: &'static [u8],
        skip_ws: bool,
        ct: &'static str,
    },
    /// ISO base media file with an `mp4` brand.
    Mp4,
    /// No binary bytes after leading whitespace.
    Text,
}

const fn masked(mask: &'static [u8], pat: &'static [u8], ct: &'static str) -> Sig {
    Sig::Masked {
        mask,
        pat,
        skip_ws: false,
        ct,
    }
}

/// Signatures in Go's order; the first match wins.
static SIGNATURES: &[Sig] = &[
    Sig::Html(b"<!DOCTYPE HTML"),
    Sig::Html(b"<HTML"),
    Sig::Html(b"<HEAD"),
    Sig::Html(b"<SCRIPT"),
    Sig::Html(b"<IFRAME"),
    Sig::Html(b"<H1"),
    Sig::Html(b"<DIV"),
    Sig::Html(b"<FONT"),
    Sig::Html(b"<TABLE"),
    Sig::Html(b"<A"),
    Sig::Html(b"<STYLE"),
    Sig::Html(b"<TITLE"),
    Sig::Html(b"<B"),
    Sig::Html(b"<BODY"),
    Sig::Html(b"<BR"),
    Sig::Html(b"<P"),
    Sig::Html(b"<!--"),
    Sig::Masked {
        mask: b"\xFF\xFF\xFF\xFF\xFF",
        pat: b"<?xml",
        skip_ws: true,
        ct: "text/xml; charset=utf-8",
    },
    Sig::Exact(b"%PDF-", "application/pdf"),
    Sig::Exact(b"%!PS-Adobe-", "application/postscript"),
    // Byte order marks.
    masked(
        b"\xFF\xFF\x00\x00",
        b"\xFE\xFF\x00\x00",
        "text/plain; charset=utf-16be",
    ),
    masked(
        b"\xFF\xFF\x00\x00",
        b"\xFF\xFE\x00\x00",
        "text/plain; charset=utf-16le",
    ),
    masked(
        b"\xFF\xFF\xFF\x00",
        b"\xEF\xBB\xBF\x00",
        "text/plain; charset=utf-8",
    ),
    // Images.
    Sig::Exact(b"\x00\x00\x01\x00", "image/x-icon"),
    Sig::Exact(b"\x00\x00\x02\x00", "image/x-icon"),
    Sig::Exact(b"BM", "image/bmp"),
    Sig::Exact(b"GIF87a", "image/gif"),
    Sig::Exact(b"GIF89a", "image/gif"),
    masked(
        b"\xFF\xFF\xFF\xFF\x00\x00\x00\x00\xFF\xFF\xFF\xFF\xFF\xFF",
        b"RIFF\x00\x00\x00\x00WEBPVP",
        "image/webp",
    ),
    Sig::Exact(b"\x89PNG\x0D\x0A\x1A\x0A", "image/png"),
    Sig::Exact(b"\xFF\xD8\xFF", "image/jpeg"),
    // Audio and video.
    masked(b"\xFF\xFF\xFF\xFF", b".snd", "audio/basic"),
    masked(
        b"\xFF\xFF\xFF\xFF\x00\x00\x00\x00\xFF\xFF\xFF\xFF",
        b"FORM\x00\x00\x00\x00AIFF",
        "audio/aiff",
    ),
    masked(b"\xFF\xFF\xFF", b"ID3", "audio/mpeg"),
    masked(b"\xFF\xFF\xFF\xFF\xFF", b"OggS\x00", "application/ogg"),
    masked(
        b"\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF",
        b"MThd\x00\x00\x00\x06",
        "audio/midi",
    ),
    masked(
        b"\xFF\xFF\xFF\xFF\x00\x00\x00\x00\xFF\xFF\xFF\xFF",
        b"RIFF\x00\x00\x00\x00AVI ",
        "video/avi",
    ),
    masked(
        b"\xFF\xFF\xFF\xFF\x00\x00\x00\x00\xFF\xFF\xFF\xFF",
        b"RIFF\x00\x00\x00\x00WAVE",
        "audio/wave",
    ),
    Sig::Mp4,
    Sig::Exact(b"\x1A\x45\xDF\xA3", "video/webm"),
    // Fonts. Embedded OpenType: 34 arbitrary bytes, then "LP".
    masked(
        b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
          \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xFF\xFF",
        b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
          \x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00LP",
        "application/vnd.ms-fontobject",
    ),
    Sig::Exact(b"\x00\x01\x00\x00", "font/ttf"),
    Sig::Exact(b"OTTO", "font/otf"),
    Sig::Exact(b"ttcf", "font/collection"),
    Sig::Exact(b"wOFF", "font/woff"),
    Sig::Exact(b"wOF2", "font/woff2"),
    // Archives.
    Sig::Exact(b"\x1F\x8B\x08", "application/x-gzip"),
    Sig::Exact(b"PK\x03\x04", "application/zip"),
    Sig::Exact(b"Rar!\x1A\x07\x00", "application/x-rar-compressed"),
    Sig::Exact(b"Rar!\x1A\x07\x01\x00", "application/x-rar-compressed"),
    Sig::Exact(b"\x00\x61\x73\x6D", "application/wasm"),
    Sig::Text,
];

fn match_html(data: &[u8], tag: &[u8]) -> bool {
    if data.len() < tag.len() + 1 {
        return false;
    }
    let name_ok = tag.iter().zip(data).all(|(&t, &d)| {
        // Upper-case letters in the pattern match either case.
        let d = if t.is_ascii_uppercase() { d & 0xDF } else { d };
        t == d
    });
    name_ok && is_tag_terminator(data[tag.len()])
}

fn match_mp4(data: &[u8]) -> bool {
    if data.len() < 12 {
        return false;
    }
    let box_size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    // `& 3`: a multiple of 4 (`is_multiple_of` is newer than the MSRV).
    if box_size & 3 != 0 || data.len() < box_size {
        return false;
    }
    if &data[4..8] != b"ftyp" {
        return false;
    }
    // Brands are 4-byte words after the major brand; word 12..16 is the minor version.
    (8..box_size)
        .step_by(4)
        .filter(|&st| st != 12)
        .any(|st| data.get(st..st + 3) == Some(b"mp4"))
}

fn is_binary_byte(b: u8) -> bool {
    b <= 0x08 || b == 0x0B || (0x0E..=0x1A).contains(&b) || (0x1C..=0x1F).contains(&b)
}

/// MIME type of `data` as Go 1.13's `http.DetectContentType` reports it (first 512 bytes).
pub fn sniff_content_type(data: &[u8]) -> &'static str {
    let data = &data[..data.len().min(SNIFF_LEN)];
    let first_non_ws = data.iter().position(|&b| !is_ws(b)).unwrap_or(data.len());
    let trimmed = &data[first_non_ws..];
    for sig in SIGNATURES {
        match sig {
            Sig::Html(tag) => {
                if match_html(trimmed, tag) {
                    return "text/html; charset=utf-8";
                }
            }
            Sig::Exact(prefix, ct) => {
                if data.starts_with(prefix) {
                    return ct;
                }
            }
            Sig::Masked {
                mask,
                pat,
                skip_ws,
                ct,
            } => {
                let d = if *skip_ws { trimmed } else { data };
                if d.len() >= pat.len()
                    && pat
                        .iter()
                        .zip(mask.iter())
                        .zip(d)
                        .all(|((&p, &m), &b)| b & m == p)
                {
                    return ct;
                }
            }
            Sig::Mp4 => {
                if match_mp4(data) {
                    return "video/mp4";
                }
            }
            Sig::Text => {
                if !trimmed.iter().any(|&b| is_binary_byte(b)) {
                    return TEXT_PLAIN;
                }
            }
        }
    }
    OCTET_STREAM
}

// ------------------------------------------------------------------------------------------------

/// Sniffed content types that are never compressed (`hstore.data.not_compress`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotCompress(pub HashSet<String>);

impl Default for NotCompress {
    fn default() -> Self {
        NotCompress(
            ["audio/wave", "audio/mpeg"]
                .into_iter()
                .map(String::from)
                .collect(),
        )
    }
}

impl NotCompress {
    /// The defaults plus `extra` (configured keys are added, never replace the defaults).
    pub fn with_extra<I, S>(extra: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut nc = NotCompress::default();
        nc.0.extend(extra.into_iter().map(Into::into));
        nc
    }

    pub fn contains(&self, content_type: &str) -> bool {
        self.0.contains(content_type)
    }
}

/// The §4.3 decision for a live record with key size `ksz`, client `flag` and uncompressed
/// `value`: `Some(compressed)` if the value should be stored compressed (the caller then sets
/// `flag |= FLAG_COMPRESSED`), `None` to store it as is.
pub fn maybe_compress(
    ksz: usize,
    flag: u32,
    value: &[u8],
    not_compress: &NotCompress,
) -> Option<Vec<u8>> {
    if flag & (FLAG_CLIENT_COMPRESSED | FLAG_COMPRESSED) != 0 {
        return None;
    }
    if HEADER_SIZE + ksz + value.len() <= MIN_RECORD_TO_COMPRESS {
        return None;
    }
    // Values are limited by u32 vsz; the crate panics near u32::MAX.
    if value.len() as u64 >= u32::MAX as u64 - 400 {
        return None;
    }
    let sample = &value[..value.len().min(SAMPLE_LEN)];
    if not_compress.contains(sniff_content_type(sample)) {
        return None;
    }
    let c = qlz_compress(sample);
    if 10 * c.len() > 7 * sample.len() {
        return None;
    }
    if value.len() > SAMPLE_LEN {
        // The sample was a good predictor; no second ratio check (as gobeansdb).
        return Some(qlz_compress(value));
    }
    Some(c)
}

/// QuickLZ level 3 of `data`.
///
/// Panics if `data` is within 400 bytes of 4 GiB (a record value can never be that large).
pub fn qlz_compress(data: &[u8]) -> Vec<u8> {
    quicklz::compress(data, quicklz::CompressionLevel::Lvl3)
}

/// `(total, decompressed)` sizes from a QuickLZ header; `total` includes the header.
pub fn qlz_header_sizes(stored: &[u8]) -> Result<(u64, u64), CompressError> {
    let Some(&b0) = stored.first() else {
        return Err(CompressError::TooShort(0));
    };
    if b0 & 0x02 != 0 {
        let h = stored
            .get(..9)
            .ok_or(CompressError::TooShort(stored.len()))?;
        let total = u32::from_le_bytes([h[1], h[2], h[3], h[4]]);
        let dec = u32::from_le_bytes([h[5], h[6], h[7], h[8]]);
        Ok((total as u64, dec as u64))
    } else {
        let h = stored
            .get(..3)
            .ok_or(CompressError::TooShort(stored.len()))?;
        Ok((h[1] as u64, h[2] as u64))
    }
}

/// Decompresses a stored value. The header's `total` must equal `stored.len()` (§4.3), and
/// absurd decompressed sizes are refused before anything is allocated.
pub fn qlz_decompress(stored: &[u8]) -> Result<Vec<u8>, CompressError> {
    let (total, dec) = qlz_header_sizes(stored)?;
    if total != stored.len() as u64 {
        return Err(CompressError::SizeMismatch {
            header_total: total,
            stored: stored.len() as u64,
        });
    }
    if dec > MAX_DECOMPRESSED {
        return Err(CompressError::TooLarge(dec));
    }
    // Stored data is untrusted; a panic inside the decoder must not take the caller down.
    let result = std::panic::catch_unwind(|| {
        let mut cursor = Cursor::new(stored);
        quicklz::decompress(&mut cursor, dec as u32)
    });
    match result {
        Ok(Ok(v)) if v.len() as u64 == dec => Ok(v),
        Ok(Ok(v)) => Err(CompressError::Corrupt(format!(
            "decompressed {} bytes, header says {dec}",
            v.len()
        ))),
        Ok(Err(e)) => Err(CompressError::Corrupt(e.to_string())),
        Err(_) => Err(CompressError::Corrupt("decoder panicked".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// Deterministic pseudo-random bytes (xorshift64*), so test inputs are reproducible.
    fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        seed |= 1;
        while out.len() < len {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            let v = seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Deterministic compressible text.
    fn text(len: usize, seed: u64) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "beansdb", "key", "value", "chunk", "record", "hint", "the", "of", "and", "quick",
            "brown", "fox", "jumps", "over", "lazy", "dog", "中文", "数据", "1024", "\n",
        ];
        let r = pseudo_random(len, seed);
        let mut out = Vec::with_capacity(len + 16);
        let mut i = 0;
        while out.len() < len {
            out.extend_from_slice(WORDS[r[i % r.len().max(1)] as usize % WORDS.len()].as_bytes());
            out.push(b' ');
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn v63_vector() {
        let want = hex("4d 12 3f 08 00 00 80 76 76 76 83 9a 01 00 76 76 76 76");
        assert_eq!(qlz_compress(&[b'v'; 63]), want);
        assert_eq!(qlz_decompress(&want).unwrap(), vec![b'v'; 63]);
        assert_eq!(qlz_header_sizes(&want).unwrap(), (18, 63));
    }

    #[test]
    fn round_trips() {
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"a".to_vec(),
            vec![0u8; 215],
            vec![0u8; 216],
            vec![b'x'; 100_000],
        ];
        for (i, n) in [1usize, 10, 100, 215, 216, 217, 1000, 10240, 65536, 300_000]
            .into_iter()
            .enumerate()
        {
            inputs.push(pseudo_random(n, i as u64 + 1));
            inputs.push(text(n, i as u64 + 100));
        }
        for input in inputs {
            let c = qlz_compress(&input);
            let (total, dec) = qlz_header_sizes(&c).unwrap();
            assert_eq!(total, c.len() as u64);
            assert_eq!(dec, input.len() as u64);
            // Short header iff the source is < 216 bytes.
            assert_eq!(c[0] & 0x02 == 0, input.len() < 216, "len {}", input.len());
            assert_eq!(qlz_decompress(&c).unwrap(), input);
        }
    }

    #[test]
    fn incompressible_is_stored_raw() {
        let input = pseudo_random(5000, 42);
        let c = qlz_compress(&input);
        assert_eq!(c[0] & 1, 0, "stored uncompressed");
        assert_eq!(c.len(), 9 + input.len());
        assert_eq!(&c[9..], &input[..]);
        assert_eq!(qlz_decompress(&c).unwrap(), input);
    }

    #[test]
    fn header_size_mismatch_rejected() {
        let good = qlz_compress(&[b'v'; 63]);
        // One byte appended or removed.
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(
            qlz_decompress(&longer),
            Err(CompressError::SizeMismatch {
                header_total: 18,
                stored: 19
            })
        ));
        assert!(matches!(
            qlz_decompress(&good[..17]),
            Err(CompressError::SizeMismatch {
                header_total: 18,
                stored: 17
            })
        ));
        // Long header.
        let long = qlz_compress(&text(5000, 7));
        let mut bad = long.clone();
        bad.pop();
        assert!(matches!(
            qlz_decompress(&bad),
            Err(CompressError::SizeMismatch { .. })
        ));
        // Too short for any header.
        assert!(matches!(
            qlz_decompress(&[]),
            Err(CompressError::TooShort(0))
        ));
        assert!(matches!(
            qlz_decompress(&[0x4d, 3]),
            Err(CompressError::TooShort(2))
        ));
        assert!(matches!(
            qlz_decompress(&[0x4f, 9, 0, 0]),
            Err(CompressError::TooShort(4))
        ));
        // Absurd decompressed size.
        let mut huge = vec![0x4f, 13, 0, 0, 0];
        huge.extend_from_slice(&(2u32 << 30).to_le_bytes());
        huge.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            qlz_decompress(&huge),
            Err(CompressError::TooLarge(_))
        ));
        // Garbage with a consistent header must fail cleanly.
        for seed in 0..200u64 {
            let mut g = pseudo_random(40, seed);
            g[0] = 0x4d;
            g[1] = 40;
            let _ = qlz_decompress(&g);
            g[0] = 0x4f;
            g[1..5].copy_from_slice(&40u32.to_le_bytes());
            g[5..9].copy_from_slice(&(seed as u32 * 37).to_le_bytes());
            let _ = qlz_decompress(&g);
        }
    }

    #[test]
    fn masked_signatures_are_well_formed() {
        for sig in SIGNATURES {
            if let Sig::Masked { mask, pat, ct, .. } = sig {
                assert_eq!(mask.len(), pat.len(), "{ct}");
                assert!(
                    pat.iter().zip(mask.iter()).all(|(&p, &m)| p & m == p),
                    "{ct}"
                );
            }
        }
        assert!(matches!(SIGNATURES.last(), Some(Sig::Text)));
    }

    #[test]
    fn sniff_signatures() {
        let nc = |d: &[u8]| sniff_content_type(d);
        assert_eq!(nc(b""), TEXT_PLAIN);
        assert_eq!(nc(b"hello world\n"), TEXT_PLAIN);
        assert_eq!(nc("中文 text".as_bytes()), TEXT_PLAIN);
        assert_eq!(nc(b"\x1b[0m escape is text"), TEXT_PLAIN);
        assert_eq!(nc(b"abc\x00def"), OCTET_STREAM);
        for b in [0u8, 8, 0x0b, 0x0e, 0x1a, 0x1c, 0x1f] {
            assert_eq!(nc(&[b'a', b]), OCTET_STREAM, "byte {b:#x}");
        }
        for b in [9u8, 0x0a, 0x0c, 0x0d, 0x1b, 0x20, 0x7f, 0x80, 0xff] {
            assert_eq!(nc(&[b'a', b]), TEXT_PLAIN, "byte {b:#x}");
        }
        // Only the first 512 bytes count.
        let mut late_binary = vec![b'a'; 512];
        late_binary.push(0);
        assert_eq!(nc(&late_binary), TEXT_PLAIN);
        late_binary[511] = 0;
        assert_eq!(nc(&late_binary), OCTET_STREAM);

        assert_eq!(nc(b"ID3\x03\x00\x00\x00\x00\x0f"), "audio/mpeg");
        assert_eq!(nc(b"ID3"), "audio/mpeg");
        assert_eq!(nc(b"OggS\x00\x02\x00\x00"), "application/ogg");
        assert_eq!(nc(b"MThd\x00\x00\x00\x06\x00\x01"), "audio/midi");
        assert_eq!(nc(b"FORM\x01\x02\x03\x04AIFFCOMM"), "audio/aiff");
        assert_eq!(nc(b"RIFF\xff\x00\x10\x00AVI LIST"), "video/avi");
        assert_eq!(nc(b"RIFF\x24\x08\x00\x00WAVEfmt "), "audio/wave");
        assert_eq!(nc(b"RIFF\x24\x08\x00\x00WAV"), OCTET_STREAM);
        assert_eq!(nc(b"RIFF\x24\x08\x00\x00WEBPVP8 "), "image/webp");
        assert_eq!(nc(b".snd\x00\x00\x00\x18"), "audio/basic");

        assert_eq!(nc(b"<!DOCTYPE html><html>"), "text/html; charset=utf-8");
        assert_eq!(nc(b"  \n<HtMl>x"), "text/html; charset=utf-8");
        assert_eq!(nc(b"<p>para"), "text/html; charset=utf-8");
        assert_eq!(nc(b"<br "), "text/html; charset=utf-8");
        assert_eq!(nc(b"<!-- c -->"), "text/html; charset=utf-8");
        assert_eq!(nc(b"<a"), TEXT_PLAIN, "needs a terminator byte");
        assert_eq!(nc(b"<abbr>"), TEXT_PLAIN);
        assert_eq!(nc(b"\n <?xml version"), "text/xml; charset=utf-8");
        assert_eq!(nc(b"%PDF-1.4"), "application/pdf");
        assert_eq!(nc(b"%!PS-Adobe-3.0"), "application/postscript");
        assert_eq!(nc(b"\xfe\xff\x00\x41"), "text/plain; charset=utf-16be");
        assert_eq!(nc(b"\xff\xfe\x41\x00"), "text/plain; charset=utf-16le");
        assert_eq!(nc(b"\xef\xbb\xbfabc"), TEXT_PLAIN);

        assert_eq!(nc(b"\x00\x00\x01\x00\x01\x00"), "image/x-icon");
        assert_eq!(nc(b"\x00\x00\x02\x00\x01\x00"), "image/x-icon");
        assert_eq!(nc(b"BM\x3e\x00"), "image/bmp");
        assert_eq!(nc(b"GIF87a..."), "image/gif");
        assert_eq!(nc(b"GIF89a..."), "image/gif");
        assert_eq!(nc(b"\x89PNG\r\n\x1a\n\x00\x00"), "image/png");
        assert_eq!(nc(b"\xff\xd8\xff\xe0\x00\x10JFIF"), "image/jpeg");
        assert_eq!(nc(b"\x1a\x45\xdf\xa3\x01"), "video/webm");
        assert_eq!(nc(b"\x00\x01\x00\x00\x00\x10"), "font/ttf");
        assert_eq!(nc(b"OTTO\x00\x10"), "font/otf");
        assert_eq!(nc(b"ttcf\x00\x01"), "font/collection");
        assert_eq!(nc(b"wOFF\x00\x01"), "font/woff");
        assert_eq!(nc(b"wOF2\x00\x01"), "font/woff2");
        let mut eot = vec![1u8; 34];
        eot.extend_from_slice(b"LP\x00");
        assert_eq!(nc(&eot), "application/vnd.ms-fontobject");
        assert_eq!(nc(b"\x1f\x8b\x08\x00\x00"), "application/x-gzip");
        assert_eq!(nc(b"PK\x03\x04\x14\x00"), "application/zip");
        assert_eq!(nc(b"Rar!\x1a\x07\x00\xcf"), "application/x-rar-compressed");
        assert_eq!(
            nc(b"Rar!\x1a\x07\x01\x00\x33"),
            "application/x-rar-compressed"
        );
        assert_eq!(nc(b"\x00asm\x01\x00\x00\x00"), "application/wasm");

        let mut mp4 = vec![0, 0, 0, 0x18];
        mp4.extend_from_slice(b"ftypisom\x00\x00\x02\x00isommp41");
        assert_eq!(nc(&mp4), "video/mp4");
        // "mp4" only as the minor version word does not count.
        let mut not_mp4 = vec![0, 0, 0, 0x14];
        not_mp4.extend_from_slice(b"ftypisommp42isom\x00");
        assert_eq!(nc(&not_mp4), OCTET_STREAM);
    }

    #[test]
    fn not_compress_sets() {
        let d = NotCompress::default();
        assert!(d.contains("audio/wave"));
        assert!(d.contains("audio/mpeg"));
        assert_eq!(d.0.len(), 2);
        let e = NotCompress::with_extra(["image/jpeg", "audio/wave"]);
        assert_eq!(e.0.len(), 3);
        assert!(e.contains("audio/mpeg") && e.contains("image/jpeg"));
    }

    #[test]
    fn decision_table() {
        let nc = NotCompress::default();
        let v63 = vec![b'v'; 63];
        // r = 24 + 169 + 63 = 256: not compressed; r = 257: compressed.
        assert_eq!(maybe_compress(169, 0, &v63, &nc), None);
        let c = maybe_compress(170, 0, &v63, &nc).unwrap();
        assert_eq!(
            c,
            hex("4d 12 3f 08 00 00 80 76 76 76 83 9a 01 00 76 76 76 76")
        );
        // Client-compressed or already flagged values are never compressed.
        assert_eq!(maybe_compress(170, FLAG_CLIENT_COMPRESSED, &v63, &nc), None);
        assert_eq!(maybe_compress(170, FLAG_COMPRESSED, &v63, &nc), None);
        assert_eq!(maybe_compress(170, 0x11, &v63, &nc), None);
        assert!(maybe_compress(170, 0x204 | 0x1, &v63, &nc).is_some());
        // Random data fails the ratio test.
        assert_eq!(maybe_compress(3, 0, &pseudo_random(4000, 3), &nc), None);
        assert_eq!(maybe_compress(3, 0, &pseudo_random(50_000, 4), &nc), None);
        // Sniffed audio is never compressed, however compressible.
        let mut wav = b"RIFF\x00\x00\x00\x00WAVE".to_vec();
        wav.resize(5000, 0);
        assert_eq!(sniff_content_type(&wav), "audio/wave");
        assert_eq!(maybe_compress(3, 0, &wav, &nc), None);
        let mut mp3 = b"ID3".to_vec();
        mp3.resize(5000, b'a');
        assert_eq!(maybe_compress(3, 0, &mp3, &nc), None);
        // ...unless the type is not configured.
        let empty = NotCompress(HashSet::new());
        assert!(maybe_compress(3, 0, &wav, &empty).is_some());
        // Extra configured types are honoured.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.resize(5000, 0);
        assert!(maybe_compress(3, 0, &png, &nc).is_some());
        assert_eq!(
            maybe_compress(3, 0, &png, &NotCompress::with_extra(["image/png"])),
            None
        );
        // Exactly the sample size: the sample is the whole value.
        let t = text(SAMPLE_LEN, 9);
        assert_eq!(maybe_compress(3, 0, &t, &nc).unwrap(), qlz_compress(&t));
        // > 10240 bytes: the whole value is compressed, not only the sample.
        let big = text(100_000, 10);
        let c = maybe_compress(3, 0, &big, &nc).unwrap();
        assert_eq!(c, qlz_compress(&big));
        assert_eq!(qlz_decompress(&c).unwrap(), big);
        // Compressible sample then random tail: still compressed whole, no second ratio check.
        let mut mixed = text(SAMPLE_LEN, 11);
        mixed.extend_from_slice(&pseudo_random(200_000, 12));
        let c = maybe_compress(3, 0, &mixed, &nc).unwrap();
        assert!(10 * c.len() > 7 * mixed.len());
        assert_eq!(qlz_decompress(&c).unwrap(), mixed);
        // Tombstone-like empty value with a long key is never worth compressing.
        assert_eq!(maybe_compress(240, 0, b"", &nc), None);
    }

    /// Runs the PyPI `pyquicklz` oracle. Missing python3 or pyquicklz is a test failure: CI
    /// installs both.
    fn python_oracle(dir: &Path, names: &[String]) {
        const SCRIPT: &str = r#"
import sys, os
import quicklz
d = sys.argv[1]
for name in sys.argv[2:]:
    raw = open(os.path.join(d, name + ".raw"), "rb").read()
    open(os.path.join(d, name + ".py.qlz"), "wb").write(quicklz.compress(raw))
    rs = open(os.path.join(d, name + ".rs.qlz"), "rb").read()
    open(os.path.join(d, name + ".py.dec"), "wb").write(quicklz.decompress(rs))
"#;
        let out = Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(dir)
            .args(names)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 for the pyquicklz cross-check (install python3): {e}")
            });
        assert!(
            out.status.success(),
            "pyquicklz cross-check failed (install it with `pip install pyquicklz`): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn pyquicklz_cross_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, n) in [10usize, 100, 215, 216, 1000, 4096, 10240, 65_537, 300_000]
            .into_iter()
            .enumerate()
        {
            cases.push((format!("rand{n}"), pseudo_random(n, 1000 + i as u64)));
            cases.push((format!("text{n}"), text(n, 2000 + i as u64)));
        }
        let mut half = text(150_000, 77);
        half.extend_from_slice(&pseudo_random(150_000, 78));
        cases.push(("mixed300k".into(), half));
        cases.push(("zeros300k".into(), vec![0u8; 300_000]));

        for (name, raw) in &cases {
            std::fs::write(dir.path().join(format!("{name}.raw")), raw).unwrap();
            std::fs::write(dir.path().join(format!("{name}.rs.qlz")), qlz_compress(raw)).unwrap();
        }
        let names: Vec<String> = cases.iter().map(|(n, _)| n.clone()).collect();
        python_oracle(dir.path(), &names);
        for (name, raw) in &cases {
            let py = std::fs::read(dir.path().join(format!("{name}.py.qlz"))).unwrap();
            let py_dec = std::fs::read(dir.path().join(format!("{name}.py.dec"))).unwrap();
            assert_eq!(
                &py_dec, raw,
                "{name}: pyquicklz cannot decompress our stream"
            );
            assert_eq!(
                &qlz_decompress(&py).unwrap(),
                raw,
                "{name}: we cannot decompress pyquicklz"
            );
            assert_eq!(py, qlz_compress(raw), "{name}: compressed bytes differ");
        }
    }
}
