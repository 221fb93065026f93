//! Client side: request encoders and an incremental reply decoder (proxy.md §5, tools).
//!
//! Encoders append to any [`BufMut`] and refuse keys that would break the line framing.
//! [`ResponseDecoder`] parses the reply to one request of a known [`ReplyKind`], validating
//! it strictly: anything unexpected is a [`ResponseError`] (the connection should then be
//! closed), never a panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::line::{scan, LineScan};
use crate::request::{Command, SetKind};
use crate::{parse_i64, parse_u64, put_i64, put_u64, tokens, DISCARD_LIMIT};

/// A request that cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a retrieval needs at least one key")]
    NoKeys,
    /// Empty, or containing a space or `\n`: the server would split or cut the line there.
    #[error("key {0:?} cannot be sent on a command line")]
    BadKey(String),
}

fn check_token(key: &[u8]) -> Result<(), EncodeError> {
    if key.is_empty() || key.iter().any(|&b| b == b' ' || b == b'\n') {
        return Err(EncodeError::BadKey(
            String::from_utf8_lossy(preview(key)).into_owned(),
        ));
    }
    Ok(())
}

fn preview(bytes: &[u8]) -> &[u8] {
    bytes.get(..64).unwrap_or(bytes)
}

fn put_noreply<B: BufMut>(out: &mut B, noreply: bool) {
    if noreply {
        out.put_slice(b" noreply");
    }
    out.put_slice(b"\r\n");
}

/// `get <k1> <k2> …\r\n`.
pub fn encode_get<B: BufMut, K: AsRef<[u8]>>(out: &mut B, keys: &[K]) -> Result<(), EncodeError> {
    encode_retrieval(out, b"get", keys)
}

/// `gets <k1> <k2> …\r\n`.
pub fn encode_gets<B: BufMut, K: AsRef<[u8]>>(out: &mut B, keys: &[K]) -> Result<(), EncodeError> {
    encode_retrieval(out, b"gets", keys)
}

fn encode_retrieval<B: BufMut, K: AsRef<[u8]>>(
    out: &mut B,
    cmd: &[u8],
    keys: &[K],
) -> Result<(), EncodeError> {
    if keys.is_empty() {
        return Err(EncodeError::NoKeys);
    }
    // Check everything first so that nothing is written on error.
    for k in keys {
        check_token(k.as_ref())?;
    }
    out.put_slice(cmd);
    for k in keys {
        out.put_u8(b' ');
        out.put_slice(k.as_ref());
    }
    out.put_slice(b"\r\n");
    Ok(())
}

/// The command line of a storage request, without the body: `set <key> <flag> <exptime>
/// <len>[ <cas>][ noreply]\r\n`. For callers that send the value with a vectored write; the
/// value and `\r\n` must follow. `cas` sends cas 0 (beansdb ignores it).
pub fn encode_set_header<B: BufMut>(
    out: &mut B,
    kind: SetKind,
    key: &[u8],
    flag: u32,
    exptime: i32,
    len: usize,
    noreply: bool,
) -> Result<(), EncodeError> {
    encode_set_header_cas(out, kind, key, flag, exptime, len, noreply, 0)
}

/// [`encode_set_header`] with the unique value a `cas` command carries.
#[allow(clippy::too_many_arguments)]
pub fn encode_set_header_cas<B: BufMut>(
    out: &mut B,
    kind: SetKind,
    key: &[u8],
    flag: u32,
    exptime: i32,
    len: usize,
    noreply: bool,
    cas: u64,
) -> Result<(), EncodeError> {
    check_token(key)?;
    out.put_slice(kind.name().as_bytes());
    out.put_u8(b' ');
    out.put_slice(key);
    out.put_u8(b' ');
    put_u64(out, u64::from(flag));
    out.put_u8(b' ');
    put_i64(out, i64::from(exptime));
    out.put_u8(b' ');
    put_u64(out, len as u64);
    if kind == SetKind::Cas {
        out.put_u8(b' ');
        put_u64(out, cas);
    }
    put_noreply(out, noreply);
    Ok(())
}

/// A complete storage request: header line, value, `\r\n`.
pub fn encode_set<B: BufMut>(
    out: &mut B,
    kind: SetKind,
    key: &[u8],
    flag: u32,
    exptime: i32,
    value: &[u8],
    noreply: bool,
) -> Result<(), EncodeError> {
    encode_set_header(out, kind, key, flag, exptime, value.len(), noreply)?;
    out.put_slice(value);
    out.put_slice(b"\r\n");
    Ok(())
}

