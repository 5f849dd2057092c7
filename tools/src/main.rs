//! `keel`: run a replica, show cluster status, change membership, inspect persistence logs.
use clap::{Parser, Subcommand};

mod log_cmd;

/// Keel replication engine: operator command.
#[derive(Parser, Debug)]
#[command(name = "keel", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect a persistence log file offline (verify, dump).
    Log(log_cmd::LogArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Log(args) => {
            let code = log_cmd::run(args)?;
            std::process::exit(code);
        }
    }
}
