//! The protocol vectors of node.md §10 / proxy.md §8 that are decidable at codec level, plus
//! the framing and limit rules of node.md §3.1–§3.4.

mod common;

use beansdb_protocol::response::*;
use beansdb_protocol::{Command, Decoded, DecoderConfig, RequestDecoder, SetKind, MAX_LINE};
use bytes::{Bytes, BytesMut};
use common::{decode_all, decode_bytewise, decode_chunked};

fn cfg() -> DecoderConfig {
    DecoderConfig::default()
}

fn b(s: &[u8]) -> Bytes {
    Bytes::copy_from_slice(s)
}

fn get(keys: &[&[u8]]) -> Decoded {
    Decoded::Request(Command::Get {
        keys: keys.iter().map(|k| b(k)).collect(),
        gets: false,
    })
}

fn set(key: &[u8], flag: u32, exptime: i32, value: &[u8], noreply: bool) -> Decoded {
    storage(SetKind::Set, key, flag, exptime, value, noreply)
}

fn storage(
    kind: SetKind,
    key: &[u8],
    flag: u32,
    exptime: i32,
    value: &[u8],
    noreply: bool,
) -> Decoded {
    Decoded::Request(Command::Set {
        kind,
        key: b(key),
        flag,
        exptime,
        value: b(value),
        noreply,
        cas: 0,
    })
}

fn reply(r: &'static [u8]) -> Decoded {
    Decoded::Reply {
        reply: r,
        close: false,
    }
}

fn fatal(r: &'static [u8]) -> Decoded {
    Decoded::Reply {
        reply: r,
        close: true,
    }
}

/// Decodes all at once and byte by byte; both must agree. Returns the items.
fn check(input: &[u8]) -> Vec<Decoded> {
    check_with(cfg(), input)
}

fn check_with(config: DecoderConfig, input: &[u8]) -> Vec<Decoded> {
    let (all, rest_all) = decode_all(config, input);
    let (bytewise, rest_bytewise) = decode_bytewise(config, input);
    assert_eq!(all, bytewise, "chunking changed the result for {input:?}");
    // After a closing reply the helper stops feeding, so leftovers differ by design.
    if !matches!(all.last(), Some(Decoded::Reply { close: true, .. })) {
        assert_eq!(rest_all, rest_bytewise);
    }
    all
}

#[test]
fn get_with_extra_spaces() {
    assert_eq!(check(b"get  abc  \r\n"), vec![get(&[b"abc"])]);
    assert_eq!(check(b"  get abc\r\n"), vec![get(&[b"abc"])]);
    assert_eq!(
        check(b"gets a  b\r\n"),
        vec![Decoded::Request(Command::Get {
            keys: vec![b(b"a"), b(b"b")],
            gets: true
        })]
    );
}

#[test]
fn tab_is_part_of_a_token() {
    assert_eq!(check(b"get a\tb\r\n"), vec![get(&[b"a\tb"])]);
    // "get\t" is not the command "get".
    assert_eq!(check(b"get\tabc\r\n"), vec![reply(ERROR)]);
}

#[test]
fn get_without_key_and_empty_lines() {
    assert_eq!(check(b"get\r\n"), vec![reply(CLIENT_ERROR_INVALID_CMD)]);
    assert_eq!(check(b"gets   \r\n"), vec![reply(CLIENT_ERROR_INVALID_CMD)]);
    assert_eq!(check(b"\r\n"), vec![reply(CLIENT_ERROR_INVALID_CMD)]);
    assert_eq!(check(b"    \r\n"), vec![reply(CLIENT_ERROR_INVALID_CMD)]);
    // The connection stays usable.
    assert_eq!(
        check(b"\r\nget k\r\n"),
        vec![reply(CLIENT_ERROR_INVALID_CMD), get(&[b"k"])]
    );
}

