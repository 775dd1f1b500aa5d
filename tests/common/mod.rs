//! Helpers shared by the whole-broker tests that run `quiver serve` as a child process.
// Each test binary uses its own share of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use quiver_client::{Client, ClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Stops a broker child politely (SIGTERM, up to 10 s), killing it if it hangs, then
/// removes what it leaves behind (only after a clean exit, so a hang keeps its evidence).
pub fn stop_broker(child: &mut Child, leftovers: &[&Path]) {
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            for path in leftovers {
                if path.is_dir() {
                    let _ = std::fs::remove_dir_all(path);
                } else {
                    let _ = std::fs::remove_file(path);
                }
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `quiver serve --cores 2` child on free loopback ports, its data in
/// `<target tmp>/<group>/<name>-<pid>` (under ./target: O_DIRECT needs a real filesystem
/// such as ext4, so never /tmp) and its log beside it (`<data dir>.log`).
pub struct Served {
    pub child: Child,
    pub data_dir: PathBuf,
    pub kafka_addr: String,
    pub quic_addr: String,
    pub log: PathBuf,
}

impl Served {
    pub fn start(group: &str, name: &str, extra: &[&std::ffi::OsStr]) -> Served {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(group);
        std::fs::create_dir_all(&base).unwrap();
        let data_dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).unwrap();
        let log = data_dir.with_extension("log");
        let quic_addr = format!("127.0.0.1:{}", free_udp_port());
        let kafka_addr = format!("127.0.0.1:{}", free_tcp_port());
        let child = Command::new(env!("CARGO_BIN_EXE_quiver"))
            .args(["serve", "--cores", "2", "--data-dir"])
            .arg(&data_dir)
            .args(["--kafka-listen", &kafka_addr])
            .args(["--quic-listen", &quic_addr])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start quiver serve");
        Served {
            child,
            data_dir,
            kafka_addr,
            quic_addr,
            log,
        }
    }
}

pub struct Broker {
    pub child: Child,
    pub data_dir: PathBuf,
    pub kafka_addr: String,
    pub quic_addr: String,
}

impl Broker {
    pub fn start(name: &str) -> Broker {
        let served = Served::start("broker-itests", name, &[]);
        Broker {
            child: served.child,
            data_dir: served.data_dir,
            kafka_addr: served.kafka_addr,
            quic_addr: served.quic_addr,
        }
    }

    pub async fn quic(&self) -> Client {
        let ca = self.data_dir.join("tls").join("cert.pem");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ca.exists() {
                let config = ClientConfig::new(self.quic_addr.clone())
                    .ca_file(&ca)
                    .request_timeout(Duration::from_secs(20));
                if let Ok(c) = Client::connect(config).await {
                    return c;
                }
            }
            assert!(Instant::now() < deadline, "QUIC listener never came up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn kafka(&self) -> KafkaConn {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(stream) = TcpStream::connect(&self.kafka_addr).await {
                return KafkaConn {
                    stream,
                    correlation_id: 0,
                };
            }
            assert!(Instant::now() < deadline, "Kafka listener never came up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        stop_broker(
            &mut self.child,
            &[&self.data_dir, &self.data_dir.with_extension("log")],
        );
    }
}

/// Just enough Kafka client: one request at a time, non-flexible versions.
pub struct KafkaConn {
    stream: TcpStream,
    correlation_id: i32,
}

impl KafkaConn {
    pub async fn call<Req, Resp>(&mut self, key: ApiKey, version: i16, request: &Req) -> Resp
    where
        Req: Encodable + HeaderVersion,
        Resp: Decodable + HeaderVersion,
    {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("both-protocols-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, Req::header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.put_slice(&body);
        self.stream.write_all(&frame).await.unwrap();
        let size = self.stream.read_i32().await.unwrap() as usize;
        let mut buf = vec![0u8; size];
        self.stream.read_exact(&mut buf).await.unwrap();
        let mut buf = Bytes::from(buf);
        let h = ResponseHeader::decode(&mut buf, Resp::header_version(version)).unwrap();
        assert_eq!(h.correlation_id, self.correlation_id);
        let resp = Resp::decode(&mut buf, version).unwrap();
        assert_eq!(buf.remaining(), 0);
        resp
    }
}

impl KafkaConn {
    /// CreateTopics v4: the topic's error code (0 = created).
    pub async fn create_topic(&mut self, name: &str, partitions: i32) -> i16 {
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_num_partitions(partitions)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000);
        let resp: CreateTopicsResponse = self.call(ApiKey::CreateTopics, 4, &req).await;
        resp.topics[0].error_code
    }

    /// Produce v7 of one record batch with acks=all: Ok(base offset) or Err(error code).
    pub async fn produce(&mut self, topic: &str, partition: i32, batch: Bytes) -> Result<i64, i16> {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch))])]);
        let resp: ProduceResponse = self.call(ApiKey::Produce, 7, &req).await;
        let p = &resp.responses[0].partition_responses[0];
        if p.error_code == 0 {
            Ok(p.base_offset)
        } else {
            Err(p.error_code)
        }
    }
}
