//! Replica configuration: built in code with [`Builder`] or read from a TOML file, validated
//! before anything starts. Every validation error names the field to fix.
//!
//! ```toml
//! id = 1                        # this replica's id; must be one of the members
//! data_dir = "/var/lib/keel/1"  # persistence log and checkpoints
//! transport = "tcp"             # "tcp" (any hosts), "shm" (processes on one host) or "rdma"
//! # rdma_device = "rxe0"         # with transport = "rdma" (cargo feature `rdma`): the verbs device
//!
//! [[members]]
//! id = 1
//! addr = "127.0.0.1:7001"       # replica-to-replica address (tcp: host:port)
//! admin_addr = "127.0.0.1:7101" # optional: where `keel status` / clients reach this replica
//! [[members]]
//! id = 2
//! addr = "127.0.0.1:7002"
//! [[members]]
//! id = 3
//! addr = "127.0.0.1:7003"
//!
//! [timing]                      # every field optional; defaults shown
//! tick_us = 500
//! heartbeat_ms = 5
//! election_timeout_min_ms = 60
//! election_timeout_max_ms = 120
//! lease_ms = 30
//! clock_drift_us = 2000
//! # check_quorum_ms = 60        # default: election_timeout_min_ms; 0 disables
//!
//! [runtime]
//! loop_core = 0                 # pin the replica loop to this core (omit: not pinned)
//! persist_core = 1              # pin the persistence thread (omit: not pinned)
//! spin_us = 50                  # bounded busy-poll before a loop parks
//!
//! # [testing]                   # TEST ONLY, never in production:
//! # fault_file = "/tmp/faults"  # drop messages the file names (see `net::fault`)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a configuration was rejected. Every variant names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field has a value that cannot work.
    #[error("invalid configuration field `{field}`: {reason}")]
    Invalid {
        /// The field, as written in the TOML file (`timing.tick_us`, `members[2].addr`).
        field: String,
        /// What is wrong and what would be accepted.
        reason: String,
    },
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for this schema (the message names the line and
    /// the field).
    #[error("cannot parse configuration file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// How replicas of the cluster reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// TCP with a member/cluster handshake; any hosts.
    #[default]
    Tcp,
    /// Shared-memory rings between processes on one host.
    Shm,
    /// In-process channels: every replica lives in this process (tests, demos, the bench).
    Local,
    /// RDMA rings over verbs on `rdma_device` (cargo feature `rdma`); set-up over TCP at `addr`.
    Rdma,
}

impl TransportKind {
    /// The name used in the configuration file.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Shm => "shm",
            TransportKind::Local => "local",
            TransportKind::Rdma => "rdma",
        }
    }
}

/// One member of the cluster's initial configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Replica id, unique in the cluster, greater than zero.
    pub id: u64,
    /// Replica-to-replica address: `host:port` for tcp; for shm and local any unique name
    /// (defaults to `replica-<id>`).
    #[serde(default)]
    pub addr: String,
    /// Where operators and clients reach this replica (`keel status`, the example service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<String>,
    /// Where this replica listens, when it differs from `addr` (behind a proxy or NAT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_addr: Option<String>,
    /// A learner receives the log but does not vote until promoted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub learner: bool,
    /// A standby is known (its address is accepted and dialed) but is not in the initial
    /// membership; it joins through a membership change (`keel members add`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
}

impl Member {
    /// A voting member.
    pub fn voter(id: u64, addr: impl Into<String>) -> Self {
        Member {
            id,
            addr: addr.into(),
            admin_addr: None,
            listen_addr: None,
            learner: false,
            standby: false,
        }
    }
}