#[test]
fn get_key_length() {
    let k250 = vec![b'k'; 250];
    let k251 = vec![b'k'; 251];
    let line = |k: &[u8]| [b"get a ".as_slice(), k, b"\r\n"].concat();
    assert_eq!(check(&line(&k250)), vec![get(&[b"a", &k250])]);
    assert_eq!(check(&line(&k251)), vec![reply(CLIENT_ERROR_KEY_LENGTH)]);
    // max_key_len is configurable.
    let small = DecoderConfig {
        max_key_len: 3,
        ..cfg()
    };
    assert_eq!(check_with(small, b"get abc\r\n"), vec![get(&[b"abc"])]);
    assert_eq!(
        check_with(small, b"get abcd\r\nget x\r\n"),
        vec![reply(CLIENT_ERROR_KEY_LENGTH), get(&[b"x"])]
    );
}

#[test]
fn bare_newline() {
    assert_eq!(check(b"get abc\n"), vec![reply(CLIENT_ERROR_INVALID_CMD)]);
    assert_eq!(check(b"\n"), vec![reply(CLIENT_ERROR_INVALID_CMD)]);
    assert_eq!(
        check(b"get abc\nget abc\r\n"),
        vec![reply(CLIENT_ERROR_INVALID_CMD), get(&[b"abc"])]
    );
    // A '\r' elsewhere in the line is an ordinary byte.
    assert_eq!(check(b"get a\rb\r\n"), vec![get(&[b"a\rb"])]);
}

#[test]
fn set_with_non_numeric_flag_discards_body() {
    // §10: `set abc a 3 2` → invalid cmd; its 2-byte body and \r\n are skipped (§3.4.6).
    assert_eq!(
        check(b"set abc a 3 2\r\nab\r\nget abc\r\n"),
        vec![reply(CLIENT_ERROR_INVALID_CMD), get(&[b"abc"])]
    );
    // Bad exptime, same.
    assert_eq!(
        check(b"set k 0 x 2\r\nab\r\nget k\r\n"),
        vec![reply(CLIENT_ERROR_INVALID_CMD), get(&[b"k"])]
    );
    // §10 matrix: `set k x 0 16` with a body holding a command: the body is not parsed.
    assert_eq!(
        check(b"set k x 0 16\r\ndelete victim\r\n!\r\nget k\r\n"),
        vec![reply(CLIENT_ERROR_INVALID_CMD), get(&[b"k"])]
    );
    // Flag beyond i64.
    assert_eq!(
        check(b"set k 9223372036854775808 0 1\r\na\r\nget k\r\n"),
        vec![reply(CLIENT_ERROR_INVALID_CMD), get(&[b"k"])]
    );
}

#[test]
fn set_noreply() {
    assert_eq!(
        check(b"set k 2 3 2 noreply\r\nok\r\n"),
        vec![set(b"k", 2, 3, b"ok", true)]
    );
}

#[test]
fn set_without_size_closes() {
    assert_eq!(
        check(b"set k 0 0\r\nget k\r\n"),
        vec![fatal(CLIENT_ERROR_INVALID_CMD)]
    );
    assert_eq!(check(b"set\r\n"), vec![fatal(CLIENT_ERROR_INVALID_CMD)]);
}

#[test]
fn negative_size_closes() {
    assert_eq!(
        check(b"set k 0 0 -1\r\nget k\r\n"),
        vec![fatal(CLIENT_ERROR_VALUE_TOO_LARGE)]
    );
}

#[test]
fn absurd_size_closes() {
    assert_eq!(
        check(b"set k 0 0 99999999999\r\nget k\r\n"),
        vec![fatal(CLIENT_ERROR_VALUE_TOO_LARGE)]
    );
    // 1 GiB + 1 closes, 1 GiB is skipped (with a small body_max to keep the test cheap).
    let small = DecoderConfig {
        body_max: 8,
        ..cfg()
    };
    assert_eq!(
        check_with(small, b"set k 0 0 1073741825\r\n"),
        vec![fatal(CLIENT_ERROR_VALUE_TOO_LARGE)]
    );
    let mut d = RequestDecoder::new(small);
    let mut buf = BytesMut::from(&b"set k 0 0 1073741824\r\n"[..]);
    assert_eq!(d.decode(&mut buf), reply(CLIENT_ERROR_VALUE_TOO_LARGE));
    assert_eq!(d.decode(&mut buf), Decoded::NeedMore);
    assert_eq!(d.discarding(), Some((1 << 30) + 2));
}

