//! Server side request decoding (node.md §3.1–§3.4, proxy.md §2).
//!
//! [`RequestDecoder::decode`] turns the bytes of one connection into [`Command`]s, or into
//! fixed error replies that the codec answers itself ([`Decoded::Reply`]). It is a state
//! machine: a storage command's body is awaited without rescanning, and a refused body is
//! skipped as it arrives without ever being buffered or parsed as commands.

use bytes::{Buf, Bytes, BytesMut};

use crate::line::{scan, LineScan};
use crate::response::{
    CLIENT_ERROR_BAD_DATA_CHUNK, CLIENT_ERROR_INVALID_CMD, CLIENT_ERROR_INVALID_NUMBER,
    CLIENT_ERROR_KEY_LENGTH, CLIENT_ERROR_LINE_TOO_LONG, CLIENT_ERROR_VALUE_TOO_LARGE, ERROR,
};
use crate::{
    parse_i64, parse_u64, tokens, DEFAULT_BODY_MAX, DEFAULT_MAX_KEY_LEN, DISCARD_LIMIT, MAX_LINE,
    MAX_WRITE_KEY_LEN,
};

/// The storage command that introduced a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetKind {
    Set,
    Add,
    Replace,
    Cas,
    Append,
    Prepend,
}

impl SetKind {
    /// The command word on the wire.
    pub fn name(self) -> &'static str {
        match self {
            SetKind::Set => "set",
            SetKind::Add => "add",
            SetKind::Replace => "replace",
            SetKind::Cas => "cas",
            SetKind::Append => "append",
            SetKind::Prepend => "prepend",
        }
    }

    pub fn from_name(name: &[u8]) -> Option<SetKind> {
        Some(match name {
            b"set" => SetKind::Set,
            b"add" => SetKind::Add,
            b"replace" => SetKind::Replace,
            b"cas" => SetKind::Cas,
            b"append" => SetKind::Append,
            b"prepend" => SetKind::Prepend,
            _ => return None,
        })
    }

    /// `set`, `add`, `replace` and `cas` all behave as `set`; `append`/`prepend` are refused
    /// by the servers after their body has been read.
    pub fn stores(self) -> bool {
        !matches!(self, SetKind::Append | SetKind::Prepend)
    }
}

/// A parsed request. Keys and values are zero-copy slices of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `get`/`gets`; at least one key, each `1 ≤ len ≤ max_key_len`.
    Get {
        keys: Vec<Bytes>,
        gets: bool,
    },
    /// The set family, `append` and `prepend`. `flag` is the low 32 bits of the token,
    /// `exptime` (the beansdb version) its low 32 bits read as i32. `cas` is the unique value
    /// of a `cas` command (0 for the other kinds): beansdb ignores it, the proxy stores it in
    /// Cassandra's `cas` column.
    Set {
        kind: SetKind,
        key: Bytes,
        flag: u32,
        exptime: i32,
        value: Bytes,
        noreply: bool,
        cas: u64,
    },
    Delete {
        key: Bytes,
        noreply: bool,
    },
    Incr {
        key: Bytes,
        delta: i64,
        noreply: bool,
    },
    /// Answered `SERVER_ERROR operation not support`; the delta is not interpreted.
    Decr {
        key: Bytes,
        noreply: bool,
    },
    Stats {
        names: Vec<Bytes>,
    },
    Version,
    Verbosity {
        noreply: bool,
    },
    FlushAll {
        noreply: bool,
    },
    OptimizeStat,
    /// Close the connection without a reply.
    Quit,
}

impl Command {
    /// Whether the client asked for no reply.
    pub fn noreply(&self) -> bool {
        match self {
            Command::Set { noreply, .. }
            | Command::Delete { noreply, .. }
            | Command::Incr { noreply, .. }
            | Command::Decr { noreply, .. }
            | Command::Verbosity { noreply }
            | Command::FlushAll { noreply } => *noreply,
            _ => false,
        }
    }

