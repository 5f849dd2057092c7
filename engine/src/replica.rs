//! The replica: the handle a service holds, and the loop that drives the protocol core.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use keel_core::{
    AbortReason, Command, Decree, Event, Message, PersistOp, PersistToken, ProposalId, ReadId,
    ReadRefusal, ReplicaId,
};

use crate::completion::{Completer, Completion, Pool, pair};
use crate::config::{Config, ConfigError, TransportKind};
use crate::error::{Error, StartError};
use crate::net::Net;
use crate::net::local::LocalNetwork;
use crate::net::shm::ShmMesh;
use crate::persist::{LogWriter, PersistQueue, open_log, persist_thread};
use crate::runtime::{Failure, Health, Idle, Signal, doing, guard, spawn_loop};
use crate::state_machine::{Membership, Role, StateMachine};
use crate::stats::{PeerStatus, Status, Summary, count_histogram, latency_histogram, record_us};

/// A committed proposal's (or a served read's) result and the decree it reflects.
///
/// Pass `slot` to [`Replica::fast_read`] on any replica to read your own writes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied<T> {
    /// The decree (log slot) of the proposal, or the decree the read's state reflects.
    pub slot: u64,
    /// What the state machine returned.
    pub value: T,
}

/// A membership change, proposed with [`Replica::change_membership`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a learner: it receives the log and does not vote.
    AddLearner(u64),
    /// Add a voter directly (a learner is promoted).
    AddVoter(u64),
    /// Promote a learner to voter (once it has caught up).
    Promote(u64),
    /// Remove a voter or learner.
    Remove(u64),
    /// Replace voter `old` by `new` in one change.
    Replace {
        /// The voter leaving.
        old: u64,
        /// The voter joining.
        new: u64,
    },
}

impl MemberChange {
    fn to_core(self) -> keel_core::MembershipChange {
        use keel_core::MembershipChange as C;
        match self {
            MemberChange::AddLearner(id) => C::AddLearner(ReplicaId(id)),
            MemberChange::AddVoter(id) => C::AddVoter(ReplicaId(id)),
            MemberChange::Promote(id) => C::PromoteLearner(ReplicaId(id)),
            MemberChange::Remove(id) => C::Remove(ReplicaId(id)),
            MemberChange::Replace { old, new } => C::ReplaceVoter {
                old: ReplicaId(old),
                new: ReplicaId(new),
            },
        }
    }
}

fn membership_of(m: &keel_core::Membership) -> Membership {
    Membership {
        voters: m.voters.iter().map(|r| r.0).collect(),
        learners: m.learners.iter().map(|r| r.0).collect(),
    }
}

fn role_of(r: keel_core::Role) -> Role {
    match r {
        keel_core::Role::Leader => Role::Leader,
        keel_core::Role::Candidate => Role::Candidate,
        keel_core::Role::Follower => Role::Follower,
        keel_core::Role::Learner => Role::Learner,
    }
}

fn role_code(r: Role) -> u8 {
    match r {
        Role::Leader => 0,
        Role::Candidate => 1,
        Role::Follower => 2,
        Role::Learner => 3,
    }
}

fn role_from_code(c: u8) -> Role {
    match c {
        0 => Role::Leader,
        1 => Role::Candidate,
        3 => Role::Learner,
        _ => Role::Follower,
    }
}

/// A proposal waiting for its decree: the caller's completer and when it was proposed.
type PendingProposal<S> = (Completer<Applied<<S as StateMachine>::Output>>, Instant);

type ReadFn<S> = Box<dyn FnOnce(Result<(&S, u64), Error>) + Send>;

enum Request<S: StateMachine> {
    Propose {
        payload: Vec<u8>,
        done: Completer<Applied<S::Output>>,
        at: Instant,
    },
    Read {
        /// `None`: linearizable; `Some(slot)`: session-consistent at or after `slot`.
        min_slot: Option<u64>,
        run: ReadFn<S>,
    },
    Membership {
        change: MemberChange,
        done: Completer<u64>,
    },
    Transfer {
        to: u64,
        done: Completer<()>,
    },
    Relinquish {
        done: Completer<()>,
    },
    Status {
        done: Completer<Status>,
    },
}

impl<S: StateMachine> Request<S> {
    fn fail(self, error: Error) {
        match self {
            Request::Propose { done, .. } => done.complete(Err(error)),
            Request::Read { run, .. } => run(Err(error)),
            Request::Membership { done, .. } => done.complete(Err(error)),
            Request::Transfer { done, .. } | Request::Relinquish { done } => {
                done.complete(Err(error));
            }
            Request::Status { done } => done.complete(Err(error)),
        }
    }
}

struct Queue<S: StateMachine> {
    requests: VecDeque<Request<S>>,
    /// Set when the loop has stopped: later requests are answered at once.
    closed: Option<Error>,
}

