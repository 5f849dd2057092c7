//! `keel`: run a replica, show cluster status, change membership, inspect persistence logs,
//! run the demo.
use clap::{Parser, Subcommand};

mod cluster_cmd;
mod demo;
mod log_cmd;

/// Keel replication engine: operator command.
///
/// Start here: `keel demo` runs a local 3-replica cluster and prints throughput and latency.
#[derive(Parser, Debug)]
#[command(name = "keel", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one replica of the example key-value service from a configuration file.
    Run(cluster_cmd::RunArgs),
    /// Show every replica's role, ballot, commit index and per-peer lag.
    Status(cluster_cmd::StatusArgs),
    /// Change the cluster's membership (add a learner, promote it, remove a replica).
    Members(cluster_cmd::MembersArgs),
    /// Hand leadership to another replica.
    Transfer(cluster_cmd::TransferArgs),
    /// Start a local 3-replica cluster, drive it with the example client, print the figures.
    Demo(demo::DemoArgs),
    /// Inspect a persistence log file offline (verify, dump).
    Log(log_cmd::LogArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => cluster_cmd::run(args),
        Command::Status(args) => cluster_cmd::status(args),
        Command::Members(args) => cluster_cmd::members(args),
        Command::Transfer(args) => cluster_cmd::transfer(args),
        Command::Demo(args) => demo::demo(args),
        Command::Log(args) => {
            let code = log_cmd::run(args)?;
            std::process::exit(code);
        }
    }
}
