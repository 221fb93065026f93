//! Client encoders → server decoder, and server reply writers → client decoder.

mod common;

use beansdb_protocol::client::*;
use beansdb_protocol::response;
use beansdb_protocol::{Command, Decoded, DecoderConfig, SetKind};
use bytes::{Bytes, BytesMut};
use common::{decode_all, decode_bytewise};

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn every_command() -> Vec<Command> {
    let mut cmds = vec![
        Command::Get {
            keys: vec![b(b"a")],
            gets: false,
        },
        Command::Get {
            keys: vec![
                b(b"a"),
                b("你好".as_bytes()),
                b(b"?a"),
                b(b"@0f"),
                b(b"a\tb\r"),
            ],
            gets: true,
        },
        Command::Delete {
            key: b(b"k"),
            noreply: false,
        },
        Command::Delete {
            key: b(b"k"),
            noreply: true,
        },
        Command::Incr {
            key: b(b"n"),
            delta: i64::MIN,
            noreply: false,
        },
        Command::Incr {
            key: b(b"n"),
            delta: 42,
            noreply: true,
        },
        Command::Decr {
            key: b(b"n"),
            noreply: false,
        },
        Command::Decr {
            key: b(b"n"),
            noreply: true,
        },
        Command::Stats { names: vec![] },
        Command::Stats {
            names: vec![b(b"pid"), b(b"curr_items")],
        },
        Command::Version,
        Command::Verbosity { noreply: false },
        Command::Verbosity { noreply: true },
        Command::FlushAll { noreply: false },
        Command::FlushAll { noreply: true },
        Command::OptimizeStat,
        Command::Quit,
    ];
    for kind in [
        SetKind::Set,
        SetKind::Add,
        SetKind::Replace,
        SetKind::Cas,
        SetKind::Append,
        SetKind::Prepend,
    ] {
        for noreply in [false, true] {
            cmds.push(Command::Set {
                kind,
                key: b(b"key"),
                flag: u32::MAX,
                exptime: i32::MIN,
                value: b(b"line1\r\nline2\r\nEND\r\n"),
                noreply,
                cas: if kind == SetKind::Cas { u64::MAX } else { 0 },
            });
        }
    }
    cmds.push(Command::Set {
        kind: SetKind::Set,
        key: b(b"empty"),
        flag: 0,
        exptime: -1,
        value: Bytes::new(),
        noreply: false,
        cas: 0,
    });
    cmds
}

#[test]
fn every_command_round_trips() {
    for cmd in every_command() {
        let mut out = BytesMut::new();
        encode_command(&mut out, &cmd).expect("encodable");
        let (items, rest) = decode_all(DecoderConfig::default(), &out);
        assert_eq!(items, vec![Decoded::Request(cmd.clone())], "{out:?}");
        assert!(rest.is_empty());
    }
}

#[test]
fn pipelined_commands_round_trip_bytewise() {
    let cmds = every_command();
    let mut out = BytesMut::new();
    for cmd in &cmds {
        encode_command(&mut out, cmd).expect("encodable");
    }
    let expected: Vec<Decoded> = cmds.into_iter().map(Decoded::Request).collect();
    assert_eq!(decode_all(DecoderConfig::default(), &out).0, expected);
    assert_eq!(decode_bytewise(DecoderConfig::default(), &out).0, expected);
}

#[test]
fn set_header_plus_value_equals_encode_set() {
    let mut a = Vec::new();
    encode_set(&mut a, SetKind::Set, b"k", 3, 7, b"vv", true).unwrap();
    let mut h = Vec::new();
    encode_set_header(&mut h, SetKind::Set, b"k", 3, 7, 2, true).unwrap();
    h.extend_from_slice(b"vv\r\n");
    assert_eq!(a, h);
    assert_eq!(a, b"set k 3 7 2 noreply\r\nvv\r\n");
    let mut c = Vec::new();
    encode_set(&mut c, SetKind::Cas, b"k", 0, -2, b"", false).unwrap();
    assert_eq!(c, b"cas k 0 -2 0 0\r\n\r\n");
}

#[test]
fn simple_encodings() {
    let mut out = Vec::new();
    encode_get(&mut out, &["a", "b"]).unwrap();
    encode_gets(&mut out, &[b"c".to_vec()]).unwrap();
    encode_delete(&mut out, b"d", true).unwrap();
    encode_incr(&mut out, b"e", -5, false).unwrap();
    encode_decr(&mut out, b"f", 2, true).unwrap();
    encode_stats::<_, &str>(&mut out, &[]).unwrap();
    encode_version(&mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "get a b\r\ngets c\r\ndelete d noreply\r\nincr e -5\r\ndecr f 2 noreply\r\n\
         stats\r\nversion\r\n"
    );
}