struct Shared<S: StateMachine> {
    queue: Mutex<Queue<S>>,
    signal: Arc<Signal>,
    health: Arc<Health>,
    queue_limit: usize,
    /// Recycled completion states for proposals.
    proposal_pool: Arc<Pool<Applied<S::Output>>>,
    role: AtomicU8,
    leader: AtomicU64,
    commit: AtomicU64,
}

impl<S: StateMachine> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, Queue<S>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopped_error(&self) -> Error {
        match self.health.failure() {
            Some(f) => Error::Failed(f),
            None => Error::ShutDown,
        }
    }

    fn submit(&self, request: Request<S>) {
        let mut q = self.lock();
        if let Some(e) = &q.closed {
            let e = e.clone();
            drop(q);
            request.fail(e);
            return;
        }
        if q.requests.len() >= self.queue_limit {
            let queued = q.requests.len();
            drop(q);
            request.fail(Error::Busy { queued });
            return;
        }
        q.requests.push_back(request);
        drop(q);
        self.signal.notify();
    }
}

/// A running replica: the handle a service embeds. `Replica<S>` is `Send + Sync`: share it
/// (e.g. in an `Arc`) between the service's threads. Dropping it shuts the replica down.
///
/// Every request returns a [`Completion`]: block on it, poll it, give it a callback, or `.await`
/// it.
pub struct Replica<S: StateMachine> {
    id: u64,
    shared: Arc<Shared<S>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    _sm: PhantomData<fn() -> S>,
}

impl<S: StateMachine> std::fmt::Debug for Replica<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("role", &self.role())
            .field("failure", &self.failure())
            .finish()
    }
}

/// Options for [`Replica::start_with`] beyond the [`Config`].
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The in-process network to join (required when `config.transport` is `local`).
    pub local_network: Option<LocalNetwork>,
    /// The shared-memory rings to join (required when `config.transport` is `shm`).
    pub shm_mesh: Option<ShmMesh>,
}

impl<S: StateMachine> Replica<S> {
    /// Starts a replica over the transport the configuration names (`tcp` or `shm`): recovers
    /// the persistence log in `config.data_dir`, loads the latest checkpoint into
    /// `state_machine`, and starts the runtime threads.
    pub fn start(config: Config, state_machine: S) -> Result<Replica<S>, StartError> {
        Replica::start_with(config, state_machine, StartOptions::default())
    }

    /// Starts a replica that joins the in-process `network` (the configuration's transport is
    /// taken to be `local`).
    pub fn start_local(
        mut config: Config,
        state_machine: S,
        network: &LocalNetwork,
    ) -> Result<Replica<S>, StartError> {
        config.transport = TransportKind::Local;
        Replica::start_with(
            config,
            state_machine,
            StartOptions {
                local_network: Some(network.clone()),
                shm_mesh: None,
            },
        )
    }

    /// Starts a replica that exchanges messages with the other replicas of this process
    /// through the shared-memory rings of `mesh` (the configuration's transport is taken to be
    /// `shm`).
    pub fn start_shm(
        mut config: Config,
        state_machine: S,
        mesh: &ShmMesh,
    ) -> Result<Replica<S>, StartError> {
        config.transport = TransportKind::Shm;
        Replica::start_with(
            config,
            state_machine,
            StartOptions {
                local_network: None,
                shm_mesh: Some(mesh.clone()),
            },
        )
    }

