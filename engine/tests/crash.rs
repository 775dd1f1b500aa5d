//! Crash safety under load: a child process appends to a partition log from several
//! concurrent producers and reports every committed append; the test kills it with
//! SIGKILL at a random moment, reopens the log in this process and checks that nothing
//! acknowledged was lost or changed, and that what recovery serves is a well-formed log.
//!
//! Each directory lives through a few kill/recover cycles before it is reset, so
//! recovery also runs on logs that were recovered before (and sometimes the kill lands
//! while the child is itself recovering). Half the directories use tiny segments so
//! rolls and seals are under way when the kill lands.
//!
//! Environment: CRASH_ITERATIONS (default 50), CRASH_SEED (default: from the clock; it
//! is printed, and a failure names it with the iteration so the schedule can be
//! replayed), CRASH_MAX_DELAY_MS (default 150: the longest the child runs before the
//! kill once it is ready).

#[path = "../src/bin/crash_child/workload.rs"]
mod workload;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use quiver_engine::batch;
use quiver_engine::log::{LogConfig, PartitionLog};
use quiver_engine::runtime::prepare_io;
use quiver_engine::types::{LeaderEpoch, Offset};
use workload::{Ack, BatchId, Rng};

const CHILD: &str = env!("CARGO_BIN_EXE_crash_child");
const PRODUCERS: u32 = 4;
/// The child stops by itself after this long, in case the test never kills it.
const CHILD_MAX_SECONDS: u64 = 30;
/// How long the child may take to open (recover) its log.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Segment sizes of the directories with small segments: a roll every few batches.
const SMALL_SEGMENT_BYTES: [u64; 3] = [8 * 1024, 32 * 1024, 256 * 1024];
/// Kill/recover cycles per directory before it is reset.
const MAX_CYCLES_PER_DIR: u64 = 5;
/// Batches the verifier appends after each recovery carry runs from here on.
const VERIFIER_RUN_BASE: u64 = 1 << 32;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Kills the child if the test panics before it does.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What one child run printed before it died.
struct ChildRun {
    ready: bool,
    acks: Vec<Ack>,
}

/// Starts a child on `dir`, lets it run, and kills it with SIGKILL. With
/// `kill_before_ready` the kill lands `delay` after the start, possibly while the child is
/// still recovering; otherwise `delay` after it reported ready.
fn run_child(
    dir: &Path,
    run: u64,
    segment_bytes: u64,
    delay: Duration,
    kill_before_ready: bool,
) -> ChildRun {
    let child = Command::new(CHILD)
        .arg(dir)
        .arg(run.to_string())
        .arg(segment_bytes.to_string())
        .arg(PRODUCERS.to_string())
        .arg(CHILD_MAX_SECONDS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start crash_child");
    let mut child = ChildGuard(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut ready = false;
        let mut lines = BufReader::new(stdout);
        let mut line = String::new();
        // Only whole lines count: a kill may cut the last one short.
        while lines.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            if let Some(l) = line.strip_suffix('\n') {
                if l.starts_with("READY ") {
                    ready = true;
                    let _ = ready_tx.send(());
                } else if let Some(ack) = Ack::parse(l) {
                    acks.push(ack);
                } else {
                    panic!("unexpected line from crash_child: {l:?}");
                }
            }
            line.clear();
        }
        ChildRun { ready, acks }
    });
    if kill_before_ready {
        std::thread::sleep(delay);
    } else {
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => std::thread::sleep(delay),
            Err(_) => {
                let status = child.0.try_wait();
                panic!("crash_child not ready after {READY_TIMEOUT:?} (status {status:?})");
            }
        }
    }
    let status = child.0.try_wait().expect("poll child");
    assert!(
        status.is_none(),
        "crash_child exited by itself before the kill: {status:?}"
    );
    child.0.kill().expect("SIGKILL crash_child");
    child.0.wait().expect("reap crash_child");
    reader.join().expect("stdout reader")
}

/// What the verifier found in a recovered log.
struct Verified {
    log_end_offset: i64,
    batches: usize,
    /// The batch the verifier appended (and saw committed) after recovery.
    appended: Ack,
}

/// Reopens the log, reads every batch from the log start to the high watermark and
/// checks it against the acknowledgements, then appends one batch to prove the
/// recovered log takes writes. Runs on its own executor; returns what went wrong.
fn verify(dir: &Path, segment_bytes: u64, acks: &[Ack], run: u64) -> Result<Verified, String> {
    let dir = dir.to_path_buf();
    let acks = acks.to_vec();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move { verify_on_executor(&dir, segment_bytes, &acks, run).await })
        .map_err(|e| format!("spawn executor: {e}"))?
        .join()
        .map_err(|e| format!("verifier executor: {e}"))?
}

