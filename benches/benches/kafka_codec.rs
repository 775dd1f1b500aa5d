//! criterion benches for the Kafka codec on the broker's hot path, through the broker's own
//! code (`quiver_net::kafka::frame`): splitting and decoding Produce request frames, and
//! encoding Fetch responses with the zero-copy scatter writer next to a plain kafka-protocol
//! encode into one `BytesMut` for comparison.
//!
//! Throughput is bytes of the whole frame (size prefix included), so a decode that leaves
//! the records as a slice of the frame shows up as a large figure: that is the point.
//!
//! `cargo bench -p quiver-benches --bench kafka_codec` for figures.

use std::hint::black_box;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchResponse, ProduceRequest, RequestHeader, RequestKind, ResponseHeader,
    ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use quiver_benches::batch_of_size;
use quiver_net::kafka::frame::{decode_request, encode_response_with_records, FrameDecoder};

const TOPIC: &str = "events";
const CORRELATION_ID: i32 = 42;

/// A request or response shape: `partitions` partitions of one topic, each carrying
/// `buffers_per_partition` record buffers of about `buffer_bytes`.
#[derive(Clone, Copy)]
struct Shape {
    label: &'static str,
    partitions: usize,
    buffer_bytes: usize,
    record_bytes: usize,
    buffers_per_partition: usize,
}

/// Produce: one large batch (a batching producer, one hot partition) and many small ones (a
/// keyed producer spreading over partitions).
const PRODUCE_SHAPES: [Shape; 2] = [
    Shape {
        label: "1x16KiB",
        partitions: 1,
        buffer_bytes: 16 << 10,
        record_bytes: 1024,
        buffers_per_partition: 1,
    },
    Shape {
        label: "10x1KiB",
        partitions: 10,
        buffer_bytes: 1 << 10,
        record_bytes: 100,
        buffers_per_partition: 1,
    },
];

/// Produce v3 is the oldest version we serve (first with RecordBatch v2); v9 the first
/// flexible (compact) one.
const PRODUCE_VERSIONS: [i16; 2] = [3, 9];

/// Fetch: a tailing consumer (one batch), a consumer of many small partitions, and a
/// catching-up consumer whose 1 MiB spans several tail-cache buffers (the engine's staging
/// buffers are 128 KiB, `STAGING_COALESCE_BYTES`), which the broker sends as a spliced
/// placeholder.
const FETCH_SHAPES: [Shape; 3] = [
    Shape {
        label: "1x16KiB",
        partitions: 1,
        buffer_bytes: 16 << 10,
        record_bytes: 1024,
        buffers_per_partition: 1,
    },
    Shape {
        label: "10x1KiB",
        partitions: 10,
        buffer_bytes: 1 << 10,
        record_bytes: 100,
        buffers_per_partition: 1,
    },
    Shape {
        label: "1x1MiB_8_buffers",
        partitions: 1,
        buffer_bytes: 128 << 10,
        record_bytes: 1024,
        buffers_per_partition: 8,
    },
];

/// Fetch v4 is the oldest version we serve; v16 the newest (flexible, topic ids).
const FETCH_VERSIONS: [i16; 2] = [4, 16];

fn str_bytes(s: &'static str) -> StrBytes {
    StrBytes::from_static_str(s)
}

/// One record buffer of `shape`: a RecordBatch of at most `buffer_bytes`.
fn record_buffer(shape: &Shape) -> Bytes {
    Bytes::from(batch_of_size(shape.buffer_bytes, shape.record_bytes))
}

/// A whole Produce request frame as a client sends it (size prefix, header, body).
fn produce_frame(shape: &Shape, version: i16) -> Bytes {
    let records = record_buffer(shape);
    let partitions = (0..shape.partitions as i32)
        .map(|index| {
            PartitionProduceData::default()
                .with_index(index)
                .with_records(Some(records.clone()))
        })
        .collect();
    let body = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(str_bytes(TOPIC)))
            .with_partition_data(partitions)]);
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(CORRELATION_ID)
        .with_client_id(Some(str_bytes("bench-producer")));
    let mut encoded = BytesMut::new();
    header
        .encode(
            &mut encoded,
            ApiKey::Produce.request_header_version(version),
        )
        .expect("encodable header");
    body.encode(&mut encoded, version).expect("encodable body");
    let mut frame = BytesMut::with_capacity(4 + encoded.len());
    frame.put_i32(encoded.len() as i32);
    frame.extend_from_slice(&encoded);
    frame.freeze()
}

