//! One simulated cluster: replicas of the protocol core, their disks and clocks, the network,
//! the key-value state machine, clients, the fault schedule and the safety checks.
//!
//! The run has two phases. In the fault phase every fault kind that is on is injected at random
//! times; in the heal phase the network is made whole and reliable, crashed replicas restart,
//! and the cluster must commit a fresh decree within [`LIVENESS_BOUND_US`]. Safety is checked
//! after every step of every replica ([`crate::checks`]); at the end the clients' history must be
//! linearizable.

use std::collections::{BTreeMap, VecDeque};

use keel_core::{
    AbortReason, Command, Config, Decree, Event, MembershipChange, Message, PersistOp,
    PersistToken, PersistentState, ProposalId, ReadId, ReadRefusal, Replica, ReplicaId, Slot,
};

use crate::checks::Checker;
use crate::clock::Clock;
use crate::disk::{Disk, DiskConfig, Durable};
use crate::faults::{FaultKind, Faults};
use crate::kv::{KvCommand, KvOp, KvReply, KvStore};
use crate::linearizability::{self, Operation, RegOp, Verdict};
use crate::net::{NetConfig, Network};
use crate::rng::SimRng;

/// After the faults heal, the cluster must commit a new decree within this much simulated time
/// (1 s: 50 maximal election timeouts; the slowest of 2000 seeds took 56 ms).
pub const LIVENESS_BOUND_US: u64 = 1_000_000;

/// Length of one nominal tick, microseconds (1 ms).
pub const TICK_US: u64 = 1_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The seed every option is drawn from.
    pub seed: u64,
    /// The fault kinds that may be injected.
    pub faults: Faults,
    /// A deliberate core bug to switch on (feature `mutations`).
    pub mutation: Option<keel_core::Mutation>,
    /// Keep the last this many trace lines (0: keep none, fastest).
    pub trace_lines: usize,
    /// Print every trace line as it happens.
    pub verbose: bool,
}

impl RunSpec {
    /// A run of `seed` with every fault kind on and no tracing.
    pub fn new(seed: u64) -> RunSpec {
        RunSpec {
            seed,
            faults: Faults::all(),
            mutation: None,
            trace_lines: 0,
            verbose: false,
        }
    }
}

/// Figures of a finished run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Replicas at the start.
    pub replicas: usize,
    /// Highest slot chosen.
    pub chosen: Slot,
    /// Client operations completed.
    pub ops_completed: u64,
    /// Client operations left without an answer.
    pub ops_pending: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Membership changes applied.
    pub membership_changes: u64,
    /// Snapshots installed from a peer.
    pub snapshots_installed: u64,
    /// Leadership transfers requested.
    pub transfers: u64,
    /// Lease or read-index reads served.
    pub linear_reads: u64,
    /// Simulated time from healing to the first fresh commit, microseconds.
    pub recovery_us: u64,
    /// Simulated time of the whole run, microseconds.
    pub sim_us: u64,
}

/// The simulator's reasons to fail a run (a core contract panic is caught by the runner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Simulated time of the failure, microseconds.
    pub at_us: u64,
    /// What went wrong.
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at t={}us: {}", self.at_us, self.what)
    }
}

/// The replica's durable state as the simulated disk holds it.
#[derive(Debug, Clone, Default)]
pub struct DurableState(pub PersistentState);

impl Durable for DurableState {
    type Op = PersistOp;
    fn apply(&mut self, op: &PersistOp) {
        self.0.apply(op);
    }
}

/// Options of one run, drawn from the seed.
#[derive(Debug, Clone)]
pub struct Options {
    /// Voters at the start (3 or 5).
    pub replicas: u64,
    /// Ids that may join later (as learners, then voters).
    pub spares: u64,
    /// Network knobs in the fault phase.
    pub net: NetConfig,
    /// Disk knobs.
    pub disk: DiskConfig,
    /// Clock drift bound (fraction).
    pub drift_bound: f64,
    /// The core's configuration (same on every replica).
    pub config: Config,
    /// Concurrent clients.
    pub clients: u64,
    /// Keys the clients use.
    pub keys: u64,
    /// Length of the fault phase, microseconds.
    pub fault_phase_us: u64,
    /// Mean gap between fault actions, microseconds.
    pub fault_gap_us: u64,
    /// How long a client waits for an answer before retrying elsewhere, microseconds.
    pub client_timeout_us: u64,
}

impl Options {
    /// Draws a run's options from `rng`, honouring the fault kinds that are on.
    pub fn draw(rng: &mut SimRng, faults: Faults) -> Options {
        let replicas = if rng.chance(0.5) { 3 } else { 5 };
        let spares = 2;
        let voters = (1..=replicas).map(ReplicaId);
        let mut config = Config::new(keel_core::Membership::with_voters(voters));
        config.max_in_flight = *rng.pick(&[1, 4, 32]);
        config.max_batch_count = *rng.pick(&[1, 8, 64]);
        config.max_catch_up_decrees = *rng.pick(&[4, 64]);
        config.lease_ticks = *rng.pick(&[0, 8, 8]);
        config.clock_drift_ticks = if config.lease_ticks > 0 {
            *rng.pick(&[1, 2])
        } else {
            1
        };
        // CheckQuorum off, at its default, or at the tightest window allowed (the lease).
        config.check_quorum_ticks = *rng.pick(&[
            0,
            config.election_timeout_min_ticks,
            config.lease_ticks.max(config.heartbeat_ticks + 1),
        ]);
        if faults.has(FaultKind::Snapshot) {
            config.snapshot_interval = rng.below(8, 64);
            config.log_retain_slots = rng.below(0, 16);
        }
        // Two clocks drifting apart at 2*bound may not move more than clock_drift_ticks apart
        // over a lease; keep half of that as margin for tick granularity.
        let drift_bound = if faults.has(FaultKind::Drift) && config.lease_ticks > 0 {
            let max = 0.5 * config.clock_drift_ticks as f64 / (2.0 * config.lease_ticks as f64);
            rng.uniform(0.0, max)
        } else if faults.has(FaultKind::Drift) {
            rng.uniform(0.0, 0.05)
        } else {
            0.0
        };
        let loss = if faults.has(FaultKind::Loss) {
            rng.uniform(0.0, 0.15)
        } else {
            0.0
        };
        let duplicate = if faults.has(FaultKind::Duplicate) {
            rng.uniform(0.0, 0.1)
        } else {
            0.0
        };
        let delay_min_us = rng.below(20, 200);
        let delay_max_us = if faults.has(FaultKind::Reorder) {
            delay_min_us + rng.below(100, 3_000)
        } else {
            delay_min_us
        };
        let sync_min_us = rng.below(10, 100);
        let sync_max_us = sync_min_us + rng.below(0, 800);
        Options {
            replicas,
            spares,
            net: NetConfig {
                loss,
                duplicate,
                delay_min_us,
                delay_max_us,
            },
            disk: DiskConfig {
                sync_min_us,
                sync_max_us,
            },
            drift_bound,
            config,
            clients: rng.below(2, 6),
            keys: rng.below(1, 4),
            fault_phase_us: rng.below(300_000, 900_000),
            fault_gap_us: rng.below(10_000, 80_000),
            client_timeout_us: rng.below(30_000, 120_000),
        }
    }
}