/// `delete <key>[ noreply]\r\n`.
pub fn encode_delete<B: BufMut>(out: &mut B, key: &[u8], noreply: bool) -> Result<(), EncodeError> {
    check_token(key)?;
    out.put_slice(b"delete ");
    out.put_slice(key);
    put_noreply(out, noreply);
    Ok(())
}

/// `incr <key> <delta>[ noreply]\r\n`.
pub fn encode_incr<B: BufMut>(
    out: &mut B,
    key: &[u8],
    delta: i64,
    noreply: bool,
) -> Result<(), EncodeError> {
    encode_arith(out, b"incr ", key, delta, noreply)
}

/// `decr <key> <delta>[ noreply]\r\n`.
pub fn encode_decr<B: BufMut>(
    out: &mut B,
    key: &[u8],
    delta: i64,
    noreply: bool,
) -> Result<(), EncodeError> {
    encode_arith(out, b"decr ", key, delta, noreply)
}

fn encode_arith<B: BufMut>(
    out: &mut B,
    cmd: &[u8],
    key: &[u8],
    delta: i64,
    noreply: bool,
) -> Result<(), EncodeError> {
    check_token(key)?;
    out.put_slice(cmd);
    out.put_slice(key);
    out.put_u8(b' ');
    put_i64(out, delta);
    put_noreply(out, noreply);
    Ok(())
}

/// `stats[ <name> …]\r\n`.
pub fn encode_stats<B: BufMut, N: AsRef<[u8]>>(
    out: &mut B,
    names: &[N],
) -> Result<(), EncodeError> {
    for n in names {
        check_token(n.as_ref())?;
    }
    out.put_slice(b"stats");
    for n in names {
        out.put_u8(b' ');
        out.put_slice(n.as_ref());
    }
    out.put_slice(b"\r\n");
    Ok(())
}

/// `version\r\n` (also the proxy's health probe).
pub fn encode_version<B: BufMut>(out: &mut B) {
    out.put_slice(b"version\r\n");
}

/// Encodes any [`Command`]; decoding the output gives the same command back (a `decr`
/// carries delta 1).
pub fn encode_command<B: BufMut>(out: &mut B, cmd: &Command) -> Result<(), EncodeError> {
    match cmd {
        Command::Get { keys, gets: false } => encode_get(out, keys),
        Command::Get { keys, gets: true } => encode_gets(out, keys),
        Command::Set {
            kind,
            key,
            flag,
            exptime,
            value,
            noreply,
            cas,
        } => {
            encode_set_header_cas(
                out,
                *kind,
                key,
                *flag,
                *exptime,
                value.len(),
                *noreply,
                *cas,
            )?;
            out.put_slice(value);
            out.put_slice(b"\r\n");
            Ok(())
        }
        Command::Delete { key, noreply } => encode_delete(out, key, *noreply),
        Command::Incr {
            key,
            delta,
            noreply,
        } => encode_incr(out, key, *delta, *noreply),
        Command::Decr { key, noreply } => encode_decr(out, key, 1, *noreply),
        Command::Stats { names } => encode_stats(out, names),
        Command::Version => {
            encode_version(out);
            Ok(())
        }
        Command::Verbosity { noreply } => {
            out.put_slice(b"verbosity");
            put_noreply(out, *noreply);
            Ok(())
        }
        Command::FlushAll { noreply } => {
            out.put_slice(b"flush_all");
            put_noreply(out, *noreply);
            Ok(())
        }
        Command::OptimizeStat => {
            out.put_slice(b"optimize_stat\r\n");
            Ok(())
        }
        Command::Quit => {
            out.put_slice(b"quit\r\n");
            Ok(())
        }
    }
}

/// Which reply a request expects; decides the lines [`ResponseDecoder`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    /// `get`/`gets`: `VALUE` blocks then `END`.
    Retrieval,
    /// Set family: `STORED`, `NOT_STORED`, `EXISTS`, `NOT_FOUND`.
    Storage,
    /// `DELETED`, `NOT_FOUND`.
    Delete,
    /// A decimal number, or `NOT_FOUND`.
    Incr,
    /// `STAT` lines then `END`.
    Stats,
    /// `VERSION <v>`.
    Version,
    /// `OK` (`flush_all`, `verbosity`).
    Ok,
    /// Any single line (`optimize_stat`: `running`/`none`).
    Line,
}