fn produce_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("produce_decode");
    for shape in PRODUCE_SHAPES {
        for version in PRODUCE_VERSIONS {
            let wire = produce_frame(&shape, version);
            check_produce_decode(&wire, &shape);
            group.throughput(Throughput::Bytes(wire.len() as u64));
            let mut decoder = FrameDecoder::new();
            group.bench_function(BenchmarkId::new(format!("v{version}"), shape.label), |b| {
                // The connection's read buffer, refilled outside the timing: the copy into it
                // is the socket read's, not the codec's.
                b.iter_batched(
                    || BytesMut::from(&wire[..]),
                    |mut buffer| {
                        let frame = decoder
                            .decode(&mut buffer)
                            .expect("valid frame")
                            .expect("whole frame");
                        decode_request(frame).expect("decodable")
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

/// The bench decodes what it claims to: every partition's records, as slices of the frame.
fn check_produce_decode(wire: &Bytes, shape: &Shape) {
    let mut buffer = BytesMut::from(&wire[..]);
    let frame = FrameDecoder::new()
        .decode(&mut buffer)
        .expect("valid frame")
        .expect("whole frame");
    let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
    let RequestKind::Produce(request) = decode_request(frame).expect("decodable").body else {
        panic!("not a Produce request");
    };
    let partitions = &request.topic_data[0].partition_data;
    assert_eq!(partitions.len(), shape.partitions);
    for p in partitions {
        let records = p.records.as_ref().expect("records");
        assert!(records.len() >= shape.buffer_bytes / 2);
        assert!(
            frame_range.contains(&(records.as_ptr() as usize)),
            "records are a slice of the frame (zero-copy decode)"
        );
    }
}

/// A Fetch response as the fetch handler assembles it, with the record buffers it
/// references: `direct` buffers sit in the response as they are; a partition spanning several
/// buffers carries a placeholder that the scatter writer replaces by them.
struct FetchFixture {
    body: ResponseKind,
    direct: Vec<Bytes>,
    spliced: Vec<(Bytes, Vec<Bytes>)>,
    /// The same response with every partition's records in one contiguous buffer: what a plain
    /// kafka-protocol encode needs.
    contiguous_body: ResponseKind,
}

fn fetch_fixture(shape: &Shape) -> FetchFixture {
    let buffer = record_buffer(shape);
    let partition = |index: i32, records: Bytes| {
        PartitionData::default()
            .with_partition_index(index)
            .with_high_watermark(1_000_000)
            .with_last_stable_offset(1_000_000)
            .with_log_start_offset(0)
            .with_aborted_transactions(Some(Vec::new()))
            .with_preferred_read_replica(BrokerId(-1))
            .with_records(Some(records))
    };
    let response = |partitions: Vec<PartitionData>| {
        ResponseKind::Fetch(
            FetchResponse::default()
                .with_error_code(0)
                .with_session_id(0)
                .with_responses(vec![FetchableTopicResponse::default()
                    .with_topic(TopicName(str_bytes(TOPIC)))
                    .with_partitions(partitions)]),
        )
    };
    let mut direct = Vec::new();
    let mut spliced = Vec::new();
    let mut partitions = Vec::new();
    let mut contiguous = Vec::new();
    for index in 0..shape.partitions as i32 {
        // Distinct buffers per partition, as distinct partitions' tail caches are.
        let parts: Vec<Bytes> = (0..shape.buffers_per_partition)
            .map(|_| Bytes::copy_from_slice(&buffer))
            .collect();
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        contiguous.push(partition(index, Bytes::from(joined)));
        if let [only] = parts.as_slice() {
            direct.push(only.clone());
            partitions.push(partition(index, only.clone()));
        } else {
            let placeholder = Bytes::from(vec![0u8; parts.iter().map(Bytes::len).sum()]);
            partitions.push(partition(index, placeholder.clone()));
            spliced.push((placeholder, parts));
        }
    }
    FetchFixture {
        body: response(partitions),
        direct,
        spliced,
        contiguous_body: response(contiguous),
    }
}

/// A response frame (size prefix, header, body) encoded by kafka-protocol into one buffer,
/// record bytes copied. The buffer is allocated at its final size, so regrowth is not counted.
fn encode_contiguous(body: &ResponseKind, version: i16, frame_bytes: usize) -> BytesMut {
    let ResponseKind::Fetch(fetch) = body else {
        unreachable!("fetch fixtures only");
    };
    let mut buffer = BytesMut::with_capacity(frame_bytes);
    buffer.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(CORRELATION_ID)
        .encode(&mut buffer, ApiKey::Fetch.response_header_version(version))
        .expect("encodable header");
    fetch.encode(&mut buffer, version).expect("encodable body");
    let size = (buffer.len() - 4) as i32;
    buffer[..4].copy_from_slice(&size.to_be_bytes());
    buffer
}

fn fetch_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("fetch_encode");
    for shape in FETCH_SHAPES {
        let fixture = fetch_fixture(&shape);
        for version in FETCH_VERSIONS {
            let scattered = encode_response_with_records(
                CORRELATION_ID,
                ApiKey::Fetch,
                version,
                &fixture.body,
                fixture.direct.clone(),
                fixture.spliced.clone(),
            )
            .expect("encodable");
            let frame_bytes = scattered.total_len();
            let contiguous = encode_contiguous(&fixture.contiguous_body, version, frame_bytes);
            assert_eq!(
                scattered.to_contiguous(),
                contiguous,
                "both encodings put the same bytes on the wire"
            );
            assert!(
                scattered.bytes_copied < 256 * shape.partitions,
                "only the envelope is copied ({} bytes)",
                scattered.bytes_copied
            );
            group.throughput(Throughput::Bytes(frame_bytes as u64));
            group.bench_function(
                BenchmarkId::new(format!("scatter/v{version}"), shape.label),
                |b| {
                    b.iter(|| {
                        encode_response_with_records(
                            CORRELATION_ID,
                            ApiKey::Fetch,
                            version,
                            black_box(&fixture.body),
                            fixture.direct.clone(),
                            fixture.spliced.clone(),
                        )
                        .expect("encodable")
                    })
                },
            );
            group.bench_function(
                BenchmarkId::new(format!("copy_bytesmut/v{version}"), shape.label),
                |b| {
                    b.iter(|| {
                        encode_contiguous(black_box(&fixture.contiguous_body), version, frame_bytes)
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(codec, produce_decode, fetch_encode);
criterion_main!(codec);
