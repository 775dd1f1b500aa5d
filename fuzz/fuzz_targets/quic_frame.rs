//! Fuzzes the quiver/1 frame decoder: arbitrary bytes split into frames and decoded as
//! requests (what the broker does with client input) and as responses (what the client
//! does with broker input). Decoding must never panic; whatever decodes must re-encode to
//! a frame that decodes to the same message. The broker decodes request bodies as the
//! chunks a QUIC stream delivered: any split must decode as the whole body does.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use quiver_protocol::limits::{MAX_REQUEST_BODY_BYTES, MAX_RESPONSE_BODY_BYTES};
use quiver_protocol::{concat, split_frame, FrameHeader, Request, Response};

/// `body` cut into chunks of `step` bytes (an empty chunk first when `step` is odd).
fn chunks(body: &Bytes, step: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    if step % 2 == 1 {
        out.push(Bytes::new());
    }
    let mut at = 0;
    while at < body.len() {
        let end = (at + step).min(body.len());
        out.push(body.slice(at..end));
        at = end;
    }
    out
}

/// A PRODUCE's records as one buffer, so requests decoded from different splits compare.
fn flat(request: Request) -> Request {
    match request {
        Request::Produce(mut p) => {
            p.records = vec![concat(&p.records)];
            Request::Produce(p)
        }
        other => other,
    }
}

/// Decoding `body` from chunks of several sizes gives what decoding it whole gives.
fn chunked_agrees(header: &FrameHeader, body: &Bytes) {
    let whole = Request::decode(header, body.clone()).map(flat);
    let first = body.first().copied().unwrap_or(0) as usize;
    for step in [1, 2 + first % 13, 64 + first] {
        let chunked = Request::decode_chunks(header, chunks(body, step));
        assert_eq!(chunked.map(|d| flat(d.request)), whole);
    }
}

fuzz_target!(|data: &[u8]| {
    // As a stream of frames with checked headers.
    let mut buf = Bytes::copy_from_slice(data);
    while let Ok(Some(frame)) = split_frame(&mut buf, MAX_REQUEST_BODY_BYTES) {
        chunked_agrees(&frame.header, &frame.body);
        if let Ok(request) = Request::decode(&frame.header, frame.body.clone()) {
            let mut again = concat(&request.encode(frame.header.request_id()));
            let back = split_frame(&mut again, usize::MAX).unwrap().unwrap();
            assert_eq!(Request::decode(&back.header, back.body).unwrap(), request);
        }
        let _ = Response::decode(&frame.header, frame.body);
    }
    // As bodies behind a valid header of every type, so the body decoders see the
    // input even when the fuzzer has not found a valid checksum.
    if let Some((&kind, body)) = data.split_first() {
        if quiver_protocol::FrameType::from_u8(kind).is_some() {
            let header = FrameHeader::new(
                quiver_protocol::FrameType::from_u8(kind).unwrap(),
                1,
                body.len(),
            );
            let _ = FrameHeader::decode(&header.to_bytes(), MAX_RESPONSE_BODY_BYTES);
            let body = Bytes::copy_from_slice(body);
            chunked_agrees(&header, &body);
            let _ = Response::decode(&header, body);
        }
    }
});
