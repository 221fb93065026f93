use beansdb_protocol::client::{
    encode_delete, encode_get, encode_gets, encode_incr, encode_set, encode_stats, encode_version,
};
use beansdb_protocol::{EncodeError, ReplyKind, SetKind};
use bytes::{BufMut, BytesMut};

/// One request, borrowing its keys and value.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    /// `get k1 k2 …` (at least one key).
    Get {
        keys: &'a [&'a [u8]],
    },
    /// `gets k1 k2 …`.
    Gets {
        keys: &'a [&'a [u8]],
    },
    /// A storage command. beansdb reads `exptime` as the record version (node.md §3.7).
    Set {
        kind: SetKind,
        key: &'a [u8],
        flag: u32,
        exptime: i32,
        value: &'a [u8],
        noreply: bool,
    },
    Delete {
        key: &'a [u8],
        noreply: bool,
    },
    Incr {
        key: &'a [u8],
        delta: i64,
        noreply: bool,
    },
    Stats {
        names: &'a [&'a [u8]],
    },
    Version,
    /// Bytes sent as they are (must be complete requests). `reply` is what the server answers,
    /// `None` when it answers nothing (`noreply`, `quit`).
    Raw {
        bytes: &'a [u8],
        reply: Option<ReplyKind>,
    },
}

impl Request<'_> {
    /// Appends the request to `out` and returns the reply it expects (`None`: no reply).
    /// Nothing is appended on error.
    pub fn encode(&self, out: &mut BytesMut) -> Result<Option<ReplyKind>, EncodeError> {
        match *self {
            Request::Get { keys } => {
                encode_get(out, keys)?;
                Ok(Some(ReplyKind::Retrieval))
            }
            Request::Gets { keys } => {
                encode_gets(out, keys)?;
                Ok(Some(ReplyKind::Retrieval))
            }
            Request::Set {
                kind,
                key,
                flag,
                exptime,
                value,
                noreply,
            } => {
                // One reservation instead of growing through a large value.
                out.reserve(key.len() + value.len() + 64);
                encode_set(out, kind, key, flag, exptime, value, noreply)?;
                Ok((!noreply).then_some(ReplyKind::Storage))
            }
            Request::Delete { key, noreply } => {
                encode_delete(out, key, noreply)?;
                Ok((!noreply).then_some(ReplyKind::Delete))
            }
            Request::Incr {
                key,
                delta,
                noreply,
            } => {
                encode_incr(out, key, delta, noreply)?;
                Ok((!noreply).then_some(ReplyKind::Incr))
            }
            Request::Stats { names } => {
                encode_stats(out, names)?;
                Ok(Some(ReplyKind::Stats))
            }
            Request::Version => {
                encode_version(out);
                Ok(Some(ReplyKind::Version))
            }
            Request::Raw { bytes, reply } => {
                out.put_slice(bytes);
                Ok(reply)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: Request<'_>) -> (Result<Option<ReplyKind>, EncodeError>, Vec<u8>) {
        let mut b = BytesMut::new();
        let k = r.encode(&mut b);
        (k, b.to_vec())
    }

    #[test]
    fn encodings_and_reply_kinds() {
        let keys: [&[u8]; 2] = [b"a", b"b"];
        assert_eq!(
            enc(Request::Get { keys: &keys }),
            (Ok(Some(ReplyKind::Retrieval)), b"get a b\r\n".to_vec())
        );
        let set = Request::Set {
            kind: SetKind::Set,
            key: b"k",
            flag: 3,
            exptime: -1,
            value: b"xy",
            noreply: false,
        };
        assert_eq!(
            enc(set),
            (
                Ok(Some(ReplyKind::Storage)),
                b"set k 3 -1 2\r\nxy\r\n".to_vec()
            )
        );
        assert_eq!(
            enc(Request::Delete {
                key: b"k",
                noreply: true
            }),
            (Ok(None), b"delete k noreply\r\n".to_vec())
        );
        assert_eq!(
            enc(Request::Incr {
                key: b"c",
                delta: 5,
                noreply: false
            }),
            (Ok(Some(ReplyKind::Incr)), b"incr c 5\r\n".to_vec())
        );
        assert_eq!(
            enc(Request::Stats { names: &[] }),
            (Ok(Some(ReplyKind::Stats)), b"stats\r\n".to_vec())
        );
        assert_eq!(
            enc(Request::Version),
            (Ok(Some(ReplyKind::Version)), b"version\r\n".to_vec())
        );
        assert_eq!(
            enc(Request::Raw {
                bytes: b"quit\r\n",
                reply: None
            }),
            (Ok(None), b"quit\r\n".to_vec())
        );
    }

    #[test]
    fn bad_keys_write_nothing() {
        let keys: [&[u8]; 2] = [b"ok", b"not ok"];
        let (r, bytes) = enc(Request::Get { keys: &keys });
        assert!(r.is_err());
        assert!(bytes.is_empty());
        let (r, bytes) = enc(Request::Get { keys: &[] });
        assert_eq!(r, Err(EncodeError::NoKeys));
        assert!(bytes.is_empty());
    }
}