    /// Starts a replica with extra options.
    pub fn start_with(
        config: Config,
        mut state_machine: S,
        options: StartOptions,
    ) -> Result<Replica<S>, StartError> {
        config.validate()?;
        let core_config = core_config(&config)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let (log, state) = open_log(
            &config.data_dir,
            &config.durability.log_backend,
            config.durability.log_capacity_bytes,
            config.id,
        )?;
        if let Some(snapshot) = &state.snapshot {
            state_machine
                .load_checkpoint(&mut &snapshot.data[..])
                .map_err(|source| StartError::Checkpoint {
                    path: crate::persist::log_path(&config.data_dir),
                    source,
                })?;
            state_machine.on_membership_change(&membership_of(&snapshot.meta.membership));
        }
        let id = ReplicaId(config.id);
        let core = keel_core::Replica::recover(id, core_config, state.clone(), config.seed())
            .map_err(|e| {
                StartError::Config(ConfigError::Invalid {
                    field: "timing".into(),
                    reason: e.to_string(),
                })
            })?;

        let health = Arc::new(Health::default());
        let signal = Signal::new();
        health.watch(Arc::clone(&signal));
        let net: Box<dyn Net> = match config.transport {
            TransportKind::Local => {
                let network = options.local_network.ok_or(StartError::Transport {
                    kind: "local",
                    reason: "no LocalNetwork given: use Replica::start_local".into(),
                })?;
                Box::new(network.join(id, Arc::clone(&signal)))
            }
            TransportKind::Tcp => Box::new(
                crate::net::tcp::TcpNet::start(&config, Arc::clone(&signal), Arc::clone(&health))
                    .map_err(|e| StartError::Transport {
                    kind: "tcp",
                    reason: e.to_string(),
                })?,
            ),
            #[cfg(feature = "rdma")]
            TransportKind::Rdma => Box::new(
                crate::net::rdma::RdmaNet::start(&config, Arc::clone(&signal), Arc::clone(&health))
                    .map_err(|e| StartError::Transport {
                        kind: "rdma",
                        reason: crate::net::rdma::error_chain(&e),
                    })?,
            ),
            #[cfg(not(feature = "rdma"))]
            TransportKind::Rdma => unreachable!("validate refuses rdma without the feature"),
            TransportKind::Shm => match options.shm_mesh {
                Some(mesh) => Box::new(mesh.join(config.id, Arc::clone(&signal)).ok_or(
                    StartError::Transport {
                        kind: "shm",
                        reason: format!(
                            "replica {} is not in the ShmMesh or already joined it",
                            config.id
                        ),
                    },
                )?),
                None => Box::new(
                    crate::net::shm::ShmProcessNet::start(
                        &config,
                        Arc::clone(&signal),
                        Arc::clone(&health),
                    )
                    .map_err(|e| StartError::Transport {
                        kind: "shm",
                        reason: e.to_string(),
                    })?,
                ),
            },
        };

        let net = crate::net::fault::wrap(net, &config)?; // test-only; untouched when off

        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                requests: VecDeque::new(),
                closed: None,
            }),
            signal: Arc::clone(&signal),
            health: Arc::clone(&health),
            queue_limit: config.batching.queue_limit,
            proposal_pool: Pool::new(config.batching.queue_limit),
            role: AtomicU8::new(role_code(Role::Follower)),
            leader: AtomicU64::new(0),
            commit: AtomicU64::new(core.commit_index()),
        });

        let writer = LogWriter::new(log, state);
        let spin = Duration::from_micros(config.runtime.spin_us);
        let mut threads = Vec::new();
        let persist = if config.durability.log_backend == "memory" {
            Persistence::Inline(Box::new(writer))
        } else {
            let queue = PersistQueue::new();
            health.watch(Arc::clone(&queue.signal));
            let q = Arc::clone(&queue);
            let loop_signal = Arc::clone(&signal);
            let h = Arc::clone(&health);
            let name = format!("keel-persist-{}", config.id);
            threads.push(
                spawn_loop(
                    name.clone(),
                    config.id,
                    config.runtime.persist_core,
                    Arc::clone(&health),
                    move || persist_thread(writer, q, loop_signal, h, spin),
                )
                .map_err(|source| StartError::Spawn { name, source })?,
            );
            Persistence::Thread(queue)
        };

        let incarnation = u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
                & 0xffff,
        );
        let tick = Duration::from_micros(config.timing.tick_us);
        let now = Instant::now();
        let lp = Loop {
            id: config.id,
            core,
            sm: state_machine,
            net,
            shared: Arc::clone(&shared),
            persist,
            spin,
            events: Vec::with_capacity(1024),
            commands: Vec::with_capacity(1024),
            inbound: Vec::with_capacity(1024),
            requests: VecDeque::with_capacity(1024),
            persist_ops: Vec::with_capacity(256),
            proposals: HashMap::with_capacity(4096),
            reads: HashMap::new(),
            membership_change: None,
            transfer: None,
            proposal_prefix: ((config.id & 0xffff) << 48) | (incarnation << 32),
            next_proposal: 1,
            next_read: 1,
            fed_durable: PersistToken(0),
            tick,
            next_tick: now + tick,
            ticks: 0,
            electable: true,
            started: now,
            commit_latency: latency_histogram(),
            batch_size: count_histogram(),
            committed: 0,
            peers: BTreeMap::new(),
            transfer_timeout: Duration::from_millis(config.timing.election_timeout_max_ms * 4),
            parks: 0,
        };
        let name = format!("keel-loop-{}", config.id);
        let h = Arc::clone(&health);
        let thread_name = name.clone();
        let replica_id = config.id;
        threads.push(
            spawn_loop(
                name.clone(),
                config.id,
                config.runtime.loop_core,
                Arc::clone(&health),
                move || {
                    let mut lp = lp;
                    lp.shared.signal.bind_current();
                    let outcome = guard(replica_id, &thread_name, &h, || lp.run());
                    let error = match outcome {
                        Ok(()) => lp.shared.stopped_error(),
                        Err(f) => Error::Failed(f),
                    };
                    lp.finish(error);
                },
            )
            .map_err(|source| StartError::Spawn { name, source })?,
        );
        Ok(Replica {
            id: config.id,
            shared,
            threads: Mutex::new(threads),
            _sm: PhantomData,
        })
    }

    /// This replica's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The role as of the loop's last pass (no round trip).
    pub fn role(&self) -> Role {
        role_from_code(self.shared.role.load(Ordering::Acquire))
    }

    /// The leader this replica knows of, as of the loop's last pass.
    pub fn leader(&self) -> Option<u64> {
        match self.shared.leader.load(Ordering::Acquire) {
            0 => None,
            id => Some(id),
        }
    }

    /// The commit index as of the loop's last pass.
    pub fn commit_index(&self) -> u64 {
        self.shared.commit.load(Ordering::Acquire)
    }

    /// The failure that stopped this replica, if a runtime thread panicked.
    pub fn failure(&self) -> Option<Arc<Failure>> {
        self.shared.health.failure()
    }

    /// `Ok` while the replica runs; the failure (or [`Error::ShutDown`]) once it stopped.
    pub fn health(&self) -> Result<(), Error> {
        if self.shared.health.stopping() {
            Err(self.shared.stopped_error())
        } else {
            Ok(())
        }
    }

    /// Proposes `command` for replication. The completion yields the state machine's output
    /// once the command is chosen and applied here, with the decree it was applied at. On a
    /// replica that is not the leader it fails with [`Error::NotLeader`] (naming the leader
    /// when known).
    ///
    /// The command's `Vec` is moved into the log as it is (Keel does not copy it): that buffer
    /// is the caller's one allocation per proposal. Everything else Keel does per proposal
    /// reuses memory once warm: the completion's state comes from a pool, the proposal rides a
    /// shared batch to the log and every peer.
    pub fn propose(&self, command: impl Into<Vec<u8>>) -> Completion<Applied<S::Output>> {
        let (done, completion) = self.shared.proposal_pool.pair();
        self.shared.submit(Request::Propose {
            payload: command.into(),
            done,
            at: Instant::now(),
        });
        completion
    }

    fn read_request<R, F>(&self, min_slot: Option<u64>, f: F) -> Completion<Applied<R>>
    where
        R: Send + 'static,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        let (done, completion) = pair();
        let run: ReadFn<S> = Box::new(move |r: Result<(&S, u64), Error>| match r {
            Ok((sm, slot)) => done.complete(Ok(Applied { slot, value: f(sm) })),
            Err(e) => done.complete(Err(e)),
        });
        self.shared.submit(Request::Read { min_slot, run });
        completion
    }

    /// A linearizable read: runs `f` on the state machine once it reflects every write
    /// acknowledged before the call (leader only: a lease read, or a read-index round when
    /// leases are off).
    pub fn read<R, F>(&self, f: F) -> Completion<Applied<R>>
    where
        R: Send + 'static,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        self.read_request(None, f)
    }

    /// A session-consistent read on any replica (RSL's fast read): runs `f` once this replica
    /// has applied `min_slot` (the highest slot the client has seen). Refused with
    /// [`Error::ReadRefused`] when the replica lags too far behind.
    pub fn fast_read<R, F>(&self, min_slot: u64, f: F) -> Completion<Applied<R>>
    where
        R: Send + 'static,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        self.read_request(Some(min_slot), f)
    }

    /// Replicates a membership change (leader only). Completes with the decree at which the
    /// new membership was applied.
    pub fn change_membership(&self, change: MemberChange) -> Completion<u64> {
        let (done, completion) = pair();
        self.shared.submit(Request::Membership { change, done });
        completion
    }

    /// Hands leadership to voter `to` (leader only). Completes once this replica has stepped
    /// down and knows `to` as leader, or fails with [`Error::Timeout`].
    pub fn transfer_leadership(&self, to: u64) -> Completion<()> {
        let (done, completion) = pair();
        self.shared.submit(Request::Transfer { to, done });
        completion
    }

    /// Steps down from leadership now (RSL's relinquish primary).
    pub fn relinquish(&self) -> Completion<()> {
        let (done, completion) = pair();
        self.shared.submit(Request::Relinquish { done });
        completion
    }

    /// Status and statistics: role, ballot, commit and applied index, per-peer lag and
    /// acknowledgement latency, commit and flush latency histograms.
    pub fn status(&self) -> Completion<Status> {
        let (done, completion) = pair();
        self.shared.submit(Request::Status { done });
        completion
    }

    /// Stops the replica and waits for its threads. Queued requests are answered with
    /// [`Error::ShutDown`]. Returns the failure if a thread had panicked.
    pub fn shutdown(&self) -> Result<(), Arc<Failure>> {
        self.shared.health.stop();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for t in threads {
            let _ = t.join();
        }
        match self.shared.health.failure() {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

impl<S: StateMachine> Drop for Replica<S> {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn core_config(config: &Config) -> Result<keel_core::Config, StartError> {
    let mut membership = keel_core::Membership::default();
    for m in config.members.iter().filter(|m| !m.standby) {
        if m.learner {
            membership.learners.insert(ReplicaId(m.id));
        } else {
            membership.voters.insert(ReplicaId(m.id));
        }
    }
    let t = &config.timing;
    let b = &config.batching;
    let mut c = keel_core::Config::new(membership);
    c.heartbeat_ticks = t.ticks(t.heartbeat_ms * 1000);
    c.election_timeout_min_ticks = t.ticks(t.election_timeout_min_ms * 1000);
    c.election_timeout_max_ticks = t
        .ticks(t.election_timeout_max_ms * 1000)
        .max(c.election_timeout_min_ticks + 1);
    c.lease_ticks = if t.lease_ms == 0 {
        0
    } else {
        t.ticks(t.lease_ms * 1000)
    };
    c.clock_drift_ticks = t.ticks(t.clock_drift_us);
    c.check_quorum_ticks = match t.check_quorum_window_ms() {
        0 => 0,
        ms => t.ticks(ms * 1000),
    };
    c.max_in_flight = b.pipeline_window as u64;
    c.max_batch_count = b.max_batch_entries;
    c.max_batch_bytes = b.max_batch_bytes;
    c.max_payload_bytes = b.max_command_bytes;
    c.max_queued_proposals = b.queue_limit;
    c.fast_read_lag_max = config.durability.fast_read_max_lag;
    c.read_timeout_ticks = c.election_timeout_max_ticks * 2;
    c.snapshot_interval = config.durability.checkpoint_every;
    c.validate().map_err(|e| {
        StartError::Config(ConfigError::Invalid {
            field: "timing".into(),
            reason: format!("after conversion to ticks of timing.tick_us: {e}"),
        })
    })?;
    Ok(c)
}

enum Persistence {
    /// The loop writes and flushes itself (memory backend: flushes cost nothing).
    Inline(Box<LogWriter>),
    /// A persistence thread writes; the loop reads the durable token.
    Thread(Arc<PersistQueue>),
}

struct PeerTrack {
    acked_slot: u64,
    commit: u64,
    last_heard: Option<Instant>,
    ack_latency: Histogram<u64>,
    /// Accept messages in flight to this peer: (highest slot, sent at). Bounded.
    sent: VecDeque<(u64, Instant)>,
}

impl PeerTrack {
    fn new() -> PeerTrack {
        PeerTrack {
            acked_slot: 0,
            commit: 0,
            last_heard: None,
            ack_latency: latency_histogram(),
            sent: VecDeque::with_capacity(256),
        }
    }
}

const PEER_SENT_TRACKED: usize = 256;
const REQUESTS_PER_PASS: usize = 4096;
const TICKS_PER_PASS_MAX: u64 = 10_000;

struct Loop<S: StateMachine> {
    id: u64,
    core: keel_core::Replica,
    sm: S,
    net: Box<dyn Net>,
    shared: Arc<Shared<S>>,
    persist: Persistence,
    spin: Duration,
    events: Vec<Event>,
    commands: Vec<Command>,
    inbound: Vec<(ReplicaId, Message)>,
    requests: VecDeque<Request<S>>,
    persist_ops: Vec<(PersistToken, PersistOp)>,
    proposals: HashMap<u64, PendingProposal<S>>,
    reads: HashMap<u64, ReadFn<S>>,
    membership_change: Option<(u64, keel_core::Membership, Completer<u64>)>,
    transfer: Option<(u64, Instant, Completer<()>)>,
    proposal_prefix: u64,
    next_proposal: u64,
    next_read: u64,
    fed_durable: PersistToken,
    tick: Duration,
    next_tick: Instant,
    ticks: u64,
    electable: bool,
    started: Instant,
    commit_latency: Histogram<u64>,
    batch_size: Histogram<u64>,
    committed: u64,
    peers: BTreeMap<u64, PeerTrack>,
    transfer_timeout: Duration,
    parks: u64,
}

impl<S: StateMachine> Loop<S> {
    fn run(&mut self) {
        let mut idle = Idle::new(self.spin);
        while !self.shared.health.stopping() {
            let worked = self.pass();
            if worked {
                idle.busy();
            } else {
                doing("idle");
                idle.idle(&self.shared.signal, self.next_tick);
                self.parks = idle.parks;
            }
        }
    }

    /// One pass: completions (durability, peer messages) first, then time, then requests, all
    /// fed to the core as one batch; then the commands carried out; then one flush of the
    /// network. Returns whether anything happened.
    fn pass(&mut self) -> bool {
        doing("draining completions");
        // Durability completions.
        if let Persistence::Thread(q) = &self.persist {
            let durable = q.durable();
            if durable > self.fed_durable {
                self.fed_durable = durable;
                self.events.push(Event::Persisted { token: durable });
            }
        }
        // Time: every tick that passed, so the core's clock never runs slow (leases rely on it).
        let now = Instant::now();
        let mut ticks = 0;
        while now >= self.next_tick && ticks < TICKS_PER_PASS_MAX {
            self.events.push(Event::Tick);
            self.next_tick += self.tick;
            ticks += 1;
        }
        if ticks == TICKS_PER_PASS_MAX {
            self.next_tick = now + self.tick;
        }
        self.ticks += ticks;
        if ticks > 0 && self.ticks % 16 < ticks {
            self.check_electable();
        }
        // Peer messages.
        self.net.drain(&mut self.inbound);
        for (from, msg) in self.inbound.drain(..) {
            if let Some(p) = self.peers.get_mut(&from.0) {
                p.last_heard = Some(now);
                match &msg {
                    Message::Accepted { slots, .. } => {
                        if let Some(&high) = slots.iter().max() {
                            p.acked_slot = p.acked_slot.max(high);
                            let mut sent_at = None;
                            while let Some(&(s, at)) = p.sent.front() {
                                if s > high {
                                    break;
                                }
                                sent_at = Some(at);
                                p.sent.pop_front();
                            }
                            if let Some(at) = sent_at {
                                record_us(&mut p.ack_latency, now - at);
                            }
                        }
                    }
                    Message::HeartbeatReply { commit, .. } | Message::Promise { commit, .. } => {
                        p.commit = p.commit.max(*commit);
                    }
                    _ => {}
                }
            } else {
                let mut p = PeerTrack::new();
                p.last_heard = Some(now);
                self.peers.insert(from.0, p);
            }
            self.events.push(Event::Message { from, msg });
        }
        // Requests from the handle.
        {
            let mut q = self.shared.lock();
            let n = q.requests.len().min(REQUESTS_PER_PASS);
            self.requests.extend(q.requests.drain(..n));
            if !q.requests.is_empty() {
                self.shared.signal.notify();
            }
        }
        while let Some(r) = self.requests.pop_front() {
            self.on_request(r, now);
        }
        if self.events.is_empty() {
            self.check_transfer(now);
            return false;
        }
        // Step and carry out until quiescent (inline persistence and checkpoints feed events
        // back).
        let mut rounds = 0;
        while !self.events.is_empty() {
            rounds += 1;
            assert!(
                rounds < 1000,
                "replica {}: loop pass did not settle",
                self.id
            );
            doing("stepping the protocol core");
            // One step batch: proposals of this pass join one decree (group commit).
            self.core
                .step_batch(self.events.drain(..), &mut self.commands);
            doing("carrying out commands");
            let mut commands = std::mem::take(&mut self.commands);
            for command in commands.drain(..) {
                self.execute(command, now);
            }
            self.commands = commands;
            self.flush_persistence();
        }
        doing("flushing the network");
        self.net.flush();
        self.publish();
        self.check_transfer(now);
        true
    }

    fn publish(&self) {
        self.shared
            .role
            .store(role_code(role_of(self.core.role())), Ordering::Release);
        self.shared.leader.store(
            self.core.leader_hint().map_or(0, |r| r.0),
            Ordering::Release,
        );
        self.shared
            .commit
            .store(self.core.commit_index(), Ordering::Release);
    }

    fn check_electable(&mut self) {
        if self.core.role() == keel_core::Role::Leader {
            return;
        }
        doing("asking the state machine whether it may become leader");
        let electable = self.sm.may_become_leader();
        if electable != self.electable {
            self.electable = electable;
            self.events.push(Event::SetElectable(electable));
        }
    }

    fn check_transfer(&mut self, now: Instant) {
        let Some((to, deadline, _)) = &self.transfer else {
            return;
        };
        let done = self.core.role() != keel_core::Role::Leader
            && self.core.leader_hint() == Some(ReplicaId(*to));
        if done || now >= *deadline {
            let waited = self.transfer_timeout;
            if let Some((_, _, c)) = self.transfer.take() {
                c.complete(if done {
                    Ok(())
                } else {
                    Err(Error::Timeout {
                        waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                    })
                });
            }
        }
    }

    fn on_request(&mut self, request: Request<S>, now: Instant) {
        match request {
            Request::Propose { payload, done, at } => {
                if done.is_abandoned() {
                    return;
                }
                let id = self.proposal_prefix | (self.next_proposal & 0xffff_ffff);
                self.next_proposal += 1;
                self.proposals.insert(id, (done, at));
                self.events.push(Event::Propose {
                    id: ProposalId(id),
                    payload,
                });
            }
            Request::Read { min_slot, run } => {
                let id = self.next_read;
                self.next_read += 1;
                self.reads.insert(id, run);
                self.events.push(match min_slot {
                    None => Event::Read { id: ReadId(id) },
                    Some(min_slot) => Event::FastRead {
                        id: ReadId(id),
                        min_slot,
                    },
                });
            }
            Request::Membership { change, done } => {
                if self.membership_change.is_some() {
                    done.complete(Err(Error::Refused {
                        reason: "another membership change from this replica is pending".into(),
                    }));
                    return;
                }
                let change = change.to_core();
                let expected = match self.core.membership().apply_change(&change) {
                    Ok(m) => m,
                    Err(e) => {
                        done.complete(Err(Error::Refused {
                            reason: e.to_string(),
                        }));
                        return;
                    }
                };
                let id = self.proposal_prefix | (self.next_proposal & 0xffff_ffff);
                self.next_proposal += 1;
                self.membership_change = Some((id, expected, done));
                self.events.push(Event::ChangeMembership {
                    id: ProposalId(id),
                    change,
                });
            }
            Request::Transfer { to, done } => {
                if self.core.role() != keel_core::Role::Leader {
                    done.complete(Err(Error::NotLeader {
                        leader: self.core.leader_hint().map(|r| r.0),
                    }));
                    return;
                }
                if let Some((_, _, old)) = self.transfer.take() {
                    old.complete(Err(Error::Refused {
                        reason: "superseded by a newer transfer".into(),
                    }));
                }
                self.transfer = Some((to, now + self.transfer_timeout, done));
                self.events
                    .push(Event::TransferLeadership { to: ReplicaId(to) });
            }
            Request::Relinquish { done } => {
                self.events.push(Event::Relinquish);
                done.complete(Ok(()));
            }
            Request::Status { done } => {
                done.complete(Ok(self.status(now)));
            }
        }
    }

    fn execute(&mut self, command: Command, now: Instant) {
        match command {
            Command::Persist { token, op } => self.persist_ops.push((token, op)),
            Command::Send { to, msg } => {
                if let Message::Accept { entries, .. } = &msg
                    && let Some(last) = entries.last()
                {
                    let p = self.peers.entry(to.0).or_insert_with(PeerTrack::new);
                    if p.sent.len() == PEER_SENT_TRACKED {
                        p.sent.pop_front();
                    }
                    p.sent.push_back((last.slot, now));
                }
                self.net.send(to, msg);
            }
            Command::Apply { slot, decree } => {
                doing("applying a decree to the state machine");
                match decree {
                    Decree::Noop => {}
                    Decree::Batch(proposals) => {
                        self.batch_size
                            .saturating_record(proposals.len().max(1) as u64);
                        for p in proposals.iter() {
                            let value = self.sm.apply(slot, &p.payload);
                            if let Some((done, at)) = self.proposals.remove(&p.id.0) {
                                self.committed += 1;
                                record_us(&mut self.commit_latency, now.max(at) - at);
                                done.complete(Ok(Applied { slot, value }));
                            }
                        }
                    }
                    Decree::Membership(m) => {
                        self.sm.on_membership_change(&membership_of(&m));
                    }
                }
            }
            Command::TakeSnapshot { slot } => {
                doing("saving a checkpoint");
                let mut data = Vec::new();
                if let Err(e) = self.sm.save_checkpoint(&mut data) {
                    panic!(
                        "replica {}: state machine failed to save a checkpoint at slot {slot}: {e}",
                        self.id
                    );
                }
                self.events.push(Event::SnapshotTaken { slot, data });
            }
            Command::InstallSnapshot { snapshot } => {
                doing("loading a checkpoint received from the leader");
                if let Err(e) = self.sm.load_checkpoint(&mut &snapshot.data[..]) {
                    panic!(
                        "replica {}: state machine failed to load the checkpoint at slot {}: {e}",
                        self.id, snapshot.meta.slot
                    );
                }
                self.sm
                    .on_membership_change(&membership_of(&snapshot.meta.membership));
            }
            Command::ProposalAborted { id, reason } => {
                let error = abort_error(&reason);
                if self
                    .membership_change
                    .as_ref()
                    .is_some_and(|(mid, _, _)| *mid == id.0)
                {
                    if let Some((_, _, done)) = self.membership_change.take() {
                        done.complete(Err(error));
                    }
                } else if let Some((done, _)) = self.proposals.remove(&id.0) {
                    done.complete(Err(error));
                }
            }
            Command::ReadReady { id, slot } => {
                if let Some(run) = self.reads.remove(&id.0) {
                    doing("serving a read");
                    run(Ok((&self.sm, slot)));
                }
            }
            Command::ReadRefused { id, reason } => {
                if let Some(run) = self.reads.remove(&id.0) {
                    run(Err(match reason {
                        ReadRefusal::NotLeader { hint } => Error::NotLeader {
                            leader: hint.map(|r| r.0),
                        },
                        other => Error::ReadRefused {
                            reason: format!("{other:?}"),
                        },
                    }));
                }
            }
            Command::RoleChanged { role, .. } => {
                doing("notifying the state machine of a role change");
                self.sm.on_role_change(role_of(role));
                if role != keel_core::Role::Leader {
                    // Reads queued at a leader that lost its role are refused by the core;
                    // proposals in flight are aborted by the core too.
                }
            }
            Command::MembershipChanged { slot, membership } => {
                if self
                    .membership_change
                    .as_ref()
                    .is_some_and(|(_, expected, _)| *expected == membership)
                    && let Some((_, _, done)) = self.membership_change.take()
                {
                    done.complete(Ok(slot));
                }
            }
        }
    }

    fn flush_persistence(&mut self) {
        if self.persist_ops.is_empty() {
            return;
        }
        doing("persisting");
        match &mut self.persist {
            Persistence::Inline(writer) => {
                if let Some(token) = writer.write_batch(&mut self.persist_ops) {
                    self.fed_durable = token;
                    self.events.push(Event::Persisted { token });
                }
            }
            Persistence::Thread(q) => q.submit(&mut self.persist_ops),
        }
    }

    fn status(&self, now: Instant) -> Status {
        let commit = self.core.commit_index();
        let membership = self.core.membership();
        let peers = membership
            .members()
            .filter(|r| r.0 != self.id)
            .map(|r| {
                let p = self.peers.get(&r.0);
                let peer_commit = p.map_or(0, |p| p.commit.max(p.acked_slot.min(commit)));
                PeerStatus {
                    id: r.0,
                    acked_slot: p.map_or(0, |p| p.acked_slot),
                    commit_index: peer_commit,
                    lag: commit.saturating_sub(peer_commit),
                    last_heard_us: p
                        .and_then(|p| p.last_heard)
                        .map(|t| u64::try_from((now - t).as_micros()).unwrap_or(u64::MAX)),
                    ack_latency_us: p
                        .map_or_else(Summary::default, |p| Summary::of(&p.ack_latency)),
                }
            })
            .collect();
        let (flush, flushes) = match &self.persist {
            Persistence::Thread(q) => {
                let s = q.stats.lock().unwrap_or_else(PoisonError::into_inner);
                (Summary::of(&s.latency), s.flushes)
            }
            Persistence::Inline(_) => (Summary::default(), 0),
        };
        let ballot = self.core.promised();
        Status {
            id: self.id,
            role: role_of(self.core.role()),
            ballot: (ballot.round, ballot.leader.0),
            leader: self.core.leader_hint().map(|r| r.0),
            commit_index: commit,
            applied_index: self.core.applied_index(),
            snapshot_slot: self.core.snapshot_slot(),
            membership: membership_of(membership),
            peers,
            proposals_committed: self.committed,
            commit_latency_us: Summary::of(&self.commit_latency),
            flush_latency_us: flush,
            batch_size: Summary::of(&self.batch_size),
            flushes,
            loop_parks: self.parks,
            uptime_us: u64::try_from((now - self.started).as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// Answers everything still pending with `error` and closes the request queue.
    fn finish(&mut self, error: Error) {
        doing("stopping");
        self.shared.health.stop();
        self.net.close();
        let queued: Vec<Request<S>> = {
            let mut q = self.shared.lock();
            q.closed = Some(error.clone());
            q.requests.drain(..).collect()
        };
        for r in queued.into_iter().chain(self.requests.drain(..)) {
            r.fail(error.clone());
        }
        for (_, (done, _)) in self.proposals.drain() {
            done.complete(Err(error.clone()));
        }
        for (_, run) in self.reads.drain() {
            run(Err(error.clone()));
        }
        if let Some((_, _, done)) = self.membership_change.take() {
            done.complete(Err(error.clone()));
        }
        if let Some((_, _, done)) = self.transfer.take() {
            done.complete(Err(error));
        }
    }
}

fn abort_error(reason: &AbortReason) -> Error {
    match reason {
        AbortReason::NotLeader { hint } => Error::NotLeader {
            leader: hint.map(|r| r.0),
        },
        AbortReason::LeadershipLost { hint } => Error::Aborted {
            reason: format!(
                "leadership lost before the proposal was chosen (leader hint: {:?})",
                hint.map(|r| r.0)
            ),
        },
        AbortReason::Overloaded => Error::Busy { queued: 0 },
        other => Error::Refused {
            reason: format!("{other:?}"),
        },
    }
}
