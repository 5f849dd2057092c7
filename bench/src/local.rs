//! `keel-bench local`: a cluster of Keel replicas in this process, driven by the shared load
//! generator ([`crate::load`]), and the fail-over time.
//!
//! For each transport and durability mode a fresh cluster is started (fresh data directories),
//! a leader is awaited, then each client count runs: every client proposes through the
//! replica it believes leads and waits for its command to be applied on that leader (the
//! proposer's `Completion`), so the latency is propose-to-chosen-and-applied on the leader.
//! Finally the leader is killed (cut off from the network with every link dropped for the
//! in-process transport, shut down for tcp) and the time until a new leader commits a command
//! is the fail-over time; the election timeout in force is recorded beside it.
//!
//! The state machine is [`BenchMachine`]: it counts commands and bytes (so applying costs
//! nothing measurable and the figures are the replication path's own).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_engine::config::{Batching, Durability, Runtime, Timing};
use keel_engine::{
    Builder, Error, LocalNetwork, Member, Replica, Role, StateMachine, TransportKind,
};

use crate::load::{RequestError, Session, Target};

/// A state machine that only counts what it applies.
#[derive(Debug, Default)]
pub struct BenchMachine {
    /// Commands applied.
    pub commands: u64,
    /// Payload bytes applied.
    pub bytes: u64,
}

impl StateMachine for BenchMachine {
    type Output = ();

    fn apply(&mut self, _decree: u64, command: &[u8]) {
        self.commands += 1;
        self.bytes += command.len() as u64;
    }

    fn save_checkpoint(&self, out: &mut dyn Write) -> std::io::Result<()> {
        out.write_all(&self.commands.to_le_bytes())?;
        out.write_all(&self.bytes.to_le_bytes())
    }

    fn load_checkpoint(&mut self, input: &mut dyn Read) -> std::io::Result<()> {
        let mut b = [0u8; 8];
        input.read_exact(&mut b)?;
        self.commands = u64::from_le_bytes(b);
        input.read_exact(&mut b)?;
        self.bytes = u64::from_le_bytes(b);
        Ok(())
    }
}

/// How the cluster is set up.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of replicas.
    pub replicas: u64,
    /// `local` (in-process channels), `tcp` or `shm`.
    pub transport: String,
    /// `none`, `file`, `uring` or `dax`.
    pub durability: String,
    /// Parent of the replicas' data directories (a disk file system for durable runs).
    pub dir: PathBuf,
    /// First TCP port (replica `i` listens on `base_port + i`).
    pub base_port: u16,
    /// Batching and pipelining bounds.
    pub batching: Batching,
    /// Protocol timing (election timeout, heartbeat, tick).
    pub timing: Timing,
    /// Pin replica `i`'s loop to core `pin_cores[i % len]` (empty: not pinned).
    pub pin_cores: Vec<usize>,
    /// Log region size per replica.
    pub log_bytes: u64,
    /// Decrees between checkpoints (the engine's default is 100,000: a run of a few seconds
    /// may never reach one, and until the first checkpoint nothing the log holds is released
    /// or recycled).
    pub checkpoint_every: u64,
}

/// Errors from running a cluster.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The configuration was refused.
    #[error("configuring replica {id}")]
    Config {
        /// Replica.
        id: u64,
        /// Why.
        #[source]
        source: keel_engine::ConfigError,
    },
    /// A replica did not start.
    #[error("starting replica {id}")]
    Start {
        /// Replica.
        id: u64,
        /// Why.
        #[source]
        source: keel_engine::StartError,
    },
    /// An unknown transport or durability name.
    #[error("unknown {what} {name:?}")]
    Unknown {
        /// `transport` or `durability`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// No leader was elected in time.
    #[error("no leader within {0:?}")]
    NoLeader(Duration),
    /// Preparing a data directory failed.
    #[error("data directory {path}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running in-process cluster.
pub struct Cluster {
    /// The replicas; `None` once killed.
    pub replicas: Vec<Option<Arc<Replica<BenchMachine>>>>,
    network: Option<LocalNetwork>,
    dirs: Vec<PathBuf>,
    /// The election timeout range in force, in milliseconds.
    pub election_timeout_ms: (u64, u64),
}

fn backend_name(durability: &str) -> Result<&'static str, LocalError> {
    Ok(match durability {
        "none" | "memory" => "memory",
        "file" => "file",
        "uring" => "uring",
        "dax" => "dax",
        other => {
            return Err(LocalError::Unknown {
                what: "durability",
                name: other.into(),
            });
        }
    })
}