#[test]
fn non_numeric_size_closes() {
    assert_eq!(
        check(b"set k 0 0 x\r\nget k\r\n"),
        vec![fatal(CLIENT_ERROR_INVALID_CMD)]
    );
    assert_eq!(
        check(b"set k 0 0 1.5\r\n"),
        vec![fatal(CLIENT_ERROR_INVALID_CMD)]
    );
}

#[test]
fn seven_tokens_with_bad_noreply() {
    assert_eq!(
        check(b"set k 0 0 2 bad extra\r\nab\r\nget k\r\n"),
        vec![reply(CLIENT_ERROR_INVALID_CMD), get(&[b"k"])]
    );
    assert_eq!(
        check(b"set k 0 0 2 noreplyx\r\nab\r\nget k\r\n"),
        vec![reply(CLIENT_ERROR_INVALID_CMD), get(&[b"k"])]
    );
    assert_eq!(
        check(b"cas k 0 0 2 7 bad\r\nab\r\nget k\r\n"),
        vec![reply(CLIENT_ERROR_INVALID_CMD), get(&[b"k"])]
    );
    // cas needs its cas token, and it must be a number.
    assert_eq!(
        check(b"cas k 0 0 2\r\nab\r\nget k\r\n"),
        vec![reply(CLIENT_ERROR_INVALID_CMD), get(&[b"k"])]
    );
    assert_eq!(
        check(b"cas k 0 0 2 x\r\nab\r\nget k\r\n"),
        vec![reply(CLIENT_ERROR_INVALID_CMD), get(&[b"k"])]
    );
    // 8 tokens: refused, body skipped.
    assert_eq!(
        check(b"set k 0 0 2 noreply a b\r\nab\r\nget k\r\n"),
        vec![reply(CLIENT_ERROR_INVALID_CMD), get(&[b"k"])]
    );
}

#[test]
fn valid_storage_forms() {
    let with_cas = |mut d: Decoded| {
        if let Decoded::Request(Command::Set { cas, .. }) = &mut d {
            *cas = 99;
        }
        d
    };
    assert_eq!(
        check(b"cas k 1 2 2 99 noreply\r\nab\r\n"),
        vec![with_cas(storage(SetKind::Cas, b"k", 1, 2, b"ab", true))]
    );
    assert_eq!(
        check(b"cas k 1 2 2 99\r\nab\r\n"),
        vec![with_cas(storage(SetKind::Cas, b"k", 1, 2, b"ab", false))]
    );
    // gobeansdb accepts (and ignores) a 7th token after `noreply`.
    assert_eq!(
        check(b"set k 0 0 2 noreply x\r\nab\r\n"),
        vec![set(b"k", 0, 0, b"ab", true)]
    );
    for (word, kind) in [
        (&b"add"[..], SetKind::Add),
        (b"replace", SetKind::Replace),
        (b"append", SetKind::Append),
        (b"prepend", SetKind::Prepend),
    ] {
        let input = [word, b" k 0 0 1\r\nx\r\n"].concat();
        assert_eq!(check(&input), vec![storage(kind, b"k", 0, 0, b"x", false)]);
    }
    // Empty body, and a body that contains protocol text.
    assert_eq!(
        check(b"set k 0 0 0\r\n\r\n"),
        vec![set(b"k", 0, 0, b"", false)]
    );
    assert_eq!(
        check(b"set k 0 0 7\r\nget a\r\n\r\n"),
        vec![set(b"k", 0, 0, b"get a\r\n", false)]
    );
}

#[test]
fn flag_and_exptime_truncation() {
    // Low 32 bits; exptime read as i32 (§3.1).
    assert_eq!(
        check(b"set k 4294967297 4294967295 1\r\na\r\n"),
        vec![set(b"k", 1, -1, b"a", false)]
    );
    assert_eq!(
        check(b"set k -1 2147483648 1\r\na\r\n"),
        vec![set(b"k", u32::MAX, i32::MIN, b"a", false)]
    );
    assert_eq!(
        check(b"set k +7 -5 1\r\na\r\n"),
        vec![set(b"k", 7, -5, b"a", false)]
    );
}