impl ReplyKind {
    /// The reply a server sends to `cmd`; `None` when it sends none (`noreply`, `quit`).
    pub fn for_command(cmd: &Command) -> Option<ReplyKind> {
        if cmd.noreply() {
            return None;
        }
        Some(match cmd {
            Command::Get { .. } => ReplyKind::Retrieval,
            Command::Set { .. } => ReplyKind::Storage,
            Command::Delete { .. } => ReplyKind::Delete,
            Command::Incr { .. } | Command::Decr { .. } => ReplyKind::Incr,
            Command::Stats { .. } => ReplyKind::Stats,
            Command::Version => ReplyKind::Version,
            Command::Verbosity { .. } | Command::FlushAll { .. } => ReplyKind::Ok,
            Command::OptimizeStat => ReplyKind::Line,
            Command::Quit => return None,
        })
    }
}

/// One `VALUE` block of a retrieval reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub key: Bytes,
    pub flag: u32,
    pub data: Bytes,
    /// Present when the server sent the 5th `VALUE` token (`gets`).
    pub cas: Option<u64>,
}

/// Which error line a server sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `ERROR` (unknown command).
    Error,
    /// `CLIENT_ERROR <msg>`.
    Client,
    /// `SERVER_ERROR <msg>`.
    Server,
}

/// A complete, well-formed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Hits in the order received (empty for `END` alone).
    Values(Vec<Value>),
    Stored,
    NotStored,
    Exists,
    NotFound,
    Deleted,
    /// `incr` result (beansdb counters are i64 and may be negative).
    Number(i64),
    /// `(name, value)` pairs in order; the value is the rest of the line after the name.
    Stats(Vec<(Bytes, Bytes)>),
    Version(Bytes),
    Ok,
    /// The line of a [`ReplyKind::Line`] reply, without `\r\n`.
    Line(Bytes),
    /// `ERROR`, `CLIENT_ERROR …`, `SERVER_ERROR …`: valid for every request kind. `msg` is the
    /// text after the first space (empty if none).
    Error {
        kind: ErrorKind,
        msg: Bytes,
    },
}

/// A malformed or unexpected reply. The stream can no longer be trusted: close it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("reply line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("reply line ends with a bare \\n")]
    BareNewline,
    #[error("malformed VALUE line {0:?}")]
    BadValueLine(String),
    #[error("value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge { len: u64, max: usize },
    #[error("value data not followed by \\r\\n")]
    BadDataTerminator,
    #[error("malformed STAT line {0:?}")]
    BadStatLine(String),
    #[error("unexpected reply {0:?}")]
    Unexpected(String),
    #[error("the decoder already failed; the connection must be closed")]
    Poisoned,
}

fn lossy(line: &[u8]) -> String {
    String::from_utf8_lossy(preview(line)).into_owned()
}

#[derive(Debug)]
enum RState {
    Line {
        scanned: usize,
    },
    Data {
        key: Bytes,
        flag: u32,
        cas: Option<u64>,
        len: usize,
    },
    Failed,
}

/// Incremental decoder of the reply to one request at a time.
///
/// Call [`ResponseDecoder::expect`] before each request, then feed the connection's buffer to
/// [`ResponseDecoder::decode`] until it yields the reply. Value data is awaited without
/// rescanning, so a 10 MiB value arriving in small reads costs O(size) overall.
#[derive(Debug)]
pub struct ResponseDecoder {
    kind: ReplyKind,
    max_value: usize,
    max_line: usize,
    state: RState,
    values: Vec<Value>,
    stats: Vec<(Bytes, Bytes)>,
}

/// Default longest reply line (VALUE header, STAT, error text).
pub const DEFAULT_MAX_REPLY_LINE: usize = 64 << 10;

impl ResponseDecoder {
    /// A decoder for replies of `kind`, accepting values up to 1 GiB.
    pub fn new(kind: ReplyKind) -> ResponseDecoder {
        ResponseDecoder::with_limits(kind, DISCARD_LIMIT, DEFAULT_MAX_REPLY_LINE)
    }

    /// `max_value`: largest accepted value; `max_line`: longest reply line without `\r\n`.
    pub fn with_limits(kind: ReplyKind, max_value: usize, max_line: usize) -> ResponseDecoder {
        ResponseDecoder {
            kind,
            max_value,
            max_line,
            state: RState::Line { scanned: 0 },
            values: Vec::new(),
            stats: Vec::new(),
        }
    }

    /// Prepares for the reply to the next request, dropping any partial reply and a failure.
    pub fn expect(&mut self, kind: ReplyKind) {
        self.kind = kind;
        self.state = RState::Line { scanned: 0 };
        self.values.clear();
        self.stats.clear();
    }

    pub fn kind(&self) -> ReplyKind {
        self.kind
    }