    /// The command word (`gets` for a `gets`, the storage kind for `Set`), for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get { gets: false, .. } => "get",
            Command::Get { gets: true, .. } => "gets",
            Command::Set { kind, .. } => kind.name(),
            Command::Delete { .. } => "delete",
            Command::Incr { .. } => "incr",
            Command::Decr { .. } => "decr",
            Command::Stats { .. } => "stats",
            Command::Version => "version",
            Command::Verbosity { .. } => "verbosity",
            Command::FlushAll { .. } => "flush_all",
            Command::OptimizeStat => "optimize_stat",
            Command::Quit => "quit",
        }
    }
}

/// Result of one [`RequestDecoder::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The buffer holds no complete request; read more and call again.
    NeedMore,
    Request(Command),
    /// A protocol error the codec answers itself. Write `reply` in order with the other
    /// replies; if `close`, close the connection after writing it (the decoder then yields
    /// only `NeedMore` and consumes nothing).
    Reply {
        reply: &'static [u8],
        close: bool,
    },
}

/// Decoder limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Longest key accepted in `get`/`gets` (config `max_key_len`, 250).
    pub max_key_len: usize,
    /// Largest accepted storage body (config `body_max`).
    pub body_max: usize,
    /// Longest command line, excluding `\r\n` (16 MiB).
    pub max_line: usize,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            max_key_len: DEFAULT_MAX_KEY_LEN,
            body_max: DEFAULT_BODY_MAX,
            max_line: MAX_LINE,
        }
    }
}

/// A storage command whose line was accepted and whose body is still arriving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBody {
    pub kind: SetKind,
    pub key: Bytes,
    pub flag: u32,
    pub exptime: i32,
    pub noreply: bool,
    /// The `cas` command's unique value, else 0.
    pub cas: u64,
    /// Announced `<bytes>`.
    pub len: usize,
    /// Body bytes (at most `len`) that were in the buffer at the end of the last `decode`.
    pub buffered: usize,
}

#[derive(Debug)]
enum State {
    /// Expecting a command line; `scanned` bytes at the front are known to hold no `\n`.
    Line { scanned: usize },
    /// Expecting `len + 2` body bytes.
    Body(PendingBody),
    /// Dropping this many more bytes of a refused body.
    Discard { remaining: usize },
    /// A fatal error was answered; the connection must be closed.
    Closed,
}

/// Incremental request decoder for one connection.
#[derive(Debug)]
pub struct RequestDecoder {
    config: DecoderConfig,
    state: State,
}

impl Default for RequestDecoder {
    fn default() -> Self {
        RequestDecoder::new(DecoderConfig::default())
    }
}

/// What the body of a refused storage command turns into.
enum Refusal {
    /// Skip `<bytes> + 2` bytes, then continue with the next line.
    Discard(usize),
    /// `<bytes>` is missing, unparseable or out of `[0, 1 GiB]`: close after the reply.
    Close,
}

