//! The `quiver` command line against a real `quiver serve` process (free ports, data dir
//! under ./target: O_DIRECT needs a real filesystem, so never /tmp). The CLI runs in the
//! broker's parent folder with only `--bootstrap`, so it must find and trust
//! `./quiver-data/tls/cert.pem` by itself, as in the zero-configuration local case.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Broker {
    child: Child,
    /// The folder the CLI runs in; the broker's data dir is `<work_dir>/quiver-data`.
    work_dir: PathBuf,
    quic_addr: String,
    log: PathBuf,
}

impl Broker {
    fn start(name: &str) -> Broker {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli-itests");
        let work_dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work_dir);
        std::fs::create_dir_all(&work_dir).unwrap();
        let log = work_dir.with_extension("log");
        let quic_addr = format!("127.0.0.1:{}", free_udp_port());
        let child = Command::new(env!("CARGO_BIN_EXE_quiver"))
            .current_dir(&work_dir)
            .args(["serve", "--cores", "1"])
            .args(["--kafka-listen", &format!("127.0.0.1:{}", free_tcp_port())])
            .args(["--quic-listen", &quic_addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start quiver serve");
        let mut broker = Broker {
            child,
            work_dir,
            quic_addr,
            log,
        };
        broker.wait_ready();
        broker
    }

    fn cli(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_quiver"))
            .current_dir(&self.work_dir)
            .args(args)
            .args(["--bootstrap", &self.quic_addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start quiver cli");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "broker exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let out = self.cli(&["topic", "list", "--connect-timeout-ms", "1000"], b"");
            if out.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "broker not ready: {out:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        common::stop_broker(&mut self.child, &[&self.work_dir, &self.log]);
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

#[test]
fn topic_produce_consume_round_trip() {
    let broker = Broker::start("round-trip");

    let created = broker.cli(&["topic", "create", "orders", "--partitions", "1"], b"");
    assert_ok(&created);
    assert!(stdout(&created).contains("Created topic orders"));
    let listed = broker.cli(&["topic", "list"], b"");
    assert_ok(&listed);
    assert_eq!(stdout(&listed).lines().collect::<Vec<_>>(), ["orders"]);

    let produced = broker.cli(
        &[
            "produce",
            "orders",
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
            "--header",
            "source=test",
        ],
        b"k1:v1\nk2:v2:with colon\nk3:v3\n",
    );
    assert_ok(&produced);

    let described = broker.cli(&["topic", "describe", "orders"], b"");
    assert_ok(&described);
    assert!(
        stdout(&described).contains("HighWatermark: 3"),
        "{}",
        stdout(&described)
    );

    let plain = broker.cli(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            "3",
            "--property",
            "print.key=true",
            "--property",
            "key.separator=:",
        ],
        b"",
    );
    assert_ok(&plain);
    assert_eq!(stdout(&plain), "k1:v1\nk2:v2:with colon\nk3:v3\n");

    let json = broker.cli(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--max-messages",
            "2",
            "--format",
            "json",
        ],
        b"",
    );
    assert_ok(&json);
    let lines: Vec<serde_json::Value> = stdout(&json)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["topic"], "orders");
        assert_eq!(line["partition"], 0);
        assert_eq!(line["offset"], i as i64);
        assert!(line["timestamp"].as_i64().unwrap() > 0);
        assert_eq!(line["headers"][0]["key"], "source");
        assert_eq!(line["headers"][0]["value"], "test");
    }
    assert_eq!(lines[0]["key"], "k1");
    assert_eq!(lines[0]["value"], "v1");
    assert_eq!(lines[1]["key"], "k2");
    assert_eq!(lines[1]["value"], "v2:with colon");

    // Group offsets: consume two with a group, then resume from the third.
    let grouped = broker.cli(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--group",
            "g1",
            "--max-messages",
            "2",
        ],
        b"",
    );
    assert_ok(&grouped);
    assert_eq!(stdout(&grouped), "v1\nv2:with colon\n");
    let resumed = broker.cli(
        &["consume", "orders", "--group", "g1", "--max-messages", "1"],
        b"",
    );
    assert_ok(&resumed);
    assert_eq!(stdout(&resumed), "v3\n");
    let group = broker.cli(&["group", "describe", "g1"], b"");
    assert_ok(&group);
    assert!(stdout(&group).contains("orders"), "{}", stdout(&group));
    let listed = broker.cli(&["group", "list"], b"");
    assert_ok(&listed);
    assert!(
        stdout(&listed)
            .lines()
            .any(|l| l.split_whitespace().next() == Some("g1")),
        "{}",
        stdout(&listed)
    );

    let deleted = broker.cli(&["topic", "delete", "orders"], b"");
    assert_ok(&deleted);
}

#[test]
fn errors_have_clear_messages_and_exit_codes() {
    let broker = Broker::start("errors");

    let bad = broker.cli(&["topic", "create", "bad name!"], b"");
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("invalid topic name \"bad name!\""),
        "{}",
        stderr(&bad)
    );

    let missing = broker.cli(&["produce", "no-such-topic"], b"x\n");
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    assert!(
        stderr(&missing).contains("no-such-topic"),
        "{}",
        stderr(&missing)
    );

    let usage = broker.cli(&["produce", "orders", "--acks", "2"], b"");
    assert_eq!(usage.status.code(), Some(2), "{}", stderr(&usage));

    let unknown_flag = broker.cli(&["consume", "orders", "--no-such-flag"], b"");
    assert_eq!(unknown_flag.status.code(), Some(2));

    // Nothing listening: a helpful message, exit 1, quickly.
    let nobody = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .current_dir(&broker.work_dir)
        .args(["topic", "list", "--connect-timeout-ms", "500"])
        .args(["--bootstrap", &format!("127.0.0.1:{}", free_udp_port())])
        .output()
        .unwrap();
    assert_eq!(nobody.status.code(), Some(1));
    assert!(
        stderr(&nobody).contains("no broker reachable"),
        "{}",
        stderr(&nobody)
    );
}