    /// True when no part of a reply has been consumed since the last complete one.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, RState::Line { .. }) && self.values.is_empty() && self.stats.is_empty()
    }

    /// Announced length of the value whose data is being awaited.
    pub fn pending_value_len(&self) -> Option<usize> {
        match self.state {
            RState::Data { len, .. } => Some(len),
            _ => None,
        }
    }

    /// Consumes reply bytes from the front of `buf`. `Ok(None)`: need more bytes.
    /// After an error every further call fails with [`ResponseError::Poisoned`].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Response>, ResponseError> {
        let result = self.decode_inner(buf);
        if result.is_err() {
            self.state = RState::Failed;
            self.values.clear();
            self.stats.clear();
        }
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Response>, ResponseError> {
        loop {
            match std::mem::replace(&mut self.state, RState::Failed) {
                RState::Failed => return Err(ResponseError::Poisoned),
                RState::Data {
                    key,
                    flag,
                    cas,
                    len,
                } => {
                    if buf.len() < len.saturating_add(2) {
                        self.state = RState::Data {
                            key,
                            flag,
                            cas,
                            len,
                        };
                        return Ok(None);
                    }
                    let data = buf.split_to(len).freeze();
                    if buf.get(..2) != Some(&b"\r\n"[..]) {
                        return Err(ResponseError::BadDataTerminator);
                    }
                    buf.advance(2);
                    self.values.push(Value {
                        key,
                        flag,
                        data,
                        cas,
                    });
                    self.state = RState::Line { scanned: 0 };
                }
                RState::Line { mut scanned } => match scan(buf, &mut scanned, self.max_line) {
                    LineScan::NeedMore => {
                        self.state = RState::Line { scanned };
                        return Ok(None);
                    }
                    LineScan::TooLong => return Err(ResponseError::LineTooLong(self.max_line)),
                    LineScan::Found { newline, crlf } => {
                        if !crlf {
                            return Err(ResponseError::BareNewline);
                        }
                        let mut line = buf.split_to(newline + 1).freeze();
                        line.truncate(newline - 1);
                        self.state = RState::Line { scanned: 0 };
                        if let Some(resp) = self.on_line(line)? {
                            return Ok(Some(resp));
                        }
                    }
                },
            }
        }
    }

    /// Handles one complete reply line; `Ok(None)` when the reply continues.
    fn on_line(&mut self, line: Bytes) -> Result<Option<Response>, ResponseError> {
        let (word, rest) = match memchr::memchr(b' ', &line) {
            Some(sp) => (line.slice(..sp), line.slice(sp + 1..)),
            None => (line.clone(), Bytes::new()),
        };
        let error = match &word[..] {
            b"ERROR" => Some(ErrorKind::Error),
            b"CLIENT_ERROR" => Some(ErrorKind::Client),
            b"SERVER_ERROR" => Some(ErrorKind::Server),
            _ => None,
        };
        if let Some(kind) = error {
            self.values.clear();
            self.stats.clear();
            return Ok(Some(Response::Error { kind, msg: rest }));
        }
        let unexpected = || Err(ResponseError::Unexpected(lossy(&line)));
        let resp = match self.kind {
            ReplyKind::Retrieval => match &line[..] {
                b"END" => Response::Values(std::mem::take(&mut self.values)),
                _ if &word[..] == b"VALUE" => {
                    self.start_value(&line)?;
                    return Ok(None);
                }
                _ => return unexpected(),
            },
            ReplyKind::Stats => match &line[..] {
                b"END" => Response::Stats(std::mem::take(&mut self.stats)),
                _ if &word[..] == b"STAT" => {
                    let rest = trim_start_spaces(rest);
                    let Some(sp) = memchr::memchr(b' ', &rest) else {
                        return Err(ResponseError::BadStatLine(lossy(&line)));
                    };
                    let name = rest.slice(..sp);
                    let value = trim_start_spaces(rest.slice(sp + 1..));
                    if value.is_empty() {
                        return Err(ResponseError::BadStatLine(lossy(&line)));
                    }
                    self.stats.push((name, value));
                    return Ok(None);
                }
                _ => return unexpected(),
            },
            ReplyKind::Storage => match &line[..] {
                b"STORED" => Response::Stored,
                b"NOT_STORED" => Response::NotStored,
                b"EXISTS" => Response::Exists,
                b"NOT_FOUND" => Response::NotFound,
                _ => return unexpected(),
            },
            ReplyKind::Delete => match &line[..] {
                b"DELETED" => Response::Deleted,
                b"NOT_FOUND" => Response::NotFound,
                _ => return unexpected(),
            },
            ReplyKind::Incr => match &line[..] {
                b"NOT_FOUND" => Response::NotFound,
                digits => match parse_i64(digits) {
                    Some(n) => Response::Number(n),
                    None => return unexpected(),
                },
            },
            ReplyKind::Version if &word[..] == b"VERSION" && !rest.is_empty() => {
                Response::Version(rest)
            }
            ReplyKind::Ok if &line[..] == b"OK" => Response::Ok,
            ReplyKind::Line => Response::Line(line.clone()),
            ReplyKind::Version | ReplyKind::Ok => return unexpected(),
        };
        Ok(Some(resp))
    }

    /// `VALUE <key> <flag> <bytes> [<cas>]`.
    fn start_value(&mut self, line: &Bytes) -> Result<(), ResponseError> {
        let bad = || ResponseError::BadValueLine(lossy(line));
        let toks: Vec<&[u8]> = tokens(line).collect();
        let (key, flag, len, cas) = match toks.as_slice() {
            [_, key, flag, len] => (key, flag, len, None),
            [_, key, flag, len, cas] => (key, flag, len, Some(parse_u64(cas).ok_or_else(bad)?)),
            _ => return Err(bad()),
        };
        let flag = parse_u64(flag)
            .and_then(|f| u32::try_from(f).ok())
            .ok_or_else(bad)?;
        let len = parse_u64(len).ok_or_else(bad)?;
        if len > self.max_value as u64 {
            return Err(ResponseError::ValueTooLarge {
                len,
                max: self.max_value,
            });
        }
        self.state = RState::Data {
            key: line.slice_ref(key),
            flag,
            cas,
            // len ≤ max_value, a usize.
            len: len as usize,
        };
        Ok(())
    }
}