#[test]
fn bad_data_chunk() {
    // §3.4.1: "aaa" then "a\r" instead of "\r\n"; the stray "\n" is then a bare-\n line.
    assert_eq!(
        check(b"set /test/set 0 0 3\r\naaaa\r\n"),
        vec![
            reply(CLIENT_ERROR_BAD_DATA_CHUNK),
            reply(CLIENT_ERROR_INVALID_CMD)
        ]
    );
    // Body shorter than announced: the next command's bytes complete it; then mismatch.
    assert_eq!(
        check(b"set k 0 0 5\r\nab\r\nget k\r\nget k\r\n"),
        vec![
            reply(CLIENT_ERROR_BAD_DATA_CHUNK),
            reply(ERROR),
            get(&[b"k"])
        ]
    );
}

#[test]
fn oversize_body_is_skipped_not_parsed() {
    let small = DecoderConfig {
        body_max: 16,
        ..cfg()
    };
    // bytes == body_max is accepted.
    assert_eq!(
        check_with(small, b"set k 0 0 16\r\n0123456789abcdef\r\n"),
        vec![set(b"k", 0, 0, b"0123456789abcdef", false)]
    );
    // body_max + 1 with a body that looks like a command.
    let body = b"delete victim\r\n\r\n"; // 17 bytes
    let input = [b"set k 0 0 17\r\n".as_slice(), body, b"\r\nget victim\r\n"].concat();
    assert_eq!(
        check_with(small, &input),
        vec![reply(CLIENT_ERROR_VALUE_TOO_LARGE), get(&[b"victim"])]
    );
}

#[test]
fn oversize_body_at_default_limit() {
    let body_max = cfg().body_max;
    let mut input = format!("set big 0 0 {}\r\n", body_max + 1).into_bytes();
    let mut body = vec![b'x'; body_max + 1];
    body[..15].copy_from_slice(b"delete victim\r\n");
    input.extend_from_slice(&body);
    input.extend_from_slice(b"\r\nget victim\r\n");
    let chunks = [65536, 1, 7, 4096];
    let (items, rest) = decode_chunked(cfg(), &input, &chunks);
    assert_eq!(
        items,
        vec![reply(CLIENT_ERROR_VALUE_TOO_LARGE), get(&[b"victim"])]
    );
    assert!(rest.is_empty());
    // Streaming discard: the buffer never holds much of the refused body.
    let mut d = RequestDecoder::default();
    let mut buf = BytesMut::new();
    let mut max_buffered = 0;
    let mut seen = Vec::new();
    for piece in input.chunks(65536) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(&mut buf) {
                Decoded::NeedMore => break,
                other => seen.push(other),
            }
        }
        max_buffered = max_buffered.max(buf.len());
    }
    assert_eq!(seen, items);
    assert!(
        max_buffered <= 65536,
        "refused body was buffered: {max_buffered}"
    );
}

#[test]
fn line_too_long() {
    // 16 MiB + 1 bytes of content: refused and closed, terminated or not.
    let mut input = b"get ".to_vec();
    input.resize(MAX_LINE + 1, b'a');
    let (items, _) = decode_chunked(cfg(), &input, &[4096, 1, 100_000]);
    assert_eq!(items, vec![fatal(CLIENT_ERROR_LINE_TOO_LONG)]);
    // Detected without any terminator: 16 MiB bytes may still be followed by "\r\n", but
    // not when byte 16 MiB + 1 is something other than '\r'.
    let mut d = RequestDecoder::default();
    let mut buf = BytesMut::from(&input[..MAX_LINE]);
    assert_eq!(d.decode(&mut buf), Decoded::NeedMore);
    buf.extend_from_slice(b"\r");
    assert_eq!(d.decode(&mut buf), Decoded::NeedMore);
    buf.extend_from_slice(b"a");
    assert_eq!(d.decode(&mut buf), fatal(CLIENT_ERROR_LINE_TOO_LONG));
    assert!(d.is_closed());
    assert_eq!(d.decode(&mut buf), Decoded::NeedMore);
    input.extend_from_slice(b"\r\n");
    let (items, _) = decode_all(cfg(), &input);
    assert_eq!(items, vec![fatal(CLIENT_ERROR_LINE_TOO_LONG)]);
    // Exactly 16 MiB of content is still a line (here a long unknown command).
    let mut input = vec![b'x'; MAX_LINE];
    input.extend_from_slice(b"\r\nget k\r\n");
    let (items, _) = decode_chunked(cfg(), &input, &[4096]);
    assert_eq!(items, vec![reply(ERROR), get(&[b"k"])]);
}