/// Protocol timing. Time enters the protocol core as ticks of `tick_us`; every other duration
/// here is converted to ticks (rounded up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// Length of one protocol tick, in microseconds.
    pub tick_us: u64,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Smallest randomized election timeout.
    pub election_timeout_min_ms: u64,
    /// Largest randomized election timeout.
    pub election_timeout_max_ms: u64,
    /// Leader lease for local linearizable reads (0: leases off, reads use the read-index path).
    pub lease_ms: u64,
    /// Bound on clock drift between replicas, subtracted from the lease.
    pub clock_drift_us: u64,
    /// CheckQuorum: a leader that has heard from no majority of the voters for this long steps
    /// down, so its clients get [`crate::Error::NotLeader`] and retry elsewhere instead of
    /// waiting out their own timeout. Unset: `election_timeout_min_ms`. `0` disables it.
    /// Otherwise it must exceed `heartbeat_ms` and be at least `lease_ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_quorum_ms: Option<u64>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick_us: 500,
            heartbeat_ms: 5,
            election_timeout_min_ms: 60,
            election_timeout_max_ms: 120,
            lease_ms: 30,
            clock_drift_us: 2000,
            check_quorum_ms: None,
        }
    }
}

impl Timing {
    /// The check-quorum window in effect: `check_quorum_ms`, or the smallest election timeout
    /// when unset (`0`: off).
    pub fn check_quorum_window_ms(&self) -> u64 {
        self.check_quorum_ms.unwrap_or(self.election_timeout_min_ms)
    }

    /// Converts a duration in microseconds to ticks, rounding up, at least one.
    pub fn ticks(&self, us: u64) -> u64 {
        us.div_ceil(self.tick_us.max(1)).max(1)
    }
}

/// Batching and pipelining bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batching {
    /// Most commands in one decree.
    pub max_batch_entries: usize,
    /// Most payload bytes in one decree.
    pub max_batch_bytes: usize,
    /// Most decrees in flight (proposed, not yet chosen) at once.
    pub pipeline_window: usize,
    /// Most requests queued at the handle before `propose` answers [`crate::Error::Busy`].
    pub queue_limit: usize,
    /// Largest single command, in bytes.
    pub max_command_bytes: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            max_batch_entries: 256,
            max_batch_bytes: 256 * 1024,
            pipeline_window: 32,
            queue_limit: 65_536,
            max_command_bytes: 64 * 1024,
        }
    }
}

/// Where the runtime's threads run and how they wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Core to pin the replica loop to (`None`: not pinned).
    pub loop_core: Option<usize>,
    /// Core to pin the persistence thread to (`None`: not pinned).
    pub persist_core: Option<usize>,
    /// How long an idle loop busy-polls (spinning, then yielding) before it parks.
    pub spin_us: u64,
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime {
            loop_core: None,
            persist_core: None,
            spin_us: 50,
        }
    }
}

/// Persistence settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Durability {
    /// Log backend: `file` (direct I/O where the file system allows it, else pwrite +
    /// fdatasync), `file-buffered` (pwrite + fdatasync through the page cache), `uring`
    /// (io_uring), `dax` (NVM mapping) or `memory` (nothing survives the process; tests and
    /// demos only).
    pub log_backend: String,
    /// Size of the log region in bytes.
    pub log_capacity_bytes: u64,
    /// Take a checkpoint after this many applied decrees (0: never), releasing the log below it.
    pub checkpoint_every: u64,
    /// A session-consistent fast read is refused when this replica's applied decree is more than
    /// this far below the decree the client has seen.
    pub fast_read_max_lag: u64,
}

impl Default for Durability {
    fn default() -> Self {
        Durability {
            log_backend: "file".to_string(),
            log_capacity_bytes: 256 << 20,
            checkpoint_every: 100_000,
            fast_read_max_lag: 1024,
        }
    }
}