fn trim_start_spaces(b: Bytes) -> Bytes {
    let skip = b.iter().take_while(|&&c| c == b' ').count();
    b.slice(skip..)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(kind: ReplyKind, bytes: &[u8]) -> Result<Option<Response>, ResponseError> {
        let mut d = ResponseDecoder::new(kind);
        let mut buf = BytesMut::from(bytes);
        d.decode(&mut buf)
    }

    #[test]
    fn error_lines() {
        assert_eq!(
            decode_all(ReplyKind::Storage, b"SERVER_ERROR bucket not served\r\n"),
            Ok(Some(Response::Error {
                kind: ErrorKind::Server,
                msg: Bytes::from_static(b"bucket not served")
            }))
        );
        assert_eq!(
            decode_all(ReplyKind::Retrieval, b"ERROR\r\n"),
            Ok(Some(Response::Error {
                kind: ErrorKind::Error,
                msg: Bytes::new()
            }))
        );
    }

    #[test]
    fn status_sets_are_per_kind() {
        assert_eq!(
            decode_all(ReplyKind::Delete, b"DELETED\r\n"),
            Ok(Some(Response::Deleted))
        );
        assert!(decode_all(ReplyKind::Storage, b"DELETED\r\n").is_err());
        assert!(decode_all(ReplyKind::Delete, b"STORED\r\n").is_err());
        assert_eq!(
            decode_all(ReplyKind::Incr, b"-15\r\n"),
            Ok(Some(Response::Number(-15)))
        );
        assert!(decode_all(ReplyKind::Incr, b"1x\r\n").is_err());
        assert_eq!(
            decode_all(ReplyKind::Line, b"running\r\n"),
            Ok(Some(Response::Line(Bytes::from_static(b"running"))))
        );
    }

    #[test]
    fn poisoned_after_error() {
        let mut d = ResponseDecoder::new(ReplyKind::Storage);
        let mut buf = BytesMut::from(&b"WHAT\r\nSTORED\r\n"[..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(ResponseError::Unexpected(_))
        ));
        assert_eq!(d.decode(&mut buf), Err(ResponseError::Poisoned));
        d.expect(ReplyKind::Storage);
        assert_eq!(d.decode(&mut buf), Ok(Some(Response::Stored)));
    }

    #[test]
    fn encoders_refuse_bad_keys() {
        let mut out = Vec::new();
        assert_eq!(
            encode_get::<_, &[u8]>(&mut out, &[]),
            Err(EncodeError::NoKeys)
        );
        assert!(encode_get(&mut out, &[&b"a"[..], b"b c"]).is_err());
        assert!(encode_delete(&mut out, b"a\nb", false).is_err());
        assert!(encode_set(&mut out, SetKind::Set, b"", 0, 0, b"v", false).is_err());
        assert!(out.is_empty());
    }
}