#[test]
fn reply_kind_for_command() {
    let kinds: Vec<Option<ReplyKind>> =
        every_command().iter().map(ReplyKind::for_command).collect();
    assert_eq!(kinds[0], Some(ReplyKind::Retrieval));
    assert_eq!(kinds[2], Some(ReplyKind::Delete));
    assert_eq!(kinds[3], None);
    assert_eq!(ReplyKind::for_command(&Command::Quit), None);
    assert_eq!(
        ReplyKind::for_command(&Command::OptimizeStat),
        Some(ReplyKind::Line)
    );
}

/// Decodes `input` for `kind` all at once and byte by byte; both must agree.
fn decode_reply(kind: ReplyKind, input: &[u8]) -> Result<Option<Response>, ResponseError> {
    let mut d = ResponseDecoder::new(kind);
    let mut buf = BytesMut::from(input);
    let all = d.decode(&mut buf);
    let mut d = ResponseDecoder::new(kind);
    let mut buf = BytesMut::new();
    let mut bytewise = Ok(None);
    for &byte in input {
        buf.extend_from_slice(&[byte]);
        bytewise = d.decode(&mut buf);
        if !matches!(bytewise, Ok(None)) {
            break;
        }
    }
    assert_eq!(all, bytewise, "chunking changed the reply for {input:?}");
    all
}

#[test]
fn retrieval_replies() {
    let mut out = BytesMut::new();
    response::value(&mut out, b"a", 0, b"x\r\ny", false);
    response::value(&mut out, b"@0", 0x204, b"", false);
    response::end(&mut out);
    assert_eq!(
        decode_reply(ReplyKind::Retrieval, &out),
        Ok(Some(Response::Values(vec![
            Value {
                key: b(b"a"),
                flag: 0,
                data: b(b"x\r\ny"),
                cas: None
            },
            Value {
                key: b(b"@0"),
                flag: 0x204,
                data: Bytes::new(),
                cas: None
            },
        ])))
    );
    let mut out = BytesMut::new();
    response::value(&mut out, b"a", 1, b"v", true);
    response::end(&mut out);
    assert_eq!(
        decode_reply(ReplyKind::Retrieval, &out),
        Ok(Some(Response::Values(vec![Value {
            key: b(b"a"),
            flag: 1,
            data: b(b"v"),
            cas: Some(0)
        }])))
    );
    assert_eq!(
        decode_reply(ReplyKind::Retrieval, b"END\r\n"),
        Ok(Some(Response::Values(vec![])))
    );
    assert_eq!(
        decode_reply(ReplyKind::Retrieval, b"SERVER_ERROR bad key ?\r\n"),
        Ok(Some(Response::Error {
            kind: ErrorKind::Server,
            msg: b(b"bad key ?")
        }))
    );
    assert_eq!(
        decode_reply(ReplyKind::Retrieval, b"CLIENT_ERROR key length error\r\n"),
        Ok(Some(Response::Error {
            kind: ErrorKind::Client,
            msg: b(b"key length error")
        }))
    );
}

#[test]
fn status_replies() {
    let cases: &[(ReplyKind, &[u8], Response)] = &[
        (ReplyKind::Storage, response::STORED, Response::Stored),
        (
            ReplyKind::Storage,
            response::NOT_STORED,
            Response::NotStored,
        ),
        (ReplyKind::Storage, response::EXISTS, Response::Exists),
        (ReplyKind::Storage, response::NOT_FOUND, Response::NotFound),
        (ReplyKind::Delete, response::DELETED, Response::Deleted),
        (ReplyKind::Delete, response::NOT_FOUND, Response::NotFound),
        (ReplyKind::Incr, b"15\r\n", Response::Number(15)),
        (
            ReplyKind::Incr,
            b"-9223372036854775808\r\n",
            Response::Number(i64::MIN),
        ),
        (ReplyKind::Ok, response::OK, Response::Ok),
        (
            ReplyKind::Version,
            b"VERSION 2.1.0.18-rs.0.1.0\r\n",
            Response::Version(Bytes::from_static(b"2.1.0.18-rs.0.1.0")),
        ),
        (
            ReplyKind::Line,
            response::RUNNING,
            Response::Line(Bytes::from_static(b"running")),
        ),
        (
            ReplyKind::Storage,
            response::SERVER_ERROR_NOT_SUPPORT,
            Response::Error {
                kind: ErrorKind::Server,
                msg: Bytes::from_static(b"operation not support"),
            },
        ),
        (
            ReplyKind::Incr,
            response::ERROR,
            Response::Error {
                kind: ErrorKind::Error,
                msg: Bytes::new(),
            },
        ),
    ];
    for (kind, bytes, expected) in cases {
        assert_eq!(
            decode_reply(*kind, bytes),
            Ok(Some(expected.clone())),
            "{kind:?} {bytes:?}"
        );
    }
    let mut out = Vec::new();
    response::number(&mut out, -7);
    assert_eq!(
        decode_reply(ReplyKind::Incr, &out),
        Ok(Some(Response::Number(-7)))
    );
}