/// A replica's whole configuration. Build it with [`Builder`] or [`Config::from_toml_file`];
/// both validate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This replica's id.
    pub id: u64,
    /// The cluster's id: connections from replicas of another cluster are refused.
    #[serde(default = "default_cluster_id")]
    pub cluster_id: u64,
    /// The initial cluster configuration (used when the log holds none).
    pub members: Vec<Member>,
    /// Directory of the persistence log and checkpoints.
    pub data_dir: PathBuf,
    /// How replicas reach each other.
    #[serde(default)]
    pub transport: TransportKind,
    /// The RDMA device (e.g. `rxe0`) when `transport = "rdma"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma_device: Option<String>,
    /// Directory of the shared-memory ring files (`shm` transport; default `/dev/shm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_dir: Option<PathBuf>,
    /// Seed of the protocol core's randomness (election delays). Defaults to the replica id.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Protocol timing.
    #[serde(default)]
    pub timing: Timing,
    /// Batching and pipelining bounds.
    #[serde(default)]
    pub batching: Batching,
    /// Threads and waiting.
    #[serde(default)]
    pub runtime: Runtime,
    /// Persistence.
    #[serde(default)]
    pub durability: Durability,
    /// Test-only switches (fault injection); empty in production.
    #[serde(default, skip_serializing_if = "Testing::is_off")]
    pub testing: Testing,
}

/// Test-only switches: leave this section out of production configurations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Testing {
    /// Test only: a fault file naming replicas to isolate and links to cut; the replica drops
    /// the messages it names, over any transport ([`crate::net::fault`]). Off (and free) when
    /// unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_file: Option<PathBuf>,
}

impl Testing {
    /// No test switch is on.
    pub fn is_off(&self) -> bool {
        self.fault_file.is_none()
    }
}

