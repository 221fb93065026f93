//! Property tests: arbitrary input in arbitrary chunkings never panics, never consumes more
//! than it was given, and decodes to the same sequence as when fed all at once.

mod common;

use beansdb_protocol::client::*;
use beansdb_protocol::response;
use beansdb_protocol::{Command, Decoded, DecoderConfig, RequestDecoder, SetKind};
use bytes::{Bytes, BytesMut};
use common::decode_chunked;
use proptest::prelude::*;

/// Small limits so that random input reaches every limit path.
fn small_config() -> DecoderConfig {
    DecoderConfig {
        max_key_len: 6,
        body_max: 24,
        max_line: 48,
    }
}

/// Protocol-looking fragments mixed with raw bytes, so that random streams exercise real
/// commands, bodies, refusals and framing errors rather than only `ERROR`.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(vec![
            &b"get "[..], b"gets ", b"set ", b"cas ", b"append ", b"delete ", b"incr ",
            b"decr ", b"stats", b"version", b"quit", b"flush_all ", b"verbosity ",
            b"optimize_stat", b"noreply", b" ", b"  ", b"\r\n", b"\n", b"\r", b"0 ", b"1 ",
            b"-1 ", b"3 ", b"24 ", b"25 ", b"99999999999 ", b"1073741824 ", b"k ", b"abc ",
            b"x\r\n", b"abc\r\n", b"set k 0 0 3\r\n", b"set k 0 0 30\r\n", b"get k\r\n",
            b"set k x 0 4\r\n", b"incr k 1\r\n", b"\x00\xff",
            b"set k 0 0 3\r\nabc\r\n", b"set k 1 2 0 noreply\r\n\r\n",
            b"cas k 0 0 2 5\r\nab\r\n", b"set k 0 0 2\r\n\r\n\r\n",
            b"prepend k 0 0 1\r\n\n\r\n", b"set k 0 0 3\r\nget k\r\n",
        ])
        .prop_map(|s| s.to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn stream() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(fragment(), 0..40).prop_map(|v| v.concat())
}

fn chunking() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..20, 1..10)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn request_chunking_invariant(input in stream(), chunks in chunking()) {
        for config in [small_config(), DecoderConfig::default()] {
            let (all, rest_all) = decode_chunked(config, &input, &[usize::MAX]);
            let (parts, rest_parts) = decode_chunked(config, &input, &chunks);
            prop_assert_eq!(&all, &parts);
            if !matches!(all.last(), Some(Decoded::Reply { close: true, .. })) {
                prop_assert_eq!(rest_all, rest_parts);
            }
        }
    }

    #[test]
    fn request_random_bytes(input in prop::collection::vec(any::<u8>(), 0..400),
                            chunks in chunking()) {
        let (all, _) = decode_chunked(small_config(), &input, &[usize::MAX]);
        let (parts, _) = decode_chunked(small_config(), &input, &chunks);
        prop_assert_eq!(all, parts);
    }

    #[test]
    fn encoded_commands_round_trip(cmds in prop::collection::vec(command(), 1..20),
                                   chunks in chunking()) {
        let mut out = BytesMut::new();
        for c in &cmds {
            encode_command(&mut out, c).expect("generated commands are encodable");
        }
        let expected: Vec<Decoded> = cmds.into_iter().map(Decoded::Request).collect();
        let (items, rest) = decode_chunked(DecoderConfig::default(), &out, &chunks);
        prop_assert_eq!(items, expected);
        prop_assert!(rest.is_empty());
    }

    #[test]
    fn response_random_bytes(input in prop::collection::vec(any::<u8>(), 0..400),
                             kind in reply_kind(), chunks in chunking()) {
        prop_assert_eq!(
            decode_responses(kind, &input, &[usize::MAX]),
            decode_responses(kind, &input, &chunks)
        );
    }

    #[test]
    fn response_fragments(input in reply_stream(), kind in reply_kind(),
                          chunks in chunking()) {
        prop_assert_eq!(
            decode_responses(kind, &input, &[usize::MAX]),
            decode_responses(kind, &input, &chunks)
        );
    }

    #[test]
    fn values_round_trip(values in prop::collection::vec(value(), 0..6), gets in any::<bool>(),
                         chunks in chunking()) {
        let mut out = BytesMut::new();
        for v in &values {
            response::value(&mut out, &v.key, v.flag, &v.data, gets);
        }
        response::end(&mut out);
        let expected: Vec<Value> = values
            .into_iter()
            .map(|v| Value { cas: gets.then_some(0), ..v })
            .collect();
        let got = decode_responses(ReplyKind::Retrieval, &out, &chunks);
        prop_assert_eq!(got, vec![Ok(Response::Values(expected))]);
    }
}