async fn verify_on_executor(
    dir: &Path,
    segment_bytes: u64,
    acks: &[Ack],
    run: u64,
) -> Result<Verified, String> {
    prepare_io(dir).await.map_err(|e| e.to_string())?;
    let config = LogConfig {
        segment_bytes,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir, config)
        .await
        .map_err(|e| format!("reopen: {e}"))?;
    let start = log.log_start_offset().0;
    let end = log.log_end_offset().0;
    let hw = log.high_watermark().0;
    if hw != end {
        return Err(format!(
            "after recovery high watermark {hw} != log end {end}"
        ));
    }
    // base offset -> (identity, last offset) of every batch the log serves.
    let mut served: HashMap<i64, (BatchId, i64)> = HashMap::new();
    let mut next = start;
    while next < hw {
        let out = log
            .read(Offset(next), 1 << 20)
            .await
            .map_err(|e| format!("read at {next}: {e}"))?;
        if out.total_len() == 0 {
            return Err(format!(
                "read at {next} returned nothing below the high watermark {hw} \
                 (log start {start}): offsets are not dense"
            ));
        }
        let bytes: Vec<u8> = out.chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut pos = 0;
        while pos < bytes.len() {
            let header = batch::parse_header(&bytes[pos..])
                .map_err(|e| format!("batch at offset {next}: {e}"))?;
            let len = header.total_len();
            let one = bytes
                .get(pos..pos + len)
                .ok_or_else(|| format!("batch at offset {next} cut short by the read"))?;
            batch::validate_batch(one)
                .map_err(|e| format!("served batch at offset {next} is invalid: {e}"))?;
            let base = header.base_offset.get();
            if base != next {
                return Err(format!(
                    "batch base offset {base} where {next} was expected (not dense or \
                     not increasing)"
                ));
            }
            let id = check_contents(one)
                .map_err(|e| format!("batch at offset {base}: contents: {e}"))?;
            served.insert(base, (id, header.last_offset()));
            next = header.last_offset() + 1;
            pos += len;
        }
    }
    if next != hw {
        return Err(format!("batches end at {next}, high watermark is {hw}"));
    }
    for ack in acks {
        match served.get(&ack.base_offset) {
            Some(&(id, last)) if id == ack.id && last == ack.last_offset => {}
            Some(&(id, last)) => {
                return Err(format!(
                    "acked {} holds {id:?} ending at {last} instead",
                    ack.line()
                ))
            }
            None => {
                return Err(format!(
                    "acked {} is missing: log [{start}, {end})",
                    ack.line()
                ))
            }
        }
    }
    let max_acked = acks.iter().map(|a| a.last_offset).max().unwrap_or(-1);
    if end < max_acked + 1 {
        return Err(format!(
            "log end {end} is below the highest acked offset {max_acked} + 1"
        ));
    }
    // The recovered log must take writes, at the log end.
    let id = BatchId {
        run,
        producer: 0,
        sequence: 0,
    };
    let outcome = log
        .append(&id.batch(), LeaderEpoch(2))
        .await
        .map_err(|e| format!("append after recovery: {e}"))?
        .committed()
        .await
        .map_err(|e| format!("commit after recovery: {e}"))?;
    if outcome.base_offset != Offset(end) {
        return Err(format!(
            "append after recovery got base {} instead of the log end {end}",
            outcome.base_offset
        ));
    }
    log.flushed().await;
    // Every segment but the active one ends up sealed (with an index file), even those a
    // crash left unsealed: retention deletes only sealed segments.
    let (logs, indexes) = segment_files(dir);
    let expected: Vec<String> = logs[..logs.len().saturating_sub(1)]
        .iter()
        .map(|l| l.replace(".log", ".index"))
        .collect();
    if indexes != expected {
        return Err(format!(
            "after recovery and flush, index files {indexes:?} for segments {logs:?}"
        ));
    }
    Ok(Verified {
        log_end_offset: end,
        batches: served.len(),
        appended: Ack {
            base_offset: outcome.base_offset.0,
            last_offset: outcome.last_offset.0,
            id,
        },
    })
}

/// Names of the segment and index files in `dir`, sorted.
fn segment_files(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let of = |ext: &str| names.iter().filter(|n| n.ends_with(ext)).cloned().collect();
    (of(".log"), of(".index"))
}

/// Checks that every record of a batch is exactly what its identity says it must be.
fn check_contents(batch_bytes: &[u8]) -> Result<BatchId, String> {
    let records = workload::records(batch_bytes)?;
    let first_key = records
        .first()
        .and_then(|r| r.key)
        .ok_or("no key in the first record")?;
    let (id, _) = BatchId::parse_key(first_key).ok_or("unparsable key")?;
    if records.len() != id.record_count() as usize {
        return Err(format!(
            "{id:?}: {} records, expected {}",
            records.len(),
            id.record_count()
        ));
    }
    for (i, r) in records.iter().enumerate() {
        let i = i as u32;
        if r.offset_delta != i as i32
            || r.key != Some(id.key(i).as_slice())
            || r.value != id.value(i).as_slice()
        {
            return Err(format!("{id:?}: record {i} differs from what was sent"));
        }
    }
    Ok(id)
}