impl Config {
    /// Reads and validates a TOML configuration file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let config = config.with_defaults_filled();
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates TOML text.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("<string>"),
            source: Box::new(source),
        })?;
        let config = config.with_defaults_filled();
        config.validate()?;
        Ok(config)
    }

    /// Renders the configuration as TOML (what [`Config::from_toml_str`] reads back).
    pub fn to_toml(&self) -> String {
        // Serializing plain structs of strings and integers cannot fail.
        toml::to_string_pretty(self).unwrap_or_else(|e| panic!("config serializes: {e}"))
    }

    fn with_defaults_filled(mut self) -> Config {
        for m in &mut self.members {
            if m.addr.is_empty() && self.transport != TransportKind::Tcp {
                m.addr = format!("replica-{}", m.id);
            }
        }
        self
    }

    /// This replica's entry in [`Config::members`].
    pub fn me(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.id == self.id)
    }

    /// The seed the protocol core draws its randomness from.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(self.id)
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(invalid("id", "replica ids start at 1"));
        }
        if self.members.is_empty() {
            return Err(invalid(
                "members",
                "list at least one member (normally 3 or 5), including this replica",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.id == 0 {
                return Err(invalid(
                    format!("members[{i}].id"),
                    "replica ids start at 1",
                ));
            }
            if !seen.insert(m.id) {
                return Err(invalid(
                    format!("members[{i}].id"),
                    format!("replica id {} is listed twice", m.id),
                ));
            }
            if m.addr.is_empty() {
                return Err(invalid(
                    format!("members[{i}].addr"),
                    "give the replica-to-replica address (tcp: host:port)",
                ));
            }
            if matches!(self.transport, TransportKind::Tcp | TransportKind::Rdma)
                && m.addr.parse::<SocketAddr>().is_err()
            {
                return Err(invalid(
                    format!("members[{i}].addr"),
                    format!("`{}` is not host:port with a numeric IP", m.addr),
                ));
            }
            for (name, value) in [
                ("admin_addr", &m.admin_addr),
                ("listen_addr", &m.listen_addr),
            ] {
                if let Some(a) = value
                    && a.parse::<SocketAddr>().is_err()
                {
                    return Err(invalid(
                        format!("members[{i}].{name}"),
                        format!("`{a}` is not host:port with a numeric IP"),
                    ));
                }
            }
        }
        if self.me().is_none() {
            return Err(invalid(
                "id",
                format!(
                    "replica {} is not among `members` (ids: {:?})",
                    self.id,
                    self.members.iter().map(|m| m.id).collect::<Vec<_>>()
                ),
            ));
        }
        if !self.members.iter().any(|m| !m.learner && !m.standby) {
            return Err(invalid(
                "members",
                "at least one member must be a voter (neither learner nor standby)",
            ));
        }
        if self.transport == TransportKind::Rdma {
            if !cfg!(feature = "rdma") {
                return Err(invalid(
                    "transport",
                    "\"rdma\" needs keel-engine built with the `rdma` cargo feature; use \"tcp\"",
                ));
            }
            if self.rdma_device.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(
                    "rdma_device",
                    "transport \"rdma\" needs the device name (e.g. \"rxe0\"; see `ibv_devices`)",
                ));
            }
        }
        if let Some(f) = &self.testing.fault_file
            && f.as_os_str().is_empty()
        {
            return Err(invalid(
                "testing.fault_file",
                "give a file path, or leave the field out (test-only fault injection)",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "give a directory for the log"));
        }
        let t = &self.timing;
        if !(10..=1_000_000).contains(&t.tick_us) {
            return Err(invalid(
                "timing.tick_us",
                format!("{} is outside 10..=1000000", t.tick_us),
            ));
        }
        if t.heartbeat_ms == 0 {
            return Err(invalid("timing.heartbeat_ms", "must be at least 1"));
        }
        if t.election_timeout_min_ms <= t.heartbeat_ms {
            return Err(invalid(
                "timing.election_timeout_min_ms",
                format!(
                    "{} must exceed timing.heartbeat_ms ({}), or followers depose a healthy leader",
                    t.election_timeout_min_ms, t.heartbeat_ms
                ),
            ));
        }
        if t.election_timeout_max_ms <= t.election_timeout_min_ms {
            return Err(invalid(
                "timing.election_timeout_max_ms",
                format!(
                    "{} must exceed timing.election_timeout_min_ms ({}) so elections are randomized",
                    t.election_timeout_max_ms, t.election_timeout_min_ms
                ),
            ));
        }
        if t.lease_ms > 0 && t.lease_ms >= t.election_timeout_min_ms {
            return Err(invalid(
                "timing.lease_ms",
                format!(
                    "{} must be below timing.election_timeout_min_ms ({})",
                    t.lease_ms, t.election_timeout_min_ms
                ),
            ));
        }
        if t.lease_ms > 0 && t.clock_drift_us >= t.lease_ms * 1000 {
            return Err(invalid(
                "timing.clock_drift_us",
                format!(
                    "{} us leaves no lease (timing.lease_ms is {})",
                    t.clock_drift_us, t.lease_ms
                ),
            ));
        }
        let check_quorum_ms = t.check_quorum_window_ms();
        if check_quorum_ms > 0
            && (check_quorum_ms <= t.heartbeat_ms || check_quorum_ms < t.lease_ms)
        {
            return Err(invalid(
                "timing.check_quorum_ms",
                format!(
                    "{check_quorum_ms} must exceed timing.heartbeat_ms ({}) and be at least \
                     timing.lease_ms ({}), or be 0 to turn check-quorum off",
                    t.heartbeat_ms, t.lease_ms
                ),
            ));
        }
        let b = &self.batching;
        if b.max_batch_entries == 0 {
            return Err(invalid("batching.max_batch_entries", "must be at least 1"));
        }
        if b.max_batch_bytes < b.max_command_bytes {
            return Err(invalid(
                "batching.max_batch_bytes",
                format!(
                    "{} is below batching.max_command_bytes ({}): a largest command would never fit",
                    b.max_batch_bytes, b.max_command_bytes
                ),
            ));
        }
        if b.max_command_bytes == 0 {
            return Err(invalid("batching.max_command_bytes", "must be at least 1"));
        }
        if !(1..=4096).contains(&b.pipeline_window) {
            return Err(invalid(
                "batching.pipeline_window",
                format!("{} is outside 1..=4096", b.pipeline_window),
            ));
        }
        if b.queue_limit == 0 {
            return Err(invalid("batching.queue_limit", "must be at least 1"));
        }
        let cores = core_count();
        for (field, core) in [
            ("runtime.loop_core", self.runtime.loop_core),
            ("runtime.persist_core", self.runtime.persist_core),
        ] {
            if let Some(c) = core
                && c >= cores
            {
                return Err(invalid(
                    field,
                    format!("core {c} does not exist: this machine has cores 0..{cores}"),
                ));
            }
        }
        if self.runtime.spin_us > 1_000_000 {
            return Err(invalid("runtime.spin_us", "spin at most 1000000 us (1 s)"));
        }
        let d = &self.durability;
        if !["file", "file-buffered", "uring", "dax", "memory"].contains(&d.log_backend.as_str()) {
            return Err(invalid(
                "durability.log_backend",
                format!(
                    "`{}` is not one of file, file-buffered, uring, dax, memory",
                    d.log_backend
                ),
            ));
        }
        if d.log_capacity_bytes < (1 << 20) {
            return Err(invalid(
                "durability.log_capacity_bytes",
                "give at least 1048576 (1 MiB)",
            ));
        }
        Ok(())
    }
}