/// One replica slot of the cluster and the host around it.
#[derive(Debug)]
struct Node {
    id: ReplicaId,
    /// `None` while crashed or not yet started.
    replica: Option<Replica>,
    disk: Disk<DurableState>,
    clock: Clock,
    kv: KvStore,
    /// The host's applied slot (the state machine's position).
    applied: Slot,
    /// Proposals this incarnation accepted from clients: id -> client index.
    proposals: BTreeMap<ProposalId, usize>,
    /// Reads this incarnation accepted: id -> client index.
    reads: BTreeMap<ReadId, usize>,
    /// Whether this node ever started (spares start when added).
    started: bool,
    /// Checkpoints installed from a peer.
    installs: u64,
    incarnation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientOp {
    /// A put or a get through the log.
    Log(KvCommand),
    /// A linearizable read (lease or read-index).
    Linear { key: u64 },
    /// A session-consistent read on any replica.
    Fast { key: u64 },
}

#[derive(Debug)]
struct Outstanding {
    op: ClientOp,
    /// Index of the operation in the history (`None` for fast reads, which are not linearizable).
    history: Option<usize>,
    /// Node the current attempt went to.
    at: ReplicaId,
    /// Current attempt's read id (reads only).
    read_id: Option<ReadId>,
    /// When the attempt is given up.
    deadline_us: u64,
    /// For fast reads: the slot the client had seen when it asked.
    min_slot: Slot,
}

#[derive(Debug)]
struct Client {
    id: u64,
    seq: u64,
    target: ReplicaId,
    outstanding: Option<Outstanding>,
    next_us: u64,
    /// Highest slot this client has observed (for session reads).
    seen_slot: Slot,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    HealNet,
    RestoreLink(u64, u64),
    Restart(u64),
}

/// A whole simulated cluster.
pub struct World {
    spec: RunSpec,
    rng: SimRng,
    now: u64,
    opts: Options,
    net: Network<Message>,
    nodes: BTreeMap<u64, Node>,
    clients: Vec<Client>,
    history: Vec<Operation>,
    checker: Checker,
    actions: BTreeMap<(u64, u64), Action>,
    action_seq: u64,
    next_fault_us: u64,
    next_proposal: u64,
    /// While the clients take their turns: proposals per replica, fed afterwards as one
    /// `step_batch` (as the engine's loop feeds the requests of one pass), so requests that
    /// arrive together join one decree.
    proposals_arriving: Option<BTreeMap<u64, Vec<Event>>>,
    next_read: u64,
    next_value: u64,
    healed: bool,
    random_faults: bool,
    trace: VecDeque<String>,
    summary: Summary,
}

fn short(s: String) -> String {
    if s.len() > 220 {
        let mut cut = 220;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

impl World {
    /// Builds the cluster for `spec` (every option drawn from its seed).
    pub fn new(spec: RunSpec) -> World {
        let mut rng = SimRng::new(spec.seed);
        let opts = Options::draw(&mut rng, spec.faults);
        World::with_options(spec, opts, &mut rng)
    }

    fn with_options(spec: RunSpec, mut opts: Options, rng: &mut SimRng) -> World {
        let mut rng = rng.fork();
        #[cfg(feature = "mutations")]
        {
            opts.config.mutation = spec.mutation;
        }
        #[cfg(not(feature = "mutations"))]
        assert!(
            spec.mutation.is_none(),
            "mutations need keel-tests' `mutations` feature"
        );
        let _ = &mut opts; // `opts` is only written with the `mutations` feature
        let mut nodes = BTreeMap::new();
        for i in 1..=opts.replicas + opts.spares {
            let id = ReplicaId(i);
            let clock = Clock::new(&mut rng, 0, TICK_US, opts.drift_bound);
            let mut node = Node {
                id,
                replica: None,
                disk: Disk::new(opts.disk.clone(), DurableState::default()),
                clock,
                kv: KvStore::default(),
                applied: 0,
                proposals: BTreeMap::new(),
                reads: BTreeMap::new(),
                started: false,
                installs: 0,
                incarnation: 0,
            };
            if i <= opts.replicas {
                node.started = true;
                node.replica = Some(Self::boot(
                    &opts.config,
                    id,
                    PersistentState::default(),
                    &mut rng,
                ));
            }
            nodes.insert(i, node);
        }
        let clients = (0..opts.clients)
            .map(|c| Client {
                id: c + 1,
                seq: 0,
                target: ReplicaId(rng.below(1, opts.replicas + 1)),
                outstanding: None,
                next_us: rng.below(0, 20_000),
                seen_slot: 0,
            })
            .collect();
        let checker = Checker::new(
            opts.config.initial_membership.clone(),
            opts.config.membership_alpha(),
        );
        let net = Network::new(opts.net.clone());
        let next_fault_us = rng.below(0, 2 * opts.fault_gap_us);
        let summary = Summary {
            replicas: opts.replicas as usize,
            ..Summary::default()
        };
        World {
            spec,
            rng,
            now: 0,
            opts,
            net,
            nodes,
            clients,
            history: Vec::new(),
            checker,
            actions: BTreeMap::new(),
            action_seq: 0,
            next_fault_us,
            next_proposal: 1,
            proposals_arriving: None,
            next_read: 1,
            next_value: 1,
            healed: false,
            random_faults: true,
            trace: VecDeque::new(),
            summary,
        }
    }

    fn boot(config: &Config, id: ReplicaId, state: PersistentState, rng: &mut SimRng) -> Replica {
        match Replica::recover(id, config.clone(), state, rng.next_u64()) {
            Ok(r) => r,
            Err(e) => panic!("simulator drew an invalid core config for {id}: {e}"),
        }
    }

    /// The options this run drew.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The trace lines kept so far (the last `trace_lines`).
    pub fn trace(&self) -> impl Iterator<Item = &String> {
        self.trace.iter()
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if self.spec.trace_lines == 0 && !self.spec.verbose {
            return;
        }
        let l = format!("t={:>9} {}", self.now, short(line()));
        if self.spec.verbose {
            println!("{l}");
        }
        if self.spec.trace_lines > 0 {
            if self.trace.len() == self.spec.trace_lines {
                self.trace.pop_front();
            }
            self.trace.push_back(l);
        }
    }

    fn fail(&self, what: impl Into<String>) -> Failure {
        Failure {
            at_us: self.now,
            what: what.into(),
        }
    }

    /// Runs the whole scenario: fault phase, heal, liveness bound, final history check.
    pub fn run(&mut self) -> Result<Summary, Failure> {
        let heal_at = self.opts.fault_phase_us;
        self.log(|| "start".to_string());
        self.run_until(heal_at)?;
        self.heal();
        let chosen_at_heal = self.checker.max_chosen();
        let deadline = self.now + LIVENESS_BOUND_US;
        let healed_at = self.now;
        // Live means: a decree chosen after healing, applied by every voter of the membership.
        loop {
            let target = self.checker.max_chosen();
            if target > chosen_at_heal && self.voters_applied(target) {
                break;
            }
            if self.now >= deadline {
                return Err(self.fail(format!(
                    "liveness: {} us after healing, no decree chosen after slot {} has been \
                     applied by every voter (max chosen {}, voters at {:?})",
                    LIVENESS_BOUND_US,
                    chosen_at_heal,
                    target,
                    self.voter_positions()
                )));
            }
            let step_to = (self.now + TICK_US).min(deadline);
            self.run_until(step_to)?;
        }
        self.summary.recovery_us = self.now - healed_at;
        // Let clients finish what they can, then check the history.
        let settle = self.now + 300_000;
        self.run_until(settle)?;
        self.final_checks()?;
        self.summary.sim_us = self.now;
        self.summary.chosen = self.checker.max_chosen();
        self.summary.membership_changes = self.checker.membership_changes();
        self.summary.ops_completed = self
            .history
            .iter()
            .filter(|o| o.return_us.is_some())
            .count() as u64;
        self.summary.ops_pending = self.history.len() as u64 - self.summary.ops_completed;
        Ok(self.summary.clone())
    }

    fn final_checks(&mut self) -> Result<(), Failure> {
        match linearizability::check(&self.history, 5_000_000) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable(v) => return Err(self.fail(format!("linearizability: {v}"))),
            Verdict::Undecided { key } => {
                return Err(self.fail(format!(
                    "linearizability: search budget exceeded on key {key}"
                )));
            }
        }
        Ok(())
    }

    /// Advances the world to `until_us`, processing everything due on the way.
    pub fn run_until(&mut self, until_us: u64) -> Result<(), Failure> {
        loop {
            let next = self.next_event_us().min(until_us);
            if next > self.now {
                self.now = next;
            }
            self.process_due()?;
            if self.now >= until_us {
                return Ok(());
            }
        }
    }

    fn next_event_us(&self) -> u64 {
        let mut t = u64::MAX;
        if let Some(x) = self.net.next_delivery_us() {
            t = t.min(x);
        }
        if let Some(x) = self.net.next_unclog_us() {
            t = t.min(x);
        }
        if let Some((&(x, _), _)) = self.actions.iter().next() {
            t = t.min(x);
        }
        for n in self.nodes.values() {
            if n.replica.is_some() {
                t = t.min(n.clock.next_tick_us());
                if let Some(x) = n.disk.next_sync_us() {
                    t = t.min(x);
                }
            }
        }
        for c in &self.clients {
            t = t.min(match &c.outstanding {
                Some(o) => o.deadline_us,
                None => c.next_us,
            });
        }
        if !self.healed && self.random_faults {
            t = t.min(self.next_fault_us);
        }
        t
    }

    fn process_due(&mut self) -> Result<(), Failure> {
        let now = self.now;
        self.net.unclog_due(&mut self.rng, now);
        while let Some((&key, _)) = self.actions.iter().next() {
            if key.0 > now {
                break;
            }
            if let Some(a) = self.actions.remove(&key) {
                self.do_action(a)?;
            }
        }
        if !self.healed && self.random_faults && self.next_fault_us <= now {
            self.inject_fault()?;
            let gap = self.opts.fault_gap_us;
            self.next_fault_us = now + self.rng.below(gap / 2, gap * 3 / 2 + 1);
        }
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for &id in &ids {
            let synced = match self.nodes.get_mut(&id) {
                Some(n)
                    if n.replica.is_some() && n.disk.next_sync_us().is_some_and(|t| t <= now) =>
                {
                    let floor = n.disk.durable().0.snapshot_slot();
                    let synced = n.disk.sync_due(now);
                    (floor, synced)
                }
                _ => continue,
            };
            let (floor, synced) = synced;
            for (_, op) in &synced {
                self.checker
                    .on_durable(id, floor, op)
                    .map_err(|e| self.fail(e))?;
            }
            if let Some(&max) = synced.iter().map(|(t, _)| t).max() {
                self.step(
                    id,
                    Event::Persisted {
                        token: PersistToken(max),
                    },
                )?;
            }
        }
        while let Some(m) = self.net.pop_due(now) {
            let up = self.nodes.get(&m.to).is_some_and(|n| n.replica.is_some());
            if !up {
                continue;
            }
            let (from, to) = (m.from, m.to);
            self.step(
                to,
                Event::Message {
                    from: ReplicaId(from),
                    msg: m.msg,
                },
            )?;
        }
        for &id in &ids {
            let due = match self.nodes.get_mut(&id) {
                Some(n) if n.replica.is_some() => n.clock.take_tick(now),
                _ => false,
            };
            if due {
                self.step(id, Event::Tick)?;
            }
        }
        self.proposals_arriving = Some(BTreeMap::new());
        let turns = (0..self.clients.len()).try_for_each(|c| self.client_turn(c));
        let arrived = self.proposals_arriving.take().unwrap_or_default();
        turns?;
        for (id, events) in arrived {
            self.step_batch(id, events)?;
        }
        Ok(())
    }

    /// Feeds `events` to replica `id` as one step batch, then carries out its commands (and
    /// whatever they feed back, one event at a time) and checks every invariant.
    fn step_batch(&mut self, id: u64, events: Vec<Event>) -> Result<(), Failure> {
        let up = self.nodes.get(&id).is_some_and(|n| n.replica.is_some());
        if !up {
            return Ok(());
        }
        if self.spec.trace_lines > 0 || self.spec.verbose {
            for event in &events {
                self.log(|| format!("r{id} <- (batch) {event:?}"));
            }
        }
        let mut out = Vec::new();
        if let Some(replica) = self.nodes.get_mut(&id).and_then(|n| n.replica.as_mut()) {
            replica.step_batch(events, &mut out);
            replica.validate();
        }
        let mut queue = VecDeque::new();
        for cmd in out {
            if self.spec.trace_lines > 0 || self.spec.verbose {
                self.log(|| format!("r{id} -> {cmd:?}"));
            }
            self.carry_out(id, cmd, &mut queue)?;
        }
        self.check_node(id)?;
        while let Some(event) = queue.pop_front() {
            self.step(id, event)?;
        }
        Ok(())
    }

    /// Feeds `event` to replica `id`, carries out its commands and checks every invariant.
    fn step(&mut self, id: u64, event: Event) -> Result<(), Failure> {
        let mut queue = VecDeque::from([event]);
        while let Some(event) = queue.pop_front() {
            let mut out = Vec::new();
            let up = self.nodes.get(&id).is_some_and(|n| n.replica.is_some());
            if !up {
                return Ok(());
            }
            // Log the event before stepping, so a panic inside the step shows what caused it.
            if self.spec.trace_lines > 0 || self.spec.verbose {
                self.log(|| format!("r{id} <- {event:?}"));
            }
            if let Some(replica) = self.nodes.get_mut(&id).and_then(|n| n.replica.as_mut()) {
                replica.step(event, &mut out);
                replica.validate();
            }
            for cmd in out {
                if self.spec.trace_lines > 0 || self.spec.verbose {
                    self.log(|| format!("r{id} -> {cmd:?}"));
                }
                self.carry_out(id, cmd, &mut queue)?;
            }
            self.check_node(id)?;
        }
        Ok(())
    }

    fn check_node(&mut self, id: u64) -> Result<(), Failure> {
        let now = self.now;
        let Some(node) = self.nodes.get(&id) else {
            return Ok(());
        };
        let Some(r) = node.replica.as_ref() else {
            return Ok(());
        };
        if node.applied != r.applied_index() {
            return Err(self.fail(format!(
                "r{id}: host applied {} but the replica says {}",
                node.applied,
                r.applied_index()
            )));
        }
        let res = self.checker.after_step(id, r, now);
        res.map_err(|e| self.fail(e))?;
        // Lease check across replicas, in true time.
        let holders: Vec<(u64, keel_core::Ballot, u64)> = self
            .nodes
            .values()
            .filter_map(|n| {
                let r = n.replica.as_ref()?;
                let until = r.lease_until()?;
                let ballot = r.leader_ballot()?;
                let left = until.saturating_sub(r.now()) as f64 * n.clock.period_true_us();
                Some((n.id.0, ballot, now + left as u64))
            })
            .collect();
        self.checker
            .on_leases(&holders, now)
            .map_err(|e| self.fail(e))
    }

    fn carry_out(
        &mut self,
        id: u64,
        cmd: Command,
        queue: &mut VecDeque<Event>,
    ) -> Result<(), Failure> {
        let now = self.now;
        match cmd {
            Command::Persist { token, op } => {
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.disk.write(&mut self.rng, now, token.0, op);
                }
            }
            Command::Send { to, msg } => {
                if to.0 == id {
                    return Err(self.fail(format!("r{id} sent itself {}", msg.kind())));
                }
                self.check_durable_before_send(id, &msg)?;
                self.net.send(&mut self.rng, now, id, to.0, msg);
            }
            Command::Apply { slot, decree } => self.on_apply(id, slot, decree)?,
            Command::TakeSnapshot { slot } => {
                let Some(n) = self.nodes.get(&id) else {
                    return Ok(());
                };
                if n.applied != slot {
                    return Err(self.fail(format!(
                        "r{id}: TakeSnapshot at {slot} but the state machine is at {}",
                        n.applied
                    )));
                }
                queue.push_back(Event::SnapshotTaken {
                    slot,
                    data: n.kv.snapshot(),
                });
            }
            Command::InstallSnapshot { snapshot } => {
                let kv = KvStore::restore(&snapshot.data).map_err(|e| {
                    self.fail(format!(
                        "r{id}: snapshot at {} does not decode: {e}",
                        snapshot.meta.slot
                    ))
                })?;
                self.checker
                    .on_install(id, snapshot.meta.slot, &snapshot.data)
                    .map_err(|e| self.fail(e))?;
                self.summary.snapshots_installed += 1;
                if let Some(n) = self.nodes.get_mut(&id) {
                    n.kv = kv;
                    n.applied = snapshot.meta.slot;
                    n.installs += 1;
                }
            }
            Command::ProposalAborted { id: pid, reason } => {
                let client = self
                    .nodes
                    .get_mut(&id)
                    .and_then(|n| n.proposals.remove(&pid));
                if let Some(c) = client {
                    let hint = match reason {
                        AbortReason::NotLeader { hint } | AbortReason::LeadershipLost { hint } => {
                            hint
                        }
                        _ => None,
                    };
                    self.retry_soon(c, ReplicaId(id), hint);
                }
            }
            Command::ReadReady { id: rid, slot } => self.on_read_ready(id, rid, slot)?,
            Command::ReadRefused { id: rid, reason } => {
                let client = self.nodes.get_mut(&id).and_then(|n| n.reads.remove(&rid));
                if let Some(c) = client {
                    let hint = match reason {
                        ReadRefusal::NotLeader { hint } => hint,
                        _ => None,
                    };
                    self.retry_soon(c, ReplicaId(id), hint);
                }
            }
            // Clients find the leader through abort hints; roles are checked through the
            // replicas' accessors after every step.
            Command::RoleChanged { .. } => {}
            Command::MembershipChanged { slot, membership } => {
                self.checker.on_membership(slot, membership);
            }
        }
        Ok(())
    }

    /// A promise or an acceptance may leave only once what it vouches for is on the disk.
    fn check_durable_before_send(&self, id: u64, msg: &Message) -> Result<(), Failure> {
        let Some(node) = self.nodes.get(&id) else {
            return Ok(());
        };
        let durable = &node.disk.durable().0;
        match msg {
            Message::Promise { ballot, .. } if durable.promised < *ballot => {
                Err(self.fail(format!(
                    "r{id} sent a promise for {ballot} before it was durable (durable promise {})",
                    durable.promised
                )))
            }
            Message::Accepted { ballot, slots } => {
                for s in slots {
                    let ok = *s <= durable.snapshot_slot()
                        || durable.accepted.get(s).is_some_and(|e| e.ballot >= *ballot);
                    if !ok {
                        return Err(self.fail(format!(
                            "r{id} acknowledged slot {s} in {ballot} before the value was durable"
                        )));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_apply(&mut self, id: u64, slot: Slot, decree: Decree) -> Result<(), Failure> {
        self.checker
            .on_apply(id, slot, &decree)
            .map_err(|e| self.fail(e))?;
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if slot != node.applied + 1 {
            let applied = node.applied;
            return Err(self.fail(format!("r{id}: Apply of slot {slot} after slot {applied}")));
        }
        node.applied = slot;
        let mut replies = Vec::new();
        if let Decree::Batch(props) = &decree {
            for p in props {
                let cmd = match KvCommand::decode(&p.payload) {
                    Ok(c) => c,
                    Err(e) => {
                        return Err(Failure {
                            at_us: now,
                            what: format!("r{id}: {e}"),
                        });
                    }
                };
                let reply = node.kv.apply(&cmd);
                node.proposals.remove(&p.id);
                if let Some(reply) = reply {
                    replies.push((cmd, reply));
                }
            }
        }
        for (cmd, reply) in replies {
            self.complete_log_op(id, slot, cmd, reply);
        }
        Ok(())
    }

    fn complete_log_op(&mut self, at: u64, slot: Slot, cmd: KvCommand, reply: KvReply) {
        let now = self.now;
        let Some(ci) = self.clients.iter().position(|c| c.id == cmd.client) else {
            return;
        };
        let client = &mut self.clients[ci];
        let Some(o) = &client.outstanding else { return };
        let ClientOp::Log(mine) = o.op else { return };
        if mine.seq != cmd.seq || o.at.0 != at {
            return;
        }
        if let Some(h) = o.history {
            self.history[h].return_us = Some(now);
            if let (KvOp::Get { .. }, KvReply::Value(v)) = (cmd.op, reply) {
                self.history[h].op = RegOp::Read(Some(v));
            }
        }
        client.seen_slot = client.seen_slot.max(slot);
        client.outstanding = None;
        client.next_us = now + self.rng.below(0, 5_000);
        let c = client.id;
        self.log(|| format!("client {c} done {cmd:?} -> {reply:?} (slot {slot}, r{at})"));
    }

    fn on_read_ready(&mut self, id: u64, rid: ReadId, slot: Slot) -> Result<(), Failure> {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        let Some(ci) = node.reads.remove(&rid) else {
            return Ok(());
        };
        if node.applied != slot {
            let applied = node.applied;
            return Err(self.fail(format!(
                "r{id}: ReadReady at slot {slot} with state at {applied}"
            )));
        }
        let client = &mut self.clients[ci];
        let Some(o) = &client.outstanding else {
            return Ok(());
        };
        if o.read_id != Some(rid) {
            return Ok(());
        }
        match o.op {
            ClientOp::Linear { key } => {
                self.checker
                    .on_linear_read(id, rid, slot)
                    .map_err(|e| Failure {
                        at_us: now,
                        what: e,
                    })?;
                let v = node.kv.get(key);
                if let Some(h) = o.history {
                    self.history[h].return_us = Some(now);
                    self.history[h].op = RegOp::Read(Some(v));
                }
                self.summary.linear_reads += 1;
            }
            ClientOp::Fast { .. } => {
                if slot < o.min_slot {
                    return Err(Failure {
                        at_us: now,
                        what: format!(
                            "r{id}: session read served at slot {slot} below the client's {}",
                            o.min_slot
                        ),
                    });
                }
            }
            ClientOp::Log(_) => return Ok(()),
        }
        client.seen_slot = client.seen_slot.max(slot);
        client.outstanding = None;
        client.next_us = now + self.rng.below(0, 5_000);
        Ok(())
    }

    /// The client's current attempt failed: try again soon, at `hint` or another replica.
    fn retry_soon(&mut self, ci: usize, from: ReplicaId, hint: Option<ReplicaId>) {
        let n = self.nodes.len() as u64;
        let c = &mut self.clients[ci];
        let Some(o) = &mut c.outstanding else { return };
        if o.at != from {
            return;
        }
        c.target = match hint {
            Some(h) if h != from => h,
            _ => ReplicaId(self.rng.below(1, n + 1)),
        };
        o.deadline_us = self.now + self.rng.below(500, 3_000);
    }

    fn client_turn(&mut self, ci: usize) -> Result<(), Failure> {
        let now = self.now;
        let c = &self.clients[ci];
        match &c.outstanding {
            None if c.next_us <= now => {
                // Stop starting operations late in the heal phase so the history can settle.
                let op = self.new_op(ci);
                let c = &mut self.clients[ci];
                let history = match op {
                    ClientOp::Log(cmd) => {
                        let regop = match cmd.op {
                            KvOp::Put { value, .. } => RegOp::Write(value),
                            KvOp::Get { .. } => RegOp::Read(None),
                        };
                        self.history.push(Operation {
                            client: c.id,
                            key: cmd.op.key(),
                            op: regop,
                            invoke_us: now,
                            return_us: None,
                        });
                        Some(self.history.len() - 1)
                    }
                    ClientOp::Linear { key } => {
                        self.history.push(Operation {
                            client: c.id,
                            key,
                            op: RegOp::Read(None),
                            invoke_us: now,
                            return_us: None,
                        });
                        Some(self.history.len() - 1)
                    }
                    ClientOp::Fast { .. } => None,
                };
                let min_slot = c.seen_slot;
                c.outstanding = Some(Outstanding {
                    op,
                    history,
                    at: c.target,
                    read_id: None,
                    deadline_us: now,
                    min_slot,
                });
                self.attempt(ci)
            }
            Some(o) if o.deadline_us <= now => self.attempt(ci),
            _ => Ok(()),
        }
    }

    fn new_op(&mut self, ci: usize) -> ClientOp {
        let key = self.rng.below(0, self.opts.keys);
        let c = &mut self.clients[ci];
        let roll = self.rng.below(0, 100);
        if roll < 50 {
            c.seq += 1;
            let value = self.next_value;
            self.next_value += 1;
            ClientOp::Log(KvCommand {
                client: c.id,
                seq: c.seq,
                op: KvOp::Put { key, value },
            })
        } else if roll < 65 {
            c.seq += 1;
            ClientOp::Log(KvCommand {
                client: c.id,
                seq: c.seq,
                op: KvOp::Get { key },
            })
        } else if roll < 90 {
            ClientOp::Linear { key }
        } else {
            ClientOp::Fast { key }
        }
    }

    /// Sends the client's outstanding operation to its target replica (a new attempt).
    fn attempt(&mut self, ci: usize) -> Result<(), Failure> {
        let now = self.now;
        let timeout = self.opts.client_timeout_us;
        let c = &mut self.clients[ci];
        let target = c.target;
        let Some(o) = c.outstanding.as_mut() else {
            return Ok(());
        };
        o.at = target;
        o.deadline_us = now + timeout;
        let op = o.op;
        let min_slot = o.min_slot;
        let up = self
            .nodes
            .get(&target.0)
            .is_some_and(|n| n.replica.is_some());
        if !up {
            // Connection refused: pick another replica and retry shortly.
            let n = self.nodes.len() as u64;
            c.target = ReplicaId(self.rng.below(1, n + 1));
            if let Some(o) = c.outstanding.as_mut() {
                o.deadline_us = now + 2_000;
            }
            return Ok(());
        }
        let event = match op {
            ClientOp::Log(cmd) => {
                let pid = ProposalId(self.next_proposal);
                self.next_proposal += 1;
                if let Some(n) = self.nodes.get_mut(&target.0) {
                    n.proposals.insert(pid, ci);
                }
                let event = Event::Propose {
                    id: pid,
                    payload: cmd.encode(),
                };
                if let Some(arriving) = self.proposals_arriving.as_mut() {
                    arriving.entry(target.0).or_default().push(event);
                    return Ok(());
                }
                event
            }
            ClientOp::Linear { .. } | ClientOp::Fast { .. } => {
                let rid = ReadId(self.next_read);
                self.next_read += 1;
                if let Some(o) = self.clients[ci].outstanding.as_mut() {
                    o.read_id = Some(rid);
                }
                if let Some(n) = self.nodes.get_mut(&target.0) {
                    n.reads.insert(rid, ci);
                }
                if matches!(op, ClientOp::Linear { .. }) {
                    self.checker.on_linear_read_start(target.0, rid);
                    Event::Read { id: rid }
                } else {
                    Event::FastRead { id: rid, min_slot }
                }
            }
        };
        self.step(target.0, event)
    }

    fn schedule(&mut self, at_us: u64, a: Action) {
        self.action_seq += 1;
        self.actions.insert((at_us, self.action_seq), a);
    }

    fn do_action(&mut self, a: Action) -> Result<(), Failure> {
        self.log(|| format!("fault: {a:?}"));
        match a {
            Action::HealNet => {
                let now = self.now;
                self.net.heal(&mut self.rng, now);
            }
            Action::RestoreLink(a, b) => self.net.restore_link(a, b),
            Action::Restart(id) => self.restart(id)?,
        }
        Ok(())
    }

    fn restart(&mut self, id: u64) -> Result<(), Failure> {
        let now = self.now;
        let Some(node) = self.nodes.get_mut(&id) else {
            return Ok(());
        };
        if node.replica.is_some() || !node.started {
            return Ok(());
        }
        let state = node.disk.durable().0.clone();
        let kv = match &state.snapshot {
            Some(s) => match KvStore::restore(&s.data) {
                Ok(kv) => kv,
                Err(e) => {
                    return Err(Failure {
                        at_us: now,
                        what: format!("r{id}: {e}"),
                    });
                }
            },
            None => KvStore::default(),
        };
        node.kv = kv;
        node.applied = state.snapshot_slot();
        node.incarnation += 1;
        node.clock.restart(now);
        let replica = Self::boot(&self.opts.config, node.id, state, &mut self.rng);
        node.replica = Some(replica);
        self.checker.on_restart(id);
        self.check_node(id)
    }

    fn crash(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.replica.is_none() {
            return;
        }
        node.replica = None;
        node.disk.crash();
        node.proposals.clear();
        node.reads.clear();
        self.net.drop_to(id);
        self.checker.on_crash(id);
        self.summary.crashes += 1;
    }

    fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter_map(|n| Some((n.replica.as_ref()?.leader_ballot()?, n.id.0)))
            .max()
            .map(|(_, id)| id)
    }

    fn inject_fault(&mut self) -> Result<(), Failure> {
        let kinds: Vec<FaultKind> = self
            .spec
            .faults
            .kinds()
            .into_iter()
            .filter(|k| {
                !matches!(
                    k,
                    FaultKind::Loss
                        | FaultKind::Duplicate
                        | FaultKind::Reorder
                        | FaultKind::Drift
                        | FaultKind::Snapshot
                )
            })
            .collect();
        if kinds.is_empty() {
            return Ok(());
        }
        let kind = *self.rng.pick(&kinds);
        let now = self.now;
        let started: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.started)
            .map(|n| n.id.0)
            .collect();
        let up: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.replica.is_some())
            .map(|n| n.id.0)
            .collect();
        match kind {
            FaultKind::Partition => {
                let mut side = Vec::new();
                for &id in &started {
                    if self.rng.chance(0.4) {
                        side.push(id);
                    }
                }
                if side.is_empty() || side.len() == started.len() {
                    return Ok(());
                }
                self.log(|| format!("fault: partition {side:?} from the rest"));
                self.net.partition(&side, &started);
                let until = now + self.rng.below(20_000, 400_000);
                self.schedule(until, Action::HealNet);
            }
            FaultKind::OneWay => {
                let a = *self.rng.pick(&started);
                let b = *self.rng.pick(&started);
                if a == b {
                    return Ok(());
                }
                self.log(|| format!("fault: cut link r{a} -> r{b}"));
                self.net.cut_link(a, b);
                let until = now + self.rng.below(20_000, 400_000);
                self.schedule(until, Action::RestoreLink(a, b));
            }
            FaultKind::Clog => {
                let a = *self.rng.pick(&started);
                let b = *self.rng.pick(&started);
                if a == b {
                    return Ok(());
                }
                let until = now + self.rng.below(5_000, 200_000);
                self.log(|| format!("fault: clog r{a} -> r{b} until {until}"));
                self.net.clog(a, b, until);
            }
            FaultKind::Crash => {
                if up.is_empty() {
                    return Ok(());
                }
                let id = *self.rng.pick(&up);
                self.log(|| format!("fault: crash r{id}"));
                self.crash(id);
                let at = now + self.rng.below(1_000, 300_000);
                self.schedule(at, Action::Restart(id));
            }
            FaultKind::Membership => self.change_membership()?,
            FaultKind::Transfer => {
                let Some(leader) = self.leader() else {
                    return Ok(());
                };
                let voters: Vec<u64> = match self.nodes[&leader].replica.as_ref() {
                    Some(r) => r
                        .membership()
                        .voters
                        .iter()
                        .map(|v| v.0)
                        .filter(|&v| v != leader)
                        .collect(),
                    None => return Ok(()),
                };
                if voters.is_empty() {
                    return Ok(());
                }
                let to = *self.rng.pick(&voters);
                self.log(|| format!("fault: transfer leadership r{leader} -> r{to}"));
                self.summary.transfers += 1;
                self.step(leader, Event::TransferLeadership { to: ReplicaId(to) })?;
            }
            FaultKind::Loss
            | FaultKind::Duplicate
            | FaultKind::Reorder
            | FaultKind::Drift
            | FaultKind::Snapshot => {}
        }
        Ok(())
    }

    fn change_membership(&mut self) -> Result<(), Failure> {
        let Some(leader) = self.leader() else {
            return Ok(());
        };
        let Some(m) = self.nodes[&leader]
            .replica
            .as_ref()
            .map(|r| r.membership().clone())
        else {
            return Ok(());
        };
        // Replicas that were never members yet and are not running.
        let fresh: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| !n.started && !m.contains(n.id))
            .map(|n| n.id.0)
            .collect();
        let learners: Vec<u64> = m.learners.iter().map(|r| r.0).collect();
        let voters: Vec<u64> = m.voters.iter().map(|r| r.0).collect();
        let roll = self.rng.below(0, 4);
        let change = if roll == 0 && !fresh.is_empty() {
            let id = fresh[0];
            self.start_spare(id);
            MembershipChange::AddLearner(ReplicaId(id))
        } else if roll <= 1 && !learners.is_empty() {
            MembershipChange::PromoteLearner(ReplicaId(*self.rng.pick(&learners)))
        } else if roll == 2 && voters.len() > 3 {
            let others: Vec<u64> = voters.iter().copied().filter(|&v| v != leader).collect();
            MembershipChange::Remove(ReplicaId(*self.rng.pick(&others)))
        } else if roll == 3 && !fresh.is_empty() && voters.len() >= 3 {
            let others: Vec<u64> = voters.iter().copied().filter(|&v| v != leader).collect();
            let old = *self.rng.pick(&others);
            let id = fresh[0];
            self.start_spare(id);
            MembershipChange::ReplaceVoter {
                old: ReplicaId(old),
                new: ReplicaId(id),
            }
        } else {
            return Ok(());
        };
        self.log(|| format!("fault: membership change {change:?} at r{leader}"));
        let pid = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        self.step(leader, Event::ChangeMembership { id: pid, change })
    }

    fn start_spare(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if node.started {
            return;
        }
        node.started = true;
        node.clock.restart(self.now);
        node.replica = Some(Self::boot(
            &self.opts.config,
            node.id,
            PersistentState::default(),
            &mut self.rng,
        ));
        self.checker.on_restart(id);
    }

    /// Ends the fault phase: whole, reliable network; every crashed replica restarts.
    fn heal(&mut self) {
        self.log(|| "heal: network whole and reliable, crashed replicas restart".to_string());
        self.healed = true;
        let now = self.now;
        self.actions.retain(|_, a| matches!(a, Action::Restart(_)));
        self.net.heal(&mut self.rng, now);
        let mut cfg = self.opts.net.clone();
        cfg.loss = 0.0;
        cfg.duplicate = 0.0;
        self.net.set_config(cfg);
        let down: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.started && n.replica.is_none())
            .map(|n| n.id.0)
            .collect();
        for id in down {
            self.schedule(now, Action::Restart(id));
        }
    }

    /// Simulated time now, microseconds.
    pub fn now(&self) -> u64 {
        self.now
    }

    fn current_voters(&self) -> Vec<u64> {
        let m = self.checker.latest_membership();
        m.voters.iter().map(|v| v.0).collect()
    }

    fn voters_applied(&self, slot: Slot) -> bool {
        self.current_voters().iter().all(|id| {
            self.nodes
                .get(id)
                .is_some_and(|n| n.replica.is_some() && n.applied >= slot)
        })
    }

    fn voter_positions(&self) -> Vec<(u64, Option<Slot>)> {
        self.current_voters()
            .iter()
            .map(|id| {
                (
                    *id,
                    self.nodes
                        .get(id)
                        .filter(|n| n.replica.is_some())
                        .map(|n| n.applied),
                )
            })
            .collect()
    }

    /// Whether the run has healed (the heal phase started).
    pub fn healed(&self) -> bool {
        self.healed
    }
}

/// A hand-built cluster for a scenario test: no random faults, a reliable network, steady
/// disks, clocks without drift; the test injects its own faults through [`World`]'s methods.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Seed for the replicas' election jitter and the clients' choices.
    pub seed: u64,
    /// Voters at the start.
    pub replicas: u64,
    /// Extra ids that may be started later as learners.
    pub spares: u64,
    /// Concurrent clients.
    pub clients: u64,
    /// The core configuration (its initial membership is set from `replicas`).
    pub config_tweak: fn(&mut Config),
    /// One-way network delay, microseconds.
    pub delay_us: u64,
}

