//! `quiver-perf compare A.json B.json [...]`: prints the runs side by side with each figure's
//! ratio to the first run, and writes one SVG with all of them; `quiver-perf plot A.json`
//! re-renders a single result's SVG.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::result::RunResult;
use super::stats::Percentiles;

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Result files from `quiver-perf kafka --out`; the first is the reference.
    #[arg(required = true, num_args = 2..)]
    pub results: Vec<PathBuf>,
    /// Write the side-by-side SVG here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Result file from `quiver-perf kafka --out`.
    pub result: PathBuf,
    /// SVG path (default: the result path with .svg).
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

pub fn plot(args: PlotArgs) -> Result<()> {
    let result = RunResult::load(&args.result)?;
    let path = args
        .svg
        .unwrap_or_else(|| args.result.with_extension("svg"));
    std::fs::write(&path, crate::plot::render(&[&result]))
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

pub fn compare(args: CompareArgs) -> Result<()> {
    let results: Vec<RunResult> = args
        .results
        .iter()
        .map(|path| RunResult::load(path))
        .collect::<Result<_>>()?;
    for line in table(&results) {
        println!("{line}");
    }
    if let Some(path) = &args.svg {
        let refs: Vec<&RunResult> = results.iter().collect();
        std::fs::write(path, crate::plot::render(&refs))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Rows of figures, one column per run, each after the first with its ratio to the first.
pub fn table(results: &[RunResult]) -> Vec<String> {
    let mut rows: Vec<(String, Vec<f64>)> = vec![
        (
            "publish msg/s".into(),
            results.iter().map(|r| r.publish.messages_per_s).collect(),
        ),
        (
            "publish MB/s".into(),
            results.iter().map(|r| r.publish.mb_per_s).collect(),
        ),
        (
            "consume msg/s".into(),
            results.iter().map(|r| r.consume.messages_per_s).collect(),
        ),
        (
            "consume MB/s".into(),
            results.iter().map(|r| r.consume.mb_per_s).collect(),
        ),
    ];
    let latency_rows = |name: &str, get: &dyn Fn(&RunResult) -> &Percentiles| {
        let mut out = Vec::new();
        for (suffix, pick) in [
            ("p50", (|p: &Percentiles| p.p50) as fn(&Percentiles) -> f64),
            ("p90", |p| p.p90),
            ("p99", |p| p.p99),
            ("p99.9", |p| p.p999),
            ("p99.99", |p| p.p9999),
            ("max", |p| p.max),
        ] {
            out.push((
                format!("{name} {suffix} µs"),
                results.iter().map(|r| pick(get(r))).collect(),
            ));
        }
        out
    };
    rows.extend(latency_rows("publish", &|r| &r.publish_latency_us));
    rows.extend(latency_rows("e2e", &|r| &r.end_to_end_latency_us));
    let mut lines = Vec::new();
    let mut header = format!("{:<22}", "");
    for (index, result) in results.iter().enumerate() {
        let name = if index == 0 {
            result.label.clone()
        } else {
            format!("{} (ratio)", result.label)
        };
        header.push_str(&format!(" {name:>27}"));
    }
    lines.push(header);
    for (name, values) in rows {
        if values.iter().all(|v| *v == 0.0) {
            continue;
        }
        let mut line = format!("{name:<22}");
        for (index, value) in values.iter().enumerate() {
            if index == 0 {
                line.push_str(&format!("{value:>28.1}"));
            } else {
                let ratio = if values[0] > 0.0 {
                    format!("{:.2}x", value / values[0])
                } else {
                    "-".into()
                };
                line.push_str(&format!("{:>28}", format!("{value:.1} ({ratio})")));
            }
        }
        lines.push(line);
    }
    for result in results {
        lines.push(format!(
            "{}: {} @ {} over {} rev {} on {} ({} cores, {})",
            result.label,
            result.workload.name,
            result.bootstrap,
            result.protocol.name(),
            &result.git_revision[..result.git_revision.len().min(12)],
            result.machine.cpu_model,
            result.machine.cores,
            result.machine.kernel
        ));
    }
    lines
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Result files; runs with the same label are repetitions and are reduced to medians.
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
}

/// Prints one markdown row per label and protocol: medians over its repetitions (count in the
/// last column).
pub fn summary(args: SummaryArgs) -> Result<()> {
    let mut by_label: Vec<(String, Vec<RunResult>)> = Vec::new();
    for path in &args.results {
        let result = RunResult::load(path)?;
        // Results from before labels carried the protocol get it here, so runs over
        // different protocols never share a row.
        let label = super::run_label(
            Some(result.label.clone()),
            &result.workload,
            result.protocol,
        );
        match by_label.iter_mut().find(|(known, _)| *known == label) {
            Some((_, runs)) => runs.push(result),
            None => by_label.push((label, vec![result])),
        }
    }
    println!(
        "| run | publish MB/s | publish msg/s | publish p50 / p99 / p99.9 µs | consume MB/s | e2e p50 / p99 / p99.9 µs | CPU s/GB generator / server | runs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, runs) in &by_label {
        let median = |get: &dyn Fn(&RunResult) -> f64| -> f64 {
            let mut values: Vec<f64> = runs.iter().map(get).collect();
            values.sort_by(|a, b| a.total_cmp(b));
            let middle = values.len() / 2;
            if values.len() % 2 == 1 {
                values[middle]
            } else {
                (values[middle - 1] + values[middle]) / 2.0
            }
        };
        let latencies = |get: &dyn Fn(&RunResult) -> &Percentiles| -> String {
            if runs.iter().all(|r| get(r).count == 0) {
                return "-".into();
            }
            format!(
                "{:.0} / {:.0} / {:.0}",
                median(&|r| get(r).p50),
                median(&|r| get(r).p99),
                median(&|r| get(r).p999)
            )
        };
        let per_gb = |cpu: &dyn Fn(&RunResult) -> Option<f64>| -> String {
            if runs.iter().any(|r| cpu(r).is_none()) {
                return "-".into();
            }
            let value = median(&|r| {
                let gigabytes = r.publish.bytes.max(r.consume.bytes) as f64 / 1e9;
                cpu(r).unwrap_or(0.0) / gigabytes.max(1e-9)
            });
            format!("{value:.2}")
        };
        let cpu = format!(
            "{} / {}",
            per_gb(&|r| Some(r.generator_cpu_s)),
            per_gb(&|r| r.broker_cpu_s)
        );
        // A run that moved nothing its workload asked for is a failed measurement, and a
        // median over it is not a figure: say so in the row and on stderr.
        let empty = runs.iter().filter(|r| moved_nothing(r)).count();
        let count = if empty == 0 {
            runs.len().to_string()
        } else {
            eprintln!(
                "quiver-perf summary: {label}: {empty} of {} runs moved nothing their workload asked for",
                runs.len()
            );
            format!("{} (**{empty} empty**)", runs.len())
        };
        println!(
            "| {label} | {:.0} | {:.0} | {} | {:.0} | {} | {cpu} | {count} |",
            median(&|r| r.publish.mb_per_s),
            median(&|r| r.publish.messages_per_s),
            latencies(&|r| &r.publish_latency_us),
            median(&|r| r.consume.mb_per_s),
            latencies(&|r| &r.end_to_end_latency_us),
        );
    }
    Ok(())
}

/// Whether a run published nothing although its workload produces during the run, or
/// consumed nothing although it has consumers.
fn moved_nothing(run: &RunResult) -> bool {
    let w = &run.workload;
    let should_publish = w.produce_during_run && w.producers_per_topic > 0;
    let should_consume = w.subscriptions_per_topic > 0 && w.consumers_per_subscription > 0;
    (should_publish && run.publish.messages == 0) || (should_consume && run.consume.messages == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_that_consumed_nothing_is_empty() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench/omb-classic.json");
        let run = RunResult::load(&path).unwrap();
        assert!(run.publish.messages > 0 && run.consume.messages > 0);
        assert!(!moved_nothing(&run));
        let mut consumed_nothing = run.clone();
        consumed_nothing.consume.messages = 0;
        assert!(moved_nothing(&consumed_nothing));
        // Without consumers, nothing consumed is what was asked.
        consumed_nothing.workload.subscriptions_per_topic = 0;
        assert!(!moved_nothing(&consumed_nothing));
        let mut published_nothing = run.clone();
        published_nothing.publish.messages = 0;
        assert!(moved_nothing(&published_nothing));
        // A consumer-only workload (preloaded, no producer during the run).
        published_nothing.workload.produce_during_run = false;
        assert!(!moved_nothing(&published_nothing));
    }
}
