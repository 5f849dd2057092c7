//! `keel run`, `keel status`, `keel members`, `keel transfer`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use keel_engine::kv::KvStore;
use keel_engine::kv::client::{Connection, KvClient};
use keel_engine::kv::service::serve;
use keel_engine::kv::wire::{Reply, Request};
use keel_engine::{Config, MemberChange, Replica, Status};

/// `keel run`
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The replica's configuration file (TOML; see `docs/EMBEDDING.md` for every field).
    #[arg(long, short)]
    config: PathBuf,
}

/// Where to find the cluster: a configuration file or explicit service addresses.
#[derive(Args, Debug)]
pub struct Target {
    /// A configuration file of any replica: every member's `admin_addr` is contacted.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Service addresses as ID=HOST:PORT (repeatable), instead of --config.
    #[arg(long = "replica", value_name = "ID=HOST:PORT", global = true)]
    replicas: Vec<String>,
}

impl Target {
    fn replicas(&self) -> anyhow::Result<Vec<(u64, SocketAddr)>> {
        let mut out = Vec::new();
        if let Some(path) = &self.config {
            let config = Config::from_toml_file(path)?;
            for m in &config.members {
                let Some(a) = &m.admin_addr else { continue };
                out.push((
                    m.id,
                    a.parse()
                        .with_context(|| format!("admin_addr of {}", m.id))?,
                ));
            }
            if out.is_empty() {
                bail!(
                    "{}: no member has an `admin_addr`; add one per member, or pass --replica ID=HOST:PORT",
                    path.display()
                );
            }
        }
        for r in &self.replicas {
            let (id, addr) = r.split_once('=').ok_or_else(|| {
                anyhow!("--replica `{r}`: write it as ID=HOST:PORT, e.g. 1=127.0.0.1:7101")
            })?;
            let id: u64 = id
                .parse()
                .with_context(|| format!("--replica `{r}`: bad id"))?;
            let addr: SocketAddr = addr
                .parse()
                .with_context(|| format!("--replica `{r}`: bad address"))?;
            out.push((id, addr));
        }
        if out.is_empty() {
            bail!("say which cluster: --config FILE or --replica ID=HOST:PORT (repeatable)");
        }
        Ok(out)
    }
}

/// `keel status`
#[derive(Args, Debug)]
pub struct StatusArgs {
    #[command(flatten)]
    target: Target,
    /// Print each replica's full status as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `keel members`
#[derive(Args, Debug)]
pub struct MembersArgs {
    #[command(subcommand)]
    change: MembersCommand,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand, Debug)]
enum MembersCommand {
    /// Add replica ID as a learner (it must be running, listed in the configs as `standby`).
    Add {
        /// The replica to add.
        id: u64,
        /// Add it as a voter at once instead of as a learner.
        #[arg(long)]
        voter: bool,
    },
    /// Promote learner ID to voter (do it once the learner has caught up).
    Promote {
        /// The learner.
        id: u64,
    },
    /// Remove replica ID from the cluster.
    Remove {
        /// The replica.
        id: u64,
    },
}

/// `keel transfer`
#[derive(Args, Debug)]
pub struct TransferArgs {
    /// The replica that should lead next.
    #[arg(long)]
    to: u64,
    #[command(flatten)]
    target: Target,
}

/// Runs one replica until it is killed or fails.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = Config::from_toml_file(&args.config)?;
    let me = config
        .me()
        .ok_or_else(|| anyhow!("replica {} is not among the members", config.id))?;
    let admin: SocketAddr = me
        .admin_addr
        .as_deref()
        .ok_or_else(|| {
            anyhow!(
                "{}: give this replica (id {}) an `admin_addr` in its [[members]] entry: the \
                 address clients and `keel status` use",
                args.config.display(),
                config.id
            )
        })?
        .parse()
        .context("admin_addr")?;
    let id = config.id;
    let replica = Arc::new(
        Replica::start(config.clone(), KvStore::new())
            .with_context(|| format!("starting replica {id}"))?,
    );
    let bound = serve(Arc::clone(&replica), admin)?;
    println!(
        "keel: replica {id} running: peers at {}, service at {bound}, data in {}",
        me.addr,
        config.data_dir.display()
    );
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(f) = replica.failure() {
            eprintln!("keel: replica {id} failed: {f}");
            if !f.backtrace.is_empty() {
                eprintln!("{}", f.backtrace);
            }
            std::process::exit(1);
        }
    }
}

fn fetch_status(addr: SocketAddr) -> anyhow::Result<Status> {
    let mut c = Connection::open(addr, Duration::from_secs(5))?;
    match c.call(&Request::Status)? {
        Reply::Status(json) => Ok(serde_json::from_str(&json)?),
        other => bail!("unexpected reply {other:?}"),
    }
}

/// Prints the cluster's status.
pub fn status(args: StatusArgs) -> anyhow::Result<()> {
    let replicas = args.target.replicas()?;
    let mut reachable = 0;
    if !args.json {
        println!(
            "{:>4} {:<10} {:>8} {:>6} {:>10} {:>10}  peers (id: lag, last heard, ack p50/p99 us)",
            "id", "role", "ballot", "leader", "commit", "applied"
        );
    }
    for (id, addr) in &replicas {
        match fetch_status(*addr) {
            Ok(s) => {
                reachable += 1;
                if args.json {
                    println!("{}", serde_json::to_string(&s)?);
                    continue;
                }
                let peers: Vec<String> = s
                    .peers
                    .iter()
                    .map(|p| {
                        format!(
                            "{}: lag {}, {}, {}/{}",
                            p.id,
                            p.lag,
                            p.last_heard_us
                                .map_or("never".to_string(), |us| format!("{} ms ago", us / 1000)),
                            p.ack_latency_us.p50,
                            p.ack_latency_us.p99
                        )
                    })
                    .collect();
                println!(
                    "{:>4} {:<10} {:>8} {:>6} {:>10} {:>10}  {}",
                    s.id,
                    s.role.to_string(),
                    format!("{}.{}", s.ballot.0, s.ballot.1),
                    s.leader.map_or("-".to_string(), |l| l.to_string()),
                    s.commit_index,
                    s.applied_index,
                    peers.join("; ")
                );
            }
            Err(e) => println!("{id:>4} unreachable at {addr}: {e}"),
        }
    }
    if reachable == 0 {
        bail!("no replica answered; are they running (`keel run --config FILE`)?");
    }
    Ok(())
}

fn admin_call(target: &Target, req: Request) -> anyhow::Result<Reply> {
    let mut client = KvClient::new(target.replicas()?);
    client.deadline = Duration::from_secs(10);
    Ok(client.call(&req)?)
}

/// Changes the membership through the leader.
pub fn members(args: MembersArgs) -> anyhow::Result<()> {
    let change = match args.change {
        MembersCommand::Add { id, voter: false } => MemberChange::AddLearner(id),
        MembersCommand::Add { id, voter: true } => MemberChange::AddVoter(id),
        MembersCommand::Promote { id } => MemberChange::Promote(id),
        MembersCommand::Remove { id } => MemberChange::Remove(id),
    };
    match admin_call(&args.target, Request::Members(change))? {
        Reply::Done { slot } => {
            println!("membership change {change:?} applied at decree {slot}");
            Ok(())
        }
        other => bail!("unexpected reply {other:?}"),
    }
}

/// Transfers leadership.
pub fn transfer(args: TransferArgs) -> anyhow::Result<()> {
    admin_call(&args.target, Request::Transfer { to: args.to })?;
    println!("replica {} leads now", args.to);
    Ok(())
}