impl Scenario {
    /// `replicas` voters, 3 clients, core defaults, 100 us links.
    pub fn new(seed: u64, replicas: u64) -> Scenario {
        Scenario {
            seed,
            replicas,
            spares: 0,
            clients: 3,
            config_tweak: |_| {},
            delay_us: 100,
        }
    }

    /// Builds the world.
    pub fn build(self) -> World {
        let mut rng = SimRng::new(self.seed);
        let voters = (1..=self.replicas).map(ReplicaId);
        let mut config = Config::new(keel_core::Membership::with_voters(voters));
        (self.config_tweak)(&mut config);
        let opts = Options {
            replicas: self.replicas,
            spares: self.spares,
            net: NetConfig {
                loss: 0.0,
                duplicate: 0.0,
                delay_min_us: self.delay_us,
                delay_max_us: self.delay_us,
            },
            disk: DiskConfig::steady(),
            drift_bound: 0.0,
            config,
            clients: self.clients,
            keys: 2,
            fault_phase_us: 0,
            fault_gap_us: u64::MAX / 4,
            client_timeout_us: 50_000,
        };
        let spec = RunSpec {
            seed: self.seed,
            faults: Faults::none(),
            mutation: None,
            trace_lines: 200,
            verbose: false,
        };
        let mut w = World::with_options(spec, opts, &mut rng);
        w.random_faults = false;
        w
    }
}

