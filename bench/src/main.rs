//! `keel-bench`: Keel's latency and throughput, each figure with its ratio to the machine's own
//! limit measured in the same run.
use clap::{Parser, Subcommand};

/// Keel benchmark tool.
#[derive(Parser, Debug)]
#[command(name = "keel-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