fn key() -> impl Strategy<Value = Bytes> {
    // Any bytes but space and '\n' form a token; keys stay within max_key_len.
    prop::collection::vec(
        any::<u8>().prop_filter("token byte", |b| *b != b' ' && *b != b'\n'),
        1..20,
    )
    .prop_map(Bytes::from)
}

fn command() -> impl Strategy<Value = Command> {
    let kind = prop::sample::select(vec![
        SetKind::Set,
        SetKind::Add,
        SetKind::Replace,
        SetKind::Cas,
        SetKind::Append,
        SetKind::Prepend,
    ]);
    prop_oneof![
        (prop::collection::vec(key(), 1..5), any::<bool>())
            .prop_map(|(keys, gets)| Command::Get { keys, gets }),
        (
            kind,
            key(),
            any::<u32>(),
            any::<i32>(),
            prop::collection::vec(any::<u8>(), 0..64),
            any::<bool>()
        )
            .prop_map(|(kind, key, flag, exptime, value, noreply)| Command::Set {
                kind,
                key,
                flag,
                exptime,
                value: Bytes::from(value),
                noreply,
                cas: if kind == SetKind::Cas { 7 } else { 0 },
            }),
        (key(), any::<bool>()).prop_map(|(key, noreply)| Command::Delete { key, noreply }),
        (key(), any::<i64>(), any::<bool>()).prop_map(|(key, delta, noreply)| Command::Incr {
            key,
            delta,
            noreply
        }),
        (key(), any::<bool>()).prop_map(|(key, noreply)| Command::Decr { key, noreply }),
        prop::collection::vec(key(), 0..4).prop_map(|names| Command::Stats { names }),
        Just(Command::Version),
        any::<bool>().prop_map(|noreply| Command::Verbosity { noreply }),
        any::<bool>().prop_map(|noreply| Command::FlushAll { noreply }),
        Just(Command::OptimizeStat),
        Just(Command::Quit),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    (
        key(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..100),
    )
        .prop_map(|(key, flag, data)| Value {
            key,
            flag,
            data: Bytes::from(data),
            cas: None,
        })
}

fn reply_kind() -> impl Strategy<Value = ReplyKind> {
    prop::sample::select(vec![
        ReplyKind::Retrieval,
        ReplyKind::Storage,
        ReplyKind::Delete,
        ReplyKind::Incr,
        ReplyKind::Stats,
        ReplyKind::Version,
        ReplyKind::Ok,
        ReplyKind::Line,
    ])
}

fn reply_stream() -> impl Strategy<Value = Vec<u8>> {
    let frag = prop_oneof![
        3 => prop::sample::select(vec![
            &b"VALUE "[..], b"k ", b"0 ", b"3 ", b"1", b"abc", b"\r\n", b"\n", b"END\r\n",
            b"STORED\r\n", b"DELETED\r\n", b"NOT_FOUND\r\n", b"12\r\n", b"-1\r\n", b"STAT a b\r\n",
            b"VERSION 1\r\n", b"OK\r\n", b"SERVER_ERROR x\r\n", b"ERROR\r\n", b"VALUE k 0 3\r\n",
            b"VALUE k 0 2 0\r\n", b" ",
        ])
        .prop_map(|s| s.to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(frag, 0..30).prop_map(|v| v.concat())
}

/// Every reply (or the first error) decoded from `input` fed in `chunks`; after each complete
/// reply the decoder expects another of the same kind.
fn decode_responses(
    kind: ReplyKind,
    input: &[u8],
    chunks: &[usize],
) -> Vec<Result<Response, ResponseError>> {
    let mut d = ResponseDecoder::with_limits(kind, 1000, 64);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    let mut i = 0;
    while fed < input.len() {
        let step = chunks[i % chunks.len()];
        i += 1;
        let end = input.len().min(fed.saturating_add(step));
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        loop {
            let before = buf.len();
            let r = d.decode(&mut buf);
            assert!(buf.len() <= before);
            match r {
                Ok(None) => break,
                Ok(Some(resp)) => {
                    out.push(Ok(resp));
                    d.expect(kind);
                }
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

#[test]
fn decoder_is_reusable_after_quit() {
    // Quit is just a command; the caller closes. Decoding further input still works.
    let mut d = RequestDecoder::default();
    let mut buf = BytesMut::from(&b"quit\r\nget k\r\n"[..]);
    assert_eq!(d.decode(&mut buf), Decoded::Request(Command::Quit));
    assert!(matches!(
        d.decode(&mut buf),
        Decoded::Request(Command::Get { .. })
    ));
}