/// One directory's life: its settings and everything acknowledged in it so far.
struct DirState {
    path: PathBuf,
    segment_bytes: u64,
    cycles_left: u64,
    acks: Vec<Ack>,
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_record() {
    let iterations = env_u64("CRASH_ITERATIONS", 50);
    let max_delay_ms = env_u64("CRASH_MAX_DELAY_MS", 150);
    let seed = env_u64(
        "CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    eprintln!("crash test: CRASH_SEED={seed} CRASH_ITERATIONS={iterations}");
    let mut rng = Rng::new(seed);
    // Under target/ (ext4): /tmp may be tmpfs, where O_DIRECT is unavailable.
    let root =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{}", std::process::id()));
    let started = Instant::now();
    let mut state: Option<DirState> = None;
    let (mut total_acks, mut kills_before_ready, mut small_dirs, mut dirs) = (0usize, 0, 0, 0);
    let mut max_log_end = 0i64;
    for iteration in 0..iterations {
        if state.as_ref().is_none_or(|s| s.cycles_left == 0) {
            if let Some(old) = state.take() {
                let _ = std::fs::remove_dir_all(&old.path);
            }
            let small = rng.next_u64().is_multiple_of(2);
            let segment_bytes = if small {
                small_dirs += 1;
                SMALL_SEGMENT_BYTES[rng.range(0, SMALL_SEGMENT_BYTES.len() as u64 - 1) as usize]
            } else {
                LogConfig::default().segment_bytes
            };
            dirs += 1;
            let path = root.join(format!("dir-{iteration}"));
            let _ = std::fs::remove_dir_all(&path);
            state = Some(DirState {
                path,
                segment_bytes,
                cycles_left: rng.range(1, MAX_CYCLES_PER_DIR),
                acks: Vec::new(),
            });
        }
        let dir = state.as_mut().expect("set above");
        dir.cycles_left -= 1;
        let kill_before_ready = rng.range(0, 7) == 0;
        let delay = if kill_before_ready {
            kills_before_ready += 1;
            Duration::from_millis(rng.range(0, 40))
        } else {
            Duration::from_micros(rng.range(0, max_delay_ms * 1000))
        };
        let run = iteration + 1;
        let child = run_child(&dir.path, run, dir.segment_bytes, delay, kill_before_ready);
        total_acks += child.acks.len();
        dir.acks.extend(child.acks.iter().copied());
        let context = format!(
            "CRASH_SEED={seed} iteration {iteration}: dir {} segment_bytes {} \
             kill {:?} after {} (child ready: {}, {} acks this run, {} in this dir)",
            dir.path.display(),
            dir.segment_bytes,
            delay,
            if kill_before_ready { "start" } else { "ready" },
            child.ready,
            child.acks.len(),
            dir.acks.len(),
        );
        match verify(
            &dir.path,
            dir.segment_bytes,
            &dir.acks,
            VERIFIER_RUN_BASE + run,
        ) {
            Ok(v) => {
                dir.acks.push(v.appended);
                max_log_end = max_log_end.max(v.log_end_offset);
                if std::env::var_os("CRASH_VERBOSE").is_some() {
                    eprintln!(
                        "{context}: ok, log end {}, {} batches",
                        v.log_end_offset, v.batches
                    );
                }
            }
            // The directory is kept for inspection.
            Err(e) => panic!("{context}: {e}"),
        }
    }
    if let Some(old) = state.take() {
        let _ = std::fs::remove_dir_all(&old.path);
    }
    let _ = std::fs::remove_dir(&root);
    eprintln!(
        "crash test: {iterations} kills ({kills_before_ready} before ready) in {dirs} \
         directories ({small_dirs} with small segments), {total_acks} acked appends checked, \
         largest log end {max_log_end}, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        iterations < 10 || total_acks > 0,
        "no child ever acknowledged an append: the test tested nothing"
    );
}

/// acks=1 answered from the page cache: the child appends lone batches while its log is
/// idle, so each is acknowledged after one buffered write, and sends itself SIGKILL right
/// after printing its last ACK, before that batch's direct-I/O write can have completed.
/// Recovery must find every acknowledged batch, over several kill/recover cycles of one
/// directory (the later ones with small segments, so appends also meet rolls).
#[test]
fn sigkill_right_after_a_page_cache_ack_loses_nothing() {
    use std::os::unix::process::ExitStatusExt;
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("crash-early-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut acks: Vec<Ack> = Vec::new();
    for cycle in 0..6u64 {
        let segment_bytes = if cycle < 3 {
            LogConfig::default().segment_bytes
        } else {
            SMALL_SEGMENT_BYTES[1]
        };
        let want = 15 + cycle * 5;
        let run = cycle + 1;
        let out = Command::new(CHILD)
            .arg(&root)
            .arg(run.to_string())
            .arg(segment_bytes.to_string())
            .arg("1")
            .arg(CHILD_MAX_SECONDS.to_string())
            .arg(want.to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("run crash_child");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "cycle {cycle}: the child should have killed itself: {:?}",
            out.status
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let got: Vec<Ack> = text.lines().filter_map(Ack::parse).collect();
        assert_eq!(got.len() as u64, want, "cycle {cycle}: ACK lines");
        acks.extend(got);
        match verify(&root, segment_bytes, &acks, VERIFIER_RUN_BASE + run) {
            Ok(v) => acks.push(v.appended),
            Err(e) => panic!("cycle {cycle} (segment_bytes {segment_bytes}): {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