#[test]
fn binary_garbage() {
    assert_eq!(
        check(b"\x00\xff\xfe\x80\r\nget k\r\n"),
        vec![reply(ERROR), get(&[b"k"])]
    );
    // Deterministic pseudo-random garbage must not panic and must agree bytewise.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<u8> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    check(&garbage);
}

#[test]
fn unknown_command_keeps_connection() {
    assert_eq!(
        check(b"bogus 1 2\r\nGET k\r\nget k\r\n"),
        vec![reply(ERROR), reply(ERROR), get(&[b"k"])]
    );
}

#[test]
fn other_commands() {
    let req = |c: Command| Decoded::Request(c);
    assert_eq!(check(b"version\r\n"), vec![req(Command::Version)]);
    assert_eq!(check(b"quit\r\n"), vec![req(Command::Quit)]);
    assert_eq!(
        check(b"optimize_stat\r\n"),
        vec![req(Command::OptimizeStat)]
    );
    assert_eq!(
        check(b"flush_all\r\nflush_all 0 noreply\r\nflush_all noreply x\r\n"),
        vec![
            req(Command::FlushAll { noreply: false }),
            req(Command::FlushAll { noreply: true }),
            req(Command::FlushAll { noreply: false }),
        ]
    );
    assert_eq!(
        check(b"verbosity 1\r\nverbosity noreply\r\nverbosity\r\n"),
        vec![
            req(Command::Verbosity { noreply: false }),
            req(Command::Verbosity { noreply: true }),
            req(Command::Verbosity { noreply: false }),
        ]
    );
    assert_eq!(
        check(b"stats\r\nstats reset  pid\r\n"),
        vec![
            req(Command::Stats { names: vec![] }),
            req(Command::Stats {
                names: vec![b(b"reset"), b(b"pid")]
            }),
        ]
    );
}

#[test]
fn delete_forms() {
    let del = |k: &[u8], noreply| Decoded::Request(Command::Delete { key: b(k), noreply });
    assert_eq!(
        check(
            b"delete k\r\ndelete k 0\r\ndelete k noreply\r\ndelete k 0 noreply\r\ndelete k 0 x\r\n"
        ),
        vec![
            del(b"k", false),
            del(b"k", false),
            del(b"k", true),
            del(b"k", true),
            del(b"k", false),
        ]
    );
    assert_eq!(
        check(b"delete\r\ndelete a b c d\r\n"),
        vec![
            reply(CLIENT_ERROR_INVALID_CMD),
            reply(CLIENT_ERROR_INVALID_CMD)
        ]
    );
    // Writes do not validate keys at codec level: the node answers NOT_FOUND.
    assert_eq!(check(b"delete ?k\r\n"), vec![del(b"?k", false)]);
}

