//! Helpers shared by the integration tests.
#![allow(dead_code)]

use beansdb_protocol::{Decoded, DecoderConfig, RequestDecoder};
use bytes::BytesMut;

/// Everything the decoder yields for `input` fed in the given chunk sizes (cycled), stopping
/// after a reply that closes the connection. Also returns the unconsumed bytes.
pub fn decode_chunked(
    config: DecoderConfig,
    input: &[u8],
    chunks: &[usize],
) -> (Vec<Decoded>, Vec<u8>) {
    let mut d = RequestDecoder::new(config);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    let mut consumed = 0;
    let mut i = 0;
    while fed < input.len() {
        let step = chunks
            .get(i % chunks.len().max(1))
            .copied()
            .unwrap_or(usize::MAX)
            .max(1);
        i += 1;
        let end = input.len().min(fed.saturating_add(step));
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        loop {
            let before = buf.len();
            let item = d.decode(&mut buf);
            assert!(buf.len() <= before, "decode grew the buffer");
            consumed += before - buf.len();
            assert!(consumed <= fed, "consumed more than provided");
            match item {
                Decoded::NeedMore => break,
                Decoded::Reply { close: true, .. } => {
                    out.push(item);
                    assert!(d.is_closed());
                    return (out, buf.to_vec());
                }
                other => out.push(other),
            }
        }
    }
    (out, buf.to_vec())
}

pub fn decode_all(config: DecoderConfig, input: &[u8]) -> (Vec<Decoded>, Vec<u8>) {
    decode_chunked(config, input, &[usize::MAX])
}

pub fn decode_bytewise(config: DecoderConfig, input: &[u8]) -> (Vec<Decoded>, Vec<u8>) {
    decode_chunked(config, input, &[1])
}
