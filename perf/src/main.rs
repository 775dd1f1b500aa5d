//! quiver-perf: whole-system load generator and machine baseline for Quiver.

mod kafka;
mod plot;
mod workload;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "quiver-perf", about = "Quiver performance tools", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a workload file against a Kafka-protocol broker (Quiver, Apache Kafka, Redpanda).
    Kafka(Box<kafka::KafkaArgs>),
    /// A Kafka-speaking discard server: measures the load generator's own ceiling.
    Sink(kafka::sink::SinkArgs),
    /// Print two or more results side by side (ratios to the first) and plot them together.
    Compare(kafka::compare::CompareArgs),
    /// Render a result's SVG plot again.
    Plot(kafka::compare::PlotArgs),
    /// A markdown table of results, medians over repetitions with the same label.
    Summary(kafka::compare::SummaryArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Kafka(args) => kafka::run(*args),
        Command::Sink(args) => kafka::sink::run(args),
        Command::Compare(args) => kafka::compare::compare(args),
        Command::Plot(args) => kafka::compare::plot(args),
        Command::Summary(args) => kafka::compare::summary(args),
    }
}