impl RequestDecoder {
    pub fn new(config: DecoderConfig) -> RequestDecoder {
        RequestDecoder {
            config,
            state: State::Line { scanned: 0 },
        }
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Decodes at most one request (or codec reply) from the front of `buf`, consuming
    /// exactly the bytes it used. Between calls the caller may only append to `buf`.
    ///
    /// Bytes of a refused body are consumed silently and never produce an item.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Decoded {
        loop {
            // Each arm owns the state and puts back the next one.
            match std::mem::replace(&mut self.state, State::Closed) {
                State::Closed => return Decoded::NeedMore,
                State::Discard { remaining } => {
                    let n = remaining.min(buf.len());
                    buf.advance(n);
                    if remaining > n {
                        self.state = State::Discard {
                            remaining: remaining - n,
                        };
                        return Decoded::NeedMore;
                    }
                    self.state = State::Line { scanned: 0 };
                }
                State::Body(mut pending) => {
                    // body_max may be configured near usize::MAX; never overflow.
                    if buf.len() < pending.len.saturating_add(2) {
                        pending.buffered = buf.len().min(pending.len);
                        self.state = State::Body(pending);
                        return Decoded::NeedMore;
                    }
                    self.state = State::Line { scanned: 0 };
                    let value = buf.split_to(pending.len).freeze();
                    let terminated = buf.get(..2) == Some(&b"\r\n"[..]);
                    // Both bytes are consumed either way: parsing resumes after them (§3.4).
                    buf.advance(2);
                    if !terminated {
                        return reply(CLIENT_ERROR_BAD_DATA_CHUNK);
                    }
                    return Decoded::Request(Command::Set {
                        kind: pending.kind,
                        key: pending.key,
                        flag: pending.flag,
                        exptime: pending.exptime,
                        value,
                        noreply: pending.noreply,
                        cas: pending.cas,
                    });
                }
                State::Line { mut scanned } => {
                    match scan(buf, &mut scanned, self.config.max_line) {
                        LineScan::NeedMore => {
                            self.state = State::Line { scanned };
                            return Decoded::NeedMore;
                        }
                        LineScan::TooLong => {
                            // State stays Closed.
                            return Decoded::Reply {
                                reply: CLIENT_ERROR_LINE_TOO_LONG,
                                close: true,
                            };
                        }
                        LineScan::Found { newline, crlf } => {
                            let mut line = buf.split_to(newline + 1).freeze();
                            self.state = State::Line { scanned: 0 };
                            if !crlf {
                                return invalid_cmd();
                            }
                            // crlf implies newline ≥ 1.
                            line.truncate(newline - 1);
                            if let Some(item) = self.parse_line(&line) {
                                return item;
                            }
                            // A storage line was accepted, or refused with a skipped body: go on
                            // with the body bytes that may already be buffered.
                        }
                    }
                }
            }
        }
    }

    /// Announced length of the body being awaited, if a storage line has been accepted and
    /// its body is incomplete. A server should take the request's receive time and may reserve
    /// buffer space or account memory when this first becomes `Some`.
    pub fn pending_body(&self) -> Option<&PendingBody> {
        match &self.state {
            State::Body(p) => Some(p),
            _ => None,
        }
    }

    /// Bytes of the pending body held in the buffer after the last `decode` (for buffer
    /// accounting), `None` when no body is pending.
    pub fn pending_body_len(&self) -> Option<usize> {
        self.pending_body().map(|p| p.buffered)
    }