/// What scenario tests drive and observe.
impl World {
    /// Runs for `us` of simulated time.
    pub fn run_for(&mut self, us: u64) -> Result<(), Failure> {
        let until = self.now + us;
        self.run_until(until)
    }

    /// Runs until `cond` holds (checked every tick), failing after `within_us`.
    pub fn run_until_cond(
        &mut self,
        within_us: u64,
        what: &str,
        mut cond: impl FnMut(&World) -> bool,
    ) -> Result<(), Failure> {
        let deadline = self.now + within_us;
        while !cond(self) {
            if self.now >= deadline {
                return Err(self.fail(format!("not within {within_us} us: {what}")));
            }
            let to = (self.now + TICK_US).min(deadline);
            self.run_until(to)?;
        }
        Ok(())
    }

    /// The replica that leads with the highest ballot, if any leads.
    pub fn current_leader(&self) -> Option<u64> {
        self.leader()
    }

    /// Replica `id`'s core, if it is running.
    pub fn replica(&self, id: u64) -> Option<&Replica> {
        self.nodes.get(&id).and_then(|n| n.replica.as_ref())
    }

    /// Replica `id`'s applied slot as its host sees it.
    pub fn applied(&self, id: u64) -> Slot {
        self.nodes.get(&id).map_or(0, |n| n.applied)
    }

