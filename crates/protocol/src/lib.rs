//! memcached text protocol with the beansdb extensions, as a sans-I/O codec.
//!
//! * [`request`]: server side request decoder ([`RequestDecoder`]) and write-key validity.
//! * [`response`]: server side reply writers and the fixed reply lines.
//! * [`client`]: client side request encoders and the incremental [`ResponseDecoder`].
//!
//! Nothing here performs I/O: callers append bytes they read to a [`bytes::BytesMut`] and call
//! `decode`, which consumes exactly the bytes it used. Decoded keys and values are zero-copy
//! slices of that buffer.

pub mod client;
mod line;
pub mod request;
pub mod response;

pub use client::{
    EncodeError, ErrorKind, ReplyKind, Response, ResponseDecoder, ResponseError, Value,
};
pub use request::{
    is_valid_write_key, Command, Decoded, DecoderConfig, PendingBody, RequestDecoder, SetKind,
};

/// Longest accepted command line, excluding its `\r\n` (node.md §3.1).
pub const MAX_LINE: usize = 16 << 20;
/// Largest `<bytes>` whose body is skipped after a rejected storage command; above it the
/// connection is closed instead (node.md §3.4).
pub const DISCARD_LIMIT: usize = 1 << 30;
/// Hard length limit of a key that may be written (node.md §3.2).
pub const MAX_WRITE_KEY_LEN: usize = 250;
/// Default `max_key_len` for retrieval keys.
pub const DEFAULT_MAX_KEY_LEN: usize = 250;
/// Default `body_max` (50 MiB, the `body_max_str` default of both servers).
pub const DEFAULT_BODY_MAX: usize = 50 << 20;

/// Decimal integer with an optional sign that must fit i64 (node.md §3.1).
pub(crate) fn parse_i64(tok: &[u8]) -> Option<i64> {
    let (neg, digits) = match tok.split_first()? {
        (b'-', rest) => (true, rest),
        (b'+', rest) => (false, rest),
        _ => (false, tok),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        v = v.checked_mul(10)?;
        // Accumulating negatives directly lets i64::MIN parse.
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

/// Plain decimal digits (no sign) that fit u64; used for fields servers print unsigned.
pub(crate) fn parse_u64(tok: &[u8]) -> Option<u64> {
    if tok.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &d in tok {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

/// Appends the decimal form of `n` without going through `fmt` (hot path for VALUE lines).
pub(crate) fn put_u64<B: bytes::BufMut>(out: &mut B, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        // n % 10 < 10, so the cast cannot truncate.
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&tmp[i..]);
}

pub(crate) fn put_i64<B: bytes::BufMut>(out: &mut B, n: i64) {
    if n < 0 {
        out.put_u8(b'-');
    }
    put_u64(out, n.unsigned_abs());
}

/// Tokens of a command line: split on the space character only, runs collapse.
pub(crate) fn tokens(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ').filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-0"), Some(0));
        assert_eq!(parse_i64(b"+17"), Some(17));
        assert_eq!(parse_i64(b"007"), Some(7));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        for bad in [
            &b""[..],
            b"+",
            b"-",
            b"1a",
            b"0x10",
            b" 1",
            b"1 ",
            b"--1",
            b"1_0",
        ] {
            assert_eq!(parse_i64(bad), None, "{bad:?}");
        }
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"+1"), None);
    }

    #[test]
    fn integer_output() {
        let mut v = Vec::new();
        put_i64(&mut v, i64::MIN);
        v.push(b' ');
        put_i64(&mut v, 0);
        v.push(b' ');
        put_u64(&mut v, u64::MAX);
        assert_eq!(v, b"-9223372036854775808 0 18446744073709551615");
    }

    #[test]
    fn tokenizer() {
        let t: Vec<&[u8]> = tokens(b"  get  a\tb   c ").collect();
        assert_eq!(t, vec![&b"get"[..], b"a\tb", b"c"]);
        assert_eq!(tokens(b"   ").count(), 0);
    }
}