#[test]
fn incr_decr() {
    assert_eq!(
        check(b"incr k 5\r\nincr k -3 noreply\r\nincr k +9223372036854775807\r\n"),
        vec![
            Decoded::Request(Command::Incr {
                key: b(b"k"),
                delta: 5,
                noreply: false
            }),
            Decoded::Request(Command::Incr {
                key: b(b"k"),
                delta: -3,
                noreply: true
            }),
            Decoded::Request(Command::Incr {
                key: b(b"k"),
                delta: i64::MAX,
                noreply: false
            }),
        ]
    );
    assert_eq!(
        check(b"incr k x\r\nincr k 9223372036854775808\r\nincr k\r\nincr k 1 2 3\r\n"),
        vec![
            reply(CLIENT_ERROR_INVALID_NUMBER),
            reply(CLIENT_ERROR_INVALID_NUMBER),
            reply(CLIENT_ERROR_INVALID_CMD),
            reply(CLIENT_ERROR_INVALID_CMD),
        ]
    );
    assert_eq!(
        check(b"decr k 1\r\ndecr k x noreply\r\n"),
        vec![
            Decoded::Request(Command::Decr {
                key: b(b"k"),
                noreply: false
            }),
            Decoded::Request(Command::Decr {
                key: b(b"k"),
                noreply: true
            }),
        ]
    );
}

#[test]
fn pipelined_sets_in_order() {
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for i in 0..1000 {
        let key = format!("key{i}");
        let value = format!("value-{i}");
        input.extend_from_slice(
            format!("set {key} {i} 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
        );
        expected.push(set(key.as_bytes(), i, 0, value.as_bytes(), false));
        if i % 100 == 0 {
            input.extend_from_slice(format!("get {key}\r\n").as_bytes());
            expected.push(get(&[key.as_bytes()]));
        }
    }
    assert_eq!(check(&input), expected);
    assert_eq!(decode_chunked(cfg(), &input, &[3, 1000, 17]).0, expected);
}

#[test]
fn large_body_in_small_reads() {
    // 10 MiB in 1 KiB reads: the pending length is exposed and nothing is rescanned.
    let len = 10 << 20;
    let value: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
    let mut input = format!("set big 0 0 {len}\r\n").into_bytes();
    input.extend_from_slice(&value);
    input.extend_from_slice(b"\r\n");
    let mut d = RequestDecoder::default();
    let mut buf = BytesMut::new();
    let mut result = None;
    let mut last_buffered = 0;
    for piece in input.chunks(1024) {
        buf.extend_from_slice(piece);
        match d.decode(&mut buf) {
            Decoded::NeedMore => {
                if let Some(n) = d.pending_body_len() {
                    assert!(n >= last_buffered && n <= len);
                    last_buffered = n;
                    assert_eq!(d.pending_body().map(|p| p.len), Some(len));
                }
            }
            other => result = Some(other),
        }
    }
    // The last read completed the body, the one before left less than a read missing.
    assert!(last_buffered > len - 1024);
    assert_eq!(result, Some(set(b"big", 0, 0, &value, false)));
    assert_eq!(d.pending_body_len(), None);
    assert!(buf.is_empty());
}

#[test]
fn zero_copy_slices() {
    let mut d = RequestDecoder::default();
    let mut buf = BytesMut::from(&b"set k 0 0 5\r\nhello\r\n"[..]);
    let before = buf.as_ptr() as usize;
    let Decoded::Request(Command::Set { key, value, .. }) = d.decode(&mut buf) else {
        panic!("expected a set");
    };
    assert_eq!(key.as_ptr() as usize, before + 4);
    assert_eq!(value.as_ptr() as usize, before + 13);
}

#[test]
fn mixed_script_bytewise_equals_all_at_once() {
    let small = DecoderConfig {
        max_key_len: 8,
        body_max: 10,
        max_line: 40,
    };
    let script: &[u8] = b"get  abc  \r\nget\r\n\r\nset abc a 3 2\r\nxx\r\n\
        set k 2 3 2 noreply\r\nok\r\nset k 0 0 11\r\ndelete victim\r\nget victim\r\n\
        get 123456789\r\nincr k 1\r\nincr k z\r\ndelete k noreply\r\nbogus\r\n\
        set /test/set 0 0 3\r\naaaa\r\nappend k 0 0 1\r\nz\r\nget a\n\
        set k 0 0 10 bad\r\n0123456789\r\nstats pid\r\nquit\r\n\
        get aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let items = check_with(small, script);
    assert_eq!(items.last(), Some(&fatal(CLIENT_ERROR_LINE_TOO_LONG)));
    assert_eq!(items.len(), 21, "{items:#?}");
}