fn default_cluster_id() -> u64 {
    u64::from_le_bytes(*b"KEEL\0\0\0\x01")
}

fn core_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Builds a [`Config`] in code. [`Builder::build`] validates.
///
/// ```
/// use keel_engine::config::{Builder, Member};
/// let config = Builder::new(1, "/tmp/keel-doc-1")
///     .members(vec![
///         Member::voter(1, "127.0.0.1:7001"),
///         Member::voter(2, "127.0.0.1:7002"),
///         Member::voter(3, "127.0.0.1:7003"),
///     ])
///     .build()
///     .unwrap();
/// assert_eq!(config.members.len(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    config: Config,
}

impl Builder {
    /// Starts from defaults for replica `id` keeping its data in `data_dir`.
    pub fn new(id: u64, data_dir: impl Into<PathBuf>) -> Builder {
        Builder {
            config: Config {
                id,
                cluster_id: default_cluster_id(),
                members: Vec::new(),
                data_dir: data_dir.into(),
                transport: TransportKind::Tcp,
                rdma_device: None,
                shm_dir: None,
                seed: None,
                timing: Timing::default(),
                batching: Batching::default(),
                runtime: Runtime::default(),
                durability: Durability::default(),
                testing: Testing::default(),
            },
        }
    }

    /// The initial members.
    pub fn members(mut self, members: Vec<Member>) -> Builder {
        self.config.members = members;
        self
    }

    /// The transport.
    pub fn transport(mut self, kind: TransportKind) -> Builder {
        self.config.transport = kind;
        self
    }

    /// The cluster id.
    pub fn cluster_id(mut self, id: u64) -> Builder {
        self.config.cluster_id = id;
        self
    }

    /// The core's random seed.
    pub fn seed(mut self, seed: u64) -> Builder {
        self.config.seed = Some(seed);
        self
    }

    /// Protocol timing.
    pub fn timing(mut self, timing: Timing) -> Builder {
        self.config.timing = timing;
        self
    }

    /// Batching and pipelining.
    pub fn batching(mut self, batching: Batching) -> Builder {
        self.config.batching = batching;
        self
    }

    /// Threads and waiting.
    pub fn runtime(mut self, runtime: Runtime) -> Builder {
        self.config.runtime = runtime;
        self
    }

    /// Persistence.
    pub fn durability(mut self, durability: Durability) -> Builder {
        self.config.durability = durability;
        self
    }