    /// Checkpoints replica `id` installed from peers.
    pub fn installs(&self, id: u64) -> u64 {
        self.nodes.get(&id).map_or(0, |n| n.installs)
    }

    /// Replica `id`'s key-value store.
    pub fn store(&self, id: u64) -> Option<&KvStore> {
        self.nodes.get(&id).map(|n| &n.kv)
    }

    /// The highest slot any replica committed.
    pub fn max_chosen(&self) -> Slot {
        self.checker.max_chosen()
    }

    /// The membership of the latest chosen membership decree.
    pub fn chosen_membership(&self) -> keel_core::Membership {
        self.checker.latest_membership().clone()
    }

    /// Client operations answered so far.
    pub fn ops_completed(&self) -> u64 {
        self.history
            .iter()
            .filter(|o| o.return_us.is_some())
            .count() as u64
    }

    /// Crashes replica `id` (unsynced writes lost).
    pub fn crash_node(&mut self, id: u64) {
        self.log(|| format!("scenario: crash r{id}"));
        self.crash(id);
    }

    /// Restarts replica `id` from its durable state.
    pub fn restart_node(&mut self, id: u64) -> Result<(), Failure> {
        self.log(|| format!("scenario: restart r{id}"));
        self.restart(id)
    }

    /// Starts spare replica `id` (fresh, not yet a member).
    pub fn start_spare_node(&mut self, id: u64) {
        self.start_spare(id);
    }

