//! Incremental search for the end of a protocol line, shared by both decoders.

use memchr::memchr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineScan {
    /// A line ends at `newline` (index of its `\n`); `crlf` tells whether `\r` precedes it.
    /// The line content (without terminator) is at most `max_line` bytes.
    Found { newline: usize, crlf: bool },
    /// No `\n` yet and the line can still become valid.
    NeedMore,
    /// The content is longer than `max_line`, decided without waiting for the `\n`.
    TooLong,
}

/// Looks for the first `\n` of `buf`, resuming at `*scanned` so that a long line arriving in
/// many small reads is scanned once overall, not once per read.
///
/// Only the first `max_line + 2` bytes are ever searched: a `\n` further away means the
/// content exceeds `max_line` in any case.
pub(crate) fn scan(buf: &[u8], scanned: &mut usize, max_line: usize) -> LineScan {
    let window = buf.len().min(max_line.saturating_add(2));
    // The caller only appends between calls; the min() keeps us safe if it did not.
    let start = (*scanned).min(window);
    let Some(off) = buf.get(start..window).and_then(|w| memchr(b'\n', w)) else {
        // With max_line + 1 bytes and no '\n', the only valid continuation is a '\r' at
        // index max_line followed by '\n'; anything else is already too long.
        if buf.len() > max_line && buf.get(max_line) != Some(&b'\r') {
            return LineScan::TooLong;
        }
        if buf.len() >= max_line.saturating_add(2) {
            return LineScan::TooLong;
        }
        *scanned = window;
        return LineScan::NeedMore;
    };
    let newline = start + off;
    let crlf = newline > 0 && buf.get(newline - 1) == Some(&b'\r');
    let content = if crlf { newline - 1 } else { newline };
    if content > max_line {
        return LineScan::TooLong;
    }
    LineScan::Found { newline, crlf }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_resumes() {
        let mut s = 0;
        assert_eq!(scan(b"abc", &mut s, 10), LineScan::NeedMore);
        assert_eq!(s, 3);
        assert_eq!(
            scan(b"abc\r\n", &mut s, 10),
            LineScan::Found {
                newline: 4,
                crlf: true
            }
        );
        let mut s = 0;
        assert_eq!(
            scan(b"\n", &mut s, 10),
            LineScan::Found {
                newline: 0,
                crlf: false
            }
        );
    }

    #[test]
    fn limits() {
        // Content of exactly max_line bytes is fine, one more is not.
        let mut s = 0;
        assert_eq!(
            scan(b"abcd\r\n", &mut s, 4),
            LineScan::Found {
                newline: 5,
                crlf: true
            }
        );
        let mut s = 0;
        assert_eq!(scan(b"abcde\r\n", &mut s, 4), LineScan::TooLong);
        let mut s = 0;
        assert_eq!(scan(b"abcde\n", &mut s, 4), LineScan::TooLong);
        // max_line + 1 bytes without '\n' may still end as "<max_line>\r\n".
        let mut s = 0;
        assert_eq!(scan(b"abcd\r", &mut s, 4), LineScan::NeedMore);
        assert_eq!(scan(b"abcd\rx", &mut s, 4), LineScan::TooLong);
        let mut s = 0;
        assert_eq!(scan(b"abcd", &mut s, 4), LineScan::NeedMore);
        assert_eq!(scan(b"abcde", &mut s, 4), LineScan::TooLong);
    }
}
