//! `keel`: run a replica, show cluster status, change membership, inspect persistence logs.
use clap::{Parser, Subcommand};

/// Keel replication engine: operator command.
#[derive(Parser, Debug)]
#[command(name = "keel", version, about)]
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
