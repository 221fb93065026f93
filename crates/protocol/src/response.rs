//! Server side reply writers (node.md §3.3, §3.6, §9).
//!
//! All writers append to any [`BufMut`] (`BytesMut`, `Vec<u8>`, …). Fixed replies are byte
//! constants including their `\r\n`.

use std::fmt;

use bytes::BufMut;

use crate::{put_i64, put_u64};

pub const STORED: &[u8] = b"STORED\r\n";
pub const NOT_STORED: &[u8] = b"NOT_STORED\r\n";
pub const EXISTS: &[u8] = b"EXISTS\r\n";
pub const NOT_FOUND: &[u8] = b"NOT_FOUND\r\n";
pub const DELETED: &[u8] = b"DELETED\r\n";
pub const END: &[u8] = b"END\r\n";
pub const OK: &[u8] = b"OK\r\n";
/// Unknown command; the connection stays open.
pub const ERROR: &[u8] = b"ERROR\r\n";
/// `optimize_stat` replies.
pub const RUNNING: &[u8] = b"running\r\n";
pub const NONE: &[u8] = b"none\r\n";

pub const CLIENT_ERROR_INVALID_CMD: &[u8] = b"CLIENT_ERROR invalid cmd\r\n";
pub const CLIENT_ERROR_KEY_LENGTH: &[u8] = b"CLIENT_ERROR key length error\r\n";
pub const CLIENT_ERROR_VALUE_TOO_LARGE: &[u8] = b"CLIENT_ERROR value too large\r\n";
pub const CLIENT_ERROR_BAD_DATA_CHUNK: &[u8] = b"CLIENT_ERROR bad data chunk\r\n";
pub const CLIENT_ERROR_LINE_TOO_LONG: &[u8] = b"CLIENT_ERROR line too long\r\n";
pub const CLIENT_ERROR_INVALID_NUMBER: &[u8] = b"CLIENT_ERROR invalid number\r\n";

/// `append`, `prepend`, `decr` (D4a).
pub const SERVER_ERROR_NOT_SUPPORT: &[u8] = b"SERVER_ERROR operation not support\r\n";
pub const SERVER_ERROR_TIMEOUT: &[u8] = b"SERVER_ERROR timeout\r\n";
pub const SERVER_ERROR_INTERNAL: &[u8] = b"SERVER_ERROR internal error\r\n";
pub const SERVER_ERROR_OUT_OF_MEMORY: &[u8] = b"SERVER_ERROR out of memory\r\n";
pub const SERVER_ERROR_BUCKET_NOT_SERVED: &[u8] = b"SERVER_ERROR bucket not served\r\n";
/// A set with a negative exptime on an absent or deleted key (node.md §3.7 rule 4).
pub const SERVER_ERROR_NOT_FOUND: &[u8] = b"SERVER_ERROR NOT_FOUND\r\n";
/// `get ?` (node.md §3.6).
pub const SERVER_ERROR_BAD_KEY_Q: &[u8] = b"SERVER_ERROR bad key ?\r\n";
/// Malformed `@@` key (node.md §3.6).
pub const SERVER_ERROR_BAD_COMMAND_LINE_FORMAT: &[u8] = b"SERVER_ERROR bad command line format\r\n";
/// Proxy quorum failures (proxy.md §4).
pub const SERVER_ERROR_READ_FAILED: &[u8] = b"SERVER_ERROR read failed\r\n";
pub const SERVER_ERROR_WRITE_FAILED: &[u8] = b"SERVER_ERROR write failed\r\n";
pub const SERVER_ERROR_DELETE_FAILED: &[u8] = b"SERVER_ERROR delete failed\r\n";
pub const SERVER_ERROR_INCR_FAILED: &[u8] = b"SERVER_ERROR incr failed\r\n";

/// `VALUE <key> <flag> <len>[ 0]\r\n`: the header alone, for callers that write the data
/// with a vectored write instead of copying it.
pub fn value_header<B: BufMut>(out: &mut B, key: &[u8], flag: u32, len: usize, gets: bool) {
    // beansdb has no cas; `gets` always reports 0 (node.md §3.3).
    value_header_cas(out, key, flag, len, gets.then_some(0));
}

/// `VALUE <key> <flag> <bytes>[ <cas>]\r\n`: the cas column only when `cas` is given.
pub fn value_header_cas<B: BufMut>(
    out: &mut B,
    key: &[u8],
    flag: u32,
    len: usize,
    cas: Option<u64>,
) {
    out.put_slice(b"VALUE ");
    out.put_slice(key);
    out.put_u8(b' ');
    put_u64(out, u64::from(flag));
    out.put_u8(b' ');
    put_u64(out, len as u64);
    if let Some(cas) = cas {
        out.put_u8(b' ');
        put_u64(out, cas);
    }
    out.put_slice(b"\r\n");
}

