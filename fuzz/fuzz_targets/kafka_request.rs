//! Fuzzes the Kafka request path a connection runs on untrusted bytes: `FrameDecoder` over a
//! byte stream arriving in arbitrary chunks, then `decode_request` on every frame. Invariant: no
//! input panics or aborts, and whatever decodes is a served API at a served version.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use quiver_net::kafka::frame::{decode_request, FrameDecoder};
use quiver_net::kafka::versions;

fn check_frame(frame: Bytes) {
    match decode_request(frame) {
        Ok(request) => assert!(versions::is_supported(
            request.api_key,
            request.api_version()
        )),
        Err(error) => {
            // Exercise what a connection does with the error.
            let _ = error.action();
            let _ = error.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    // Even mode: `rest` is one frame body, which reaches the message decoders fastest.
    if mode & 1 == 0 {
        check_frame(Bytes::copy_from_slice(rest));
        return;
    }
    // Odd mode: `rest` is a connection's byte stream, read in chunks of 1..=128 bytes.
    let chunk_len = usize::from(mode >> 1) + 1;
    let mut decoder = FrameDecoder::new();
    let mut buffer = BytesMut::new();
    for chunk in rest.chunks(chunk_len) {
        buffer.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => check_frame(frame),
                Ok(None) => break,
                // The connection would be closed here.
                Err(_) => return,
            }
        }
    }
});