    /// Cuts `side` off from every other started replica, both ways.
    pub fn partition_off(&mut self, side: &[u64]) {
        let started: Vec<u64> = self
            .nodes
            .values()
            .filter(|n| n.started)
            .map(|n| n.id.0)
            .collect();
        self.log(|| format!("scenario: partition {side:?}"));
        self.net.partition(side, &started);
    }

    /// Removes every partition.
    pub fn heal_network(&mut self) {
        let now = self.now;
        self.log(|| "scenario: heal network".to_string());
        self.net.heal(&mut self.rng, now);
    }

    /// Feeds an event to replica `id` (a membership change, a transfer, ...).
    pub fn inject(&mut self, id: u64, event: Event) -> Result<(), Failure> {
        self.step(id, event)
    }

    /// A fresh proposal id for an injected membership change.
    pub fn proposal_id(&mut self) -> ProposalId {
        let p = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        p
    }

    /// Checks the clients' history for linearizability.
    pub fn check_history(&mut self) -> Result<(), Failure> {
        self.final_checks()
    }

    /// Renders the kept trace (for a failing scenario's message).
    pub fn trace_text(&self) -> String {
        self.trace.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Client proposals replica `id` holds unanswered (neither applied nor aborted).
    pub fn pending_proposals(&self, id: u64) -> usize {
        self.nodes.get(&id).map_or(0, |n| n.proposals.len())
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("seed", &self.spec.seed)
            .field("now", &self.now)
            .finish()
    }
}