    /// Refuses the pending body (e.g. `SERVER_ERROR out of memory`, node.md §3.4.3): its
    /// `len + 2` bytes, including those already buffered, are skipped by the following
    /// `decode` calls. Returns the refused command's header so the caller can reply.
    pub fn skip_pending_body(&mut self) -> Option<PendingBody> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Body(p) => {
                self.state = State::Discard {
                    remaining: p.len.saturating_add(2),
                };
                Some(p)
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// Bytes still to be skipped of a refused body.
    pub fn discarding(&self) -> Option<usize> {
        match self.state {
            State::Discard { remaining } => Some(remaining),
            _ => None,
        }
    }

    /// True after a reply with `close: true`.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Parses one complete line (without `\r\n`). `None` means the state was switched to a
    /// body or discard phase and decoding continues.
    fn parse_line(&mut self, line: &Bytes) -> Option<Decoded> {
        let mut toks = tokens(line);
        let Some(cmd) = toks.next() else {
            return Some(invalid_cmd());
        };
        let args: Vec<&[u8]> = toks.collect();
        if let Some(kind) = SetKind::from_name(cmd) {
            return self.parse_storage(kind, line, &args);
        }
        let last_is_noreply = args.last() == Some(&&b"noreply"[..]);
        let command = match cmd {
            b"get" | b"gets" => {
                if args.is_empty() {
                    return Some(invalid_cmd());
                }
                if args.iter().any(|k| k.len() > self.config.max_key_len) {
                    return Some(reply(CLIENT_ERROR_KEY_LENGTH));
                }
                Command::Get {
                    keys: args.iter().map(|k| line.slice_ref(k)).collect(),
                    gets: cmd == b"gets",
                }
            }
            b"delete" => match args.as_slice() {
                [key] | [key, _] | [key, _, _] => Command::Delete {
                    key: line.slice_ref(key),
                    noreply: args.len() > 1 && last_is_noreply,
                },
                _ => return Some(invalid_cmd()),
            },
            b"incr" | b"decr" => match args.as_slice() {
                // As gobeansdb: a 4th token other than `noreply` is ignored.
                [key, delta] | [key, delta, _] => {
                    let key = line.slice_ref(key);
                    let noreply = args.len() == 3 && last_is_noreply;
                    if cmd == b"decr" {
                        Command::Decr { key, noreply }
                    } else {
                        let Some(delta) = parse_i64(delta) else {
                            return Some(reply(CLIENT_ERROR_INVALID_NUMBER));
                        };
                        Command::Incr {
                            key,
                            delta,
                            noreply,
                        }
                    }
                }
                _ => return Some(invalid_cmd()),
            },
            b"stats" => Command::Stats {
                names: args.iter().map(|n| line.slice_ref(n)).collect(),
            },
            b"version" => Command::Version,
            b"verbosity" => Command::Verbosity {
                noreply: last_is_noreply,
            },
            b"flush_all" => Command::FlushAll {
                noreply: last_is_noreply,
            },
            b"optimize_stat" => Command::OptimizeStat,
            b"quit" => Command::Quit,
            _ => return Some(reply(ERROR)),
        };
        Some(Decoded::Request(command))
    }

    /// `<cmd> <key> <flag> <exptime> <bytes> [<cas>] [noreply]`, 5–7 tokens.
    fn parse_storage(&mut self, kind: SetKind, line: &Bytes, args: &[&[u8]]) -> Option<Decoded> {
        // Decided up front: every refusal below either skips the body or closes (§3.4.6).
        let bytes = args.get(3).and_then(|t| parse_i64(t));
        let refusal = match bytes {
            Some(n) if n >= 0 && n as u64 <= DISCARD_LIMIT as u64 => Refusal::Discard(n as usize),
            _ => Refusal::Close,
        };
        let (key, flag, exptime, cas_or_noreply, extra) = match args {
            [key, flag, exptime, _bytes] => (key, flag, exptime, None, None),
            [key, flag, exptime, _bytes, a] => (key, flag, exptime, Some(a), None),
            [key, flag, exptime, _bytes, a, b] => (key, flag, exptime, Some(a), Some(b)),
            _ => return Some(self.refuse(refusal, CLIENT_ERROR_INVALID_CMD)),
        };
        let (Some(flag), Some(exptime), Some(bytes)) = (parse_i64(flag), parse_i64(exptime), bytes)
        else {
            return Some(self.refuse(refusal, CLIENT_ERROR_INVALID_CMD));
        };
        if bytes < 0 || bytes as u64 > self.config.body_max as u64 {
            return Some(self.refuse(refusal, CLIENT_ERROR_VALUE_TOO_LARGE));
        }
        let mut cas = 0;
        let noreply_tok = if kind == SetKind::Cas {
            // The cas value must be present and numeric.
            // memcached's unique is a u64; a negative token is kept as its bit pattern.
            let parse = |t: &&[u8]| parse_u64(t).or_else(|| parse_i64(t).map(|v| v as u64));
            match cas_or_noreply.map(parse) {
                Some(Some(v)) => {
                    cas = v;
                    extra
                }
                _ => return Some(self.refuse(refusal, CLIENT_ERROR_INVALID_CMD)),
            }
        } else {
            // As gobeansdb: a 7th token after a valid `noreply` is ignored.
            cas_or_noreply
        };
        let noreply = match noreply_tok {
            None => false,
            Some(t) if *t == b"noreply" => true,
            Some(_) => return Some(self.refuse(refusal, CLIENT_ERROR_INVALID_CMD)),
        };
        // bytes ≤ body_max, so it fits usize.
        let len = bytes as usize;
        self.state = State::Body(PendingBody {
            kind,
            key: line.slice_ref(key),
            // Low 32 bits, as the servers store them (§3.1).
            flag: flag as u32,
            exptime: exptime as i32,
            noreply,
            cas,
            len,
            buffered: 0,
        });
        None
    }

    fn refuse(&mut self, refusal: Refusal, text: &'static [u8]) -> Decoded {
        let close = match refusal {
            Refusal::Discard(n) => {
                self.state = State::Discard { remaining: n + 2 };
                false
            }
            Refusal::Close => {
                self.state = State::Closed;
                true
            }
        };
        Decoded::Reply { reply: text, close }
    }
}

fn reply(text: &'static [u8]) -> Decoded {
    Decoded::Reply {
        reply: text,
        close: false,
    }
}

fn invalid_cmd() -> Decoded {
    reply(CLIENT_ERROR_INVALID_CMD)
}

/// Whether `key` may be written (set family, delete, incr), node.md §3.2: `1 ≤ len ≤ 250`,
/// first byte above 0x20 and neither `?` nor `@`, and, read as UTF-8 with invalid sequences
/// replaced by U+FFFD, no control or whitespace character.
pub fn is_valid_write_key(key: &[u8]) -> bool {
    let Some(&first) = key.first() else {
        return false;
    };
    if key.len() > MAX_WRITE_KEY_LEN || first <= 0x20 || first == b'?' || first == b'@' {
        return false;
    }
    // Invalid sequences become U+FFFD, which is neither control nor whitespace, so only the
    // valid parts need checking (and nothing is allocated).
    key.utf8_chunks().all(|chunk| {
        chunk
            .valid()
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_keys() {
        assert!(is_valid_write_key(b"abc"));
        assert!(is_valid_write_key("你好".as_bytes()));
        assert!(is_valid_write_key(b"a\xff\xfe"));
        assert!(is_valid_write_key(b"a?@"));
        assert!(is_valid_write_key(&[b'k'; 250]));
        assert!(!is_valid_write_key(&[b'k'; 251]));
        assert!(!is_valid_write_key(b""));
        assert!(!is_valid_write_key(b"a\x0f"));
        assert!(!is_valid_write_key(b"a b"));
        assert!(!is_valid_write_key(b"a\tb"));
        assert!(!is_valid_write_key(b"a\x7f"));
        assert!(!is_valid_write_key(b"?a"));
        assert!(!is_valid_write_key(b"@a"));
        assert!(!is_valid_write_key(b" a"));
        assert!(!is_valid_write_key(b"\x00a"));
        // U+0085 (NEL) is a C1 control, U+3000 ideographic space is whitespace.
        assert!(!is_valid_write_key("a\u{85}".as_bytes()));
        assert!(!is_valid_write_key("a\u{3000}".as_bytes()));
        assert!(!is_valid_write_key("a\u{2028}".as_bytes()));
    }

    #[test]
    fn skip_pending_body_discards_buffered_part() {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"set k 0 0 10\r\n0123"[..]);
        assert_eq!(d.decode(&mut buf), Decoded::NeedMore);
        assert_eq!(d.pending_body_len(), Some(4));
        assert_eq!(d.pending_body().map(|p| p.len), Some(10));
        let p = d.skip_pending_body().expect("pending");
        assert_eq!(&p.key[..], b"k");
        assert_eq!(d.pending_body_len(), None);
        assert_eq!(d.discarding(), Some(12));
        buf.extend_from_slice(b"456789\r\nget k\r\n");
        assert_eq!(
            d.decode(&mut buf),
            Decoded::Request(Command::Get {
                keys: vec![Bytes::from_static(b"k")],
                gets: false
            })
        );
        assert!(buf.is_empty());
        assert_eq!(d.skip_pending_body(), None);
    }
}