/// One hit: `VALUE <key> <flag> <bytes>[ 0]\r\n<data>\r\n`.
pub fn value<B: BufMut>(out: &mut B, key: &[u8], flag: u32, data: &[u8], gets: bool) {
    value_header(out, key, flag, data.len(), gets);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// Terminates a retrieval or `stats` reply.
pub fn end<B: BufMut>(out: &mut B) {
    out.put_slice(END);
}

/// `STAT <name> <value>\r\n`.
pub fn stat<B: BufMut, V: fmt::Display>(out: &mut B, name: &[u8], value: V) {
    out.put_slice(b"STAT ");
    out.put_slice(name);
    out.put_u8(b' ');
    write_display(out, value);
    out.put_slice(b"\r\n");
}

/// The decimal line answering `incr` (e.g. `15\r\n`; may be negative, the counter wraps).
pub fn number<B: BufMut>(out: &mut B, n: i64) {
    put_i64(out, n);
    out.put_slice(b"\r\n");
}

/// `VERSION <version>\r\n`.
pub fn version<B: BufMut>(out: &mut B, version: &str) {
    out.put_slice(b"VERSION ");
    out.put_slice(version.as_bytes());
    out.put_slice(b"\r\n");
}

/// `SERVER_ERROR <msg>\r\n`; any `\r`/`\n` in `msg` is replaced by a space so that one error
/// can never become several reply lines.
pub fn server_error<B: BufMut, M: fmt::Display>(out: &mut B, msg: M) {
    out.put_slice(b"SERVER_ERROR ");
    write_display(out, SingleLine(msg));
    out.put_slice(b"\r\n");
}

/// `CLIENT_ERROR <msg>\r\n`, with the same single-line guarantee as [`server_error`].
pub fn client_error<B: BufMut, M: fmt::Display>(out: &mut B, msg: M) {
    out.put_slice(b"CLIENT_ERROR ");
    write_display(out, SingleLine(msg));
    out.put_slice(b"\r\n");
}

fn write_display<B: BufMut, V: fmt::Display>(out: &mut B, value: V) {
    use fmt::Write;
    struct Adapter<'a, B>(&'a mut B);
    impl<B: BufMut> fmt::Write for Adapter<'_, B> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.put_slice(s.as_bytes());
            Ok(())
        }
    }
    // The adapter never fails, so the only possible error is a Display impl reporting one;
    // whatever it wrote so far stays, which is the best we can do for a reply line.
    let _ = write!(Adapter(out), "{value}");
}

/// Display wrapper that turns line breaks into spaces.
struct SingleLine<M>(M);

impl<M: fmt::Display> fmt::Display for SingleLine<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write;
        struct Filter<'a, 'b>(&'a mut fmt::Formatter<'b>);
        impl fmt::Write for Filter<'_, '_> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                for part in s.split_inclusive(['\r', '\n']) {
                    match part.strip_suffix(['\r', '\n']) {
                        Some(head) => {
                            self.0.write_str(head)?;
                            self.0.write_char(' ')?;
                        }
                        None => self.0.write_str(part)?,
                    }
                }
                Ok(())
            }
        }
        write!(Filter(f), "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn value_lines() {
        let mut out = BytesMut::new();
        value(&mut out, b"k", 0x204, b"15", false);
        value(&mut out, b"k2", u32::MAX, b"", true);
        end(&mut out);
        assert_eq!(
            &out[..],
            b"VALUE k 516 2\r\n15\r\nVALUE k2 4294967295 0 0\r\n\r\nEND\r\n"
        );
    }

    #[test]
    fn misc_lines() {
        let mut out = Vec::new();
        stat(&mut out, b"pid", 42);
        stat(&mut out, b"version", "2.1.0.18-rs.0.1.0");
        number(&mut out, -3);
        version(&mut out, "2.1.0.18-rs.0.1.0");
        server_error(&mut out, "bad\r\nthing");
        client_error(&mut out, format_args!("x{}", 1));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "STAT pid 42\r\nSTAT version 2.1.0.18-rs.0.1.0\r\n-3\r\n\
             VERSION 2.1.0.18-rs.0.1.0\r\nSERVER_ERROR bad  thing\r\nCLIENT_ERROR x1\r\n"
        );
    }
}