#[test]
fn stats_replies() {
    let mut out = BytesMut::new();
    response::stat(&mut out, b"pid", 123);
    response::stat(&mut out, b"version", "2.1.0.18-rs.0.1.0");
    response::stat(&mut out, b"rusage_user", "0 1");
    response::end(&mut out);
    assert_eq!(
        decode_reply(ReplyKind::Stats, &out),
        Ok(Some(Response::Stats(vec![
            (b(b"pid"), b(b"123")),
            (b(b"version"), b(b"2.1.0.18-rs.0.1.0")),
            (b(b"rusage_user"), b(b"0 1")),
        ])))
    );
}

#[test]
fn malformed_replies_are_errors() {
    let cases: &[(ReplyKind, &[u8])] = &[
        (ReplyKind::Retrieval, b"VALUE k 0\r\n"),
        (ReplyKind::Retrieval, b"VALUE k x 1\r\n"),
        (ReplyKind::Retrieval, b"VALUE k -1 1\r\n"),
        (ReplyKind::Retrieval, b"VALUE k 4294967296 1\r\n"),
        (ReplyKind::Retrieval, b"VALUE k 0 -1\r\n"),
        (ReplyKind::Retrieval, b"VALUE k 0 1 x\r\n"),
        (ReplyKind::Retrieval, b"VALUE k 0 1 0 0\r\n"),
        (ReplyKind::Retrieval, b"VALUE k 0 1\r\nab\r\n"),
        (ReplyKind::Retrieval, b"VALUE k 0 99999999999\r\n"),
        (ReplyKind::Retrieval, b"END \r\n"),
        (ReplyKind::Retrieval, b"STORED\r\n"),
        (ReplyKind::Retrieval, b"END\n"),
        (ReplyKind::Storage, b"STORED\n"),
        (ReplyKind::Storage, b"stored\r\n"),
        (ReplyKind::Storage, b"\r\n"),
        (ReplyKind::Storage, b"DELETED\r\n"),
        (ReplyKind::Delete, b"STORED\r\n"),
        (ReplyKind::Incr, b"1.5\r\n"),
        (ReplyKind::Incr, b"99999999999999999999\r\n"),
        (ReplyKind::Stats, b"STAT pid\r\n"),
        (ReplyKind::Stats, b"VALUE a 0 0\r\n"),
        (ReplyKind::Version, b"VERSION\r\n"),
        (ReplyKind::Ok, b"OK OK\r\n"),
        (ReplyKind::Storage, b"\x00\xff garbage\r\n"),
    ];
    for (kind, bytes) in cases {
        assert!(
            decode_reply(*kind, bytes).is_err(),
            "{kind:?} {:?} accepted",
            String::from_utf8_lossy(bytes)
        );
    }
    // Over-long line without a terminator.
    let mut d = ResponseDecoder::with_limits(ReplyKind::Storage, 1 << 20, 32);
    let mut buf = BytesMut::from(&[b'S'; 40][..]);
    assert_eq!(d.decode(&mut buf), Err(ResponseError::LineTooLong(32)));
    // Value over the configured limit.
    let mut d = ResponseDecoder::with_limits(ReplyKind::Retrieval, 10, 1024);
    let mut buf = BytesMut::from(&b"VALUE k 0 11\r\n"[..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(ResponseError::ValueTooLarge { len: 11, max: 10 })
    );
}

#[test]
fn ten_mib_value_in_small_pieces() {
    let len = 10 << 20;
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let mut out = BytesMut::new();
    response::value(&mut out, b"big", 5, &data, false);
    response::value(&mut out, b"small", 6, b"s", false);
    response::end(&mut out);
    out.extend_from_slice(b"STORED\r\n");

    let mut d = ResponseDecoder::new(ReplyKind::Retrieval);
    let mut buf = BytesMut::new();
    let mut got = None;
    let mut pending_seen = false;
    let mut pieces = out.chunks(997);
    for piece in pieces.by_ref() {
        buf.extend_from_slice(piece);
        match d.decode(&mut buf) {
            Ok(None) => pending_seen |= d.pending_value_len() == Some(len),
            Ok(Some(resp)) => {
                got = Some(resp);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(pending_seen);
    let Some(Response::Values(values)) = got else {
        panic!("no values: {got:?}");
    };
    assert_eq!(values.len(), 2);
    assert_eq!(&values[0].key[..], b"big");
    assert_eq!(values[0].flag, 5);
    assert!(values[0].data == data);
    assert_eq!(&values[1].data[..], b"s");
    assert!(d.is_idle());
    // The next reply on the same connection continues from the leftover bytes.
    d.expect(ReplyKind::Storage);
    for piece in pieces {
        buf.extend_from_slice(piece);
    }
    assert_eq!(d.decode(&mut buf), Ok(Some(Response::Stored)));
    assert!(buf.is_empty());
}