    /// Test-only switches (fault injection).
    pub fn testing(mut self, testing: Testing) -> Builder {
        self.config.testing = testing;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        let config = self.config.with_defaults_filled();
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Builder {
        Builder::new(1, "/tmp/x").members(vec![
            Member::voter(1, "127.0.0.1:7001"),
            Member::voter(2, "127.0.0.1:7002"),
            Member::voter(3, "127.0.0.1:7003"),
        ])
    }

    fn field_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        three().build().unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(Builder, &str)> = vec![
            (Builder::new(0, "/tmp/x"), "id"),
            (Builder::new(1, "/tmp/x"), "members"),
            (
                Builder::new(4, "/tmp/x").members(vec![Member::voter(1, "127.0.0.1:1")]),
                "id",
            ),
            (
                three().members(vec![
                    Member::voter(1, "127.0.0.1:1"),
                    Member::voter(1, "127.0.0.1:2"),
                ]),
                "members[1].id",
            ),
            (
                three().members(vec![Member::voter(1, "localhost-ish")]),
                "members[0].addr",
            ),
            (
                three().timing(Timing {
                    tick_us: 0,
                    ..Timing::default()
                }),
                "timing.tick_us",
            ),
            (
                three().timing(Timing {
                    election_timeout_max_ms: 60,
                    ..Timing::default()
                }),
                "timing.election_timeout_max_ms",
            ),
            (
                three().timing(Timing {
                    lease_ms: 60,
                    ..Timing::default()
                }),
                "timing.lease_ms",
            ),
            (
                three().timing(Timing {
                    check_quorum_ms: Some(20),
                    ..Timing::default()
                }),
                "timing.check_quorum_ms",
            ),
            (
                three().timing(Timing {
                    check_quorum_ms: Some(5),
                    lease_ms: 0,
                    ..Timing::default()
                }),
                "timing.check_quorum_ms",
            ),
            (
                three().batching(Batching {
                    pipeline_window: 0,
                    ..Batching::default()
                }),
                "batching.pipeline_window",
            ),
            (
                three().runtime(Runtime {
                    loop_core: Some(4096),
                    ..Runtime::default()
                }),
                "runtime.loop_core",
            ),
            (
                three().durability(Durability {
                    log_backend: "tape".into(),
                    ..Durability::default()
                }),
                "durability.log_backend",
            ),
            (
                three().testing(Testing {
                    fault_file: Some(PathBuf::new()),
                }),
                "testing.fault_file",
            ),
        ];
        for (builder, field) in cases {
            assert_eq!(field_of(builder.build().unwrap_err()), field);
        }
    }

    #[test]
    fn toml_round_trips_and_unknown_fields_are_named() {
        let config = three().build().unwrap();
        let text = config.to_toml();
        assert_eq!(Config::from_toml_str(&text).unwrap(), config);

        assert!(
            !text.contains("[testing]"),
            "test switches are left out when off"
        );
        let testing = three()
            .testing(Testing {
                fault_file: Some("/tmp/faults".into()),
            })
            .build()
            .unwrap();
        assert_eq!(Config::from_toml_str(&testing.to_toml()).unwrap(), testing);

        let bad = format!("{text}\nbogus_field = 1\n");
        let err = Config::from_toml_str(&bad).unwrap_err().to_string();
        assert!(err.contains("bogus_field"), "{err}");

        let minimal = r#"
            id = 2
            data_dir = "/tmp/k"
            transport = "shm"
            [[members]]
            id = 1
            [[members]]
            id = 2
        "#;
        let c = Config::from_toml_str(minimal).unwrap();
        assert_eq!(c.members[1].addr, "replica-2");
        assert_eq!(c.timing, Timing::default());
    }

    #[test]
    fn check_quorum_defaults_to_the_election_timeout_and_zero_turns_it_off() {
        let t = Timing::default();
        assert_eq!(t.check_quorum_window_ms(), t.election_timeout_min_ms);
        let off = three()
            .timing(Timing {
                check_quorum_ms: Some(0),
                ..Timing::default()
            })
            .build()
            .unwrap();
        assert_eq!(off.timing.check_quorum_window_ms(), 0);
        assert_eq!(Config::from_toml_str(&off.to_toml()).unwrap(), off);
        let text = format!(
            "{}\n",
            three()
                .build()
                .unwrap()
                .to_toml()
                .replace("[timing]\n", "[timing]\ncheck_quorum_ms = 45\n")
        );
        let c = Config::from_toml_str(&text).unwrap();
        assert_eq!(c.timing.check_quorum_ms, Some(45));
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let err = Config::from_toml_file("/nonexistent/keel.toml").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/keel.toml"));
    }
}