impl Cluster {
    /// Starts the cluster.
    pub fn start(o: &ClusterOptions) -> Result<Cluster, LocalError> {
        assert!(o.replicas >= 1, "a cluster has at least one replica");
        let transport = match o.transport.as_str() {
            "local" => TransportKind::Local,
            "tcp" => TransportKind::Tcp,
            "shm" => TransportKind::Shm,
            other => {
                return Err(LocalError::Unknown {
                    what: "transport",
                    name: other.into(),
                });
            }
        };
        let backend = backend_name(&o.durability)?;
        let members: Vec<Member> = (1..=o.replicas)
            .map(|i| {
                let addr = match transport {
                    TransportKind::Tcp => format!("127.0.0.1:{}", o.base_port + i as u16),
                    _ => format!("bench-{}-r{i}", std::process::id()),
                };
                Member::voter(i, addr)
            })
            .collect();
        let network = (transport == TransportKind::Local).then(LocalNetwork::new);
        let mut replicas = Vec::new();
        let mut dirs = Vec::new();
        for i in 1..=o.replicas {
            let dir = o
                .dir
                .join(format!(".keel-bench-{}-r{i}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|source| LocalError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
            dirs.push(dir.clone());
            let durability = Durability {
                log_backend: backend.into(),
                log_capacity_bytes: o.log_bytes,
                checkpoint_every: o.checkpoint_every,
                ..Durability::default()
            };
            let runtime = Runtime {
                loop_core: (!o.pin_cores.is_empty())
                    .then(|| o.pin_cores[(i as usize - 1) % o.pin_cores.len()]),
                ..Runtime::default()
            };
            let config = Builder::new(i, dir)
                .members(members.clone())
                .transport(transport)
                .timing(o.timing.clone())
                .batching(o.batching.clone())
                .runtime(runtime)
                .durability(durability)
                .build()
                .map_err(|source| LocalError::Config { id: i, source })?;
            let r = match &network {
                Some(net) => Replica::start_local(config, BenchMachine::default(), net),
                None => Replica::start(config, BenchMachine::default()),
            }
            .map_err(|source| LocalError::Start { id: i, source })?;
            replicas.push(Some(Arc::new(r)));
        }
        Ok(Cluster {
            replicas,
            network,
            dirs,
            election_timeout_ms: (
                o.timing.election_timeout_min_ms,
                o.timing.election_timeout_max_ms,
            ),
        })
    }

    /// The index of a live replica that reports itself leader, waiting up to `within`.
    pub fn leader(&self, within: Duration) -> Result<usize, LocalError> {
        let start = Instant::now();
        loop {
            for (i, r) in self.replicas.iter().enumerate() {
                if let Some(r) = r
                    && r.role() == Role::Leader
                {
                    return Ok(i);
                }
            }
            if start.elapsed() > within {
                return Err(LocalError::NoLeader(within));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Proposals committed so far through every live replica (each replica counts the ones
    /// proposed through it).
    pub fn committed(&self) -> u64 {
        self.replicas
            .iter()
            .flatten()
            .filter_map(|r| r.status().wait().ok())
            .map(|s| s.proposals_committed)
            .sum()
    }

    /// Kills replica `i`: every link to it is cut (in-process transport) and it is shut down.
    pub fn kill(&mut self, i: usize) {
        if let Some(r) = self.replicas[i].take() {
            if let Some(net) = &self.network {
                net.isolate(r.id());
            }
            let _ = r.shutdown();
        }
    }

    /// Measures fail-over: kills the leader and returns the time until a command proposed to
    /// the surviving replicas is committed by a new leader.
    pub fn failover(&mut self, payload: &[u8], within: Duration) -> Result<Duration, LocalError> {
        let old = self.leader(within)?;
        let start = Instant::now();
        self.kill(old);
        loop {
            for r in self.replicas.iter().flatten() {
                if r.role() == Role::Leader && r.propose(payload.to_vec()).wait().is_ok() {
                    return Ok(start.elapsed());
                }
            }
            if start.elapsed() > within {
                return Err(LocalError::NoLeader(within));
            }
            std::hint::spin_loop();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for r in self.replicas.iter().flatten() {
            let _ = r.shutdown();
        }
        self.replicas.clear();
        for d in &self.dirs {
            // Best effort: a leftover directory is only litter.
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The cluster as a load target: each client proposes through the current leader.
impl Target for Cluster {
    type Session = KeelSession;

    fn session(&self, _client: usize) -> Result<KeelSession, RequestError> {
        let i = self.leader(Duration::from_secs(10))?;
        let leader = self.replicas[i]
            .as_ref()
            .map(Arc::clone)
            .ok_or("the leader was killed")?;
        Ok(KeelSession {
            leader,
            all: self.replicas.iter().flatten().map(Arc::clone).collect(),
        })
    }
}

/// One client of the cluster.
pub struct KeelSession {
    leader: Arc<Replica<BenchMachine>>,
    all: Vec<Arc<Replica<BenchMachine>>>,
}

impl Session for KeelSession {
    fn request(&mut self, _seq: u64, payload: &[u8]) -> Result<(), RequestError> {
        match self.leader.propose(payload.to_vec()).wait() {
            Ok(_) => Ok(()),
            Err(e @ Error::NotLeader { leader }) => {
                if let Some(id) = leader
                    && let Some(r) = self.all.iter().find(|r| r.id() == id)
                {
                    self.leader = Arc::clone(r);
                }
                Err(Box::new(e))
            }
            Err(e) => Err(Box::new(e)),
        }
    }
}

/// Parameters of the cluster for the JSON file.
pub fn cluster_params(o: &ClusterOptions) -> BTreeMap<String, serde_json::Value> {
    crate::report::params([
        ("replicas", serde_json::Value::from(o.replicas)),
        ("transport", o.transport.clone().into()),
        ("durability", o.durability.clone().into()),
        ("max_batch_entries", o.batching.max_batch_entries.into()),
        ("pipeline_window", o.batching.pipeline_window.into()),
        ("tick_us", o.timing.tick_us.into()),
        ("heartbeat_ms", o.timing.heartbeat_ms.into()),
        ("lease_ms", o.timing.lease_ms.into()),
        (
            "election_timeout_ms",
            serde_json::json!([
                o.timing.election_timeout_min_ms,
                o.timing.election_timeout_max_ms
            ]),
        ),
        ("pin_replica_cores", serde_json::json!(o.pin_cores)),
        ("log_bytes", o.log_bytes.into()),
        ("checkpoint_every", o.checkpoint_every.into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_machine_round_trips_its_checkpoint() {
        let mut m = BenchMachine::default();
        m.apply(1, b"abc");
        m.apply(2, b"de");
        let mut buf = Vec::new();
        m.save_checkpoint(&mut buf).unwrap();
        let mut n = BenchMachine::default();
        n.load_checkpoint(&mut &buf[..]).unwrap();
        assert_eq!((n.commands, n.bytes), (2, 5));
    }

    #[test]
    fn durability_names_map_to_log_backends() {
        assert_eq!(backend_name("none").unwrap(), "memory");
        assert_eq!(backend_name("file").unwrap(), "file");
        assert!(backend_name("tape").is_err());
    }
}
