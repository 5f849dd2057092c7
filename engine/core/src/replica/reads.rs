//! Reads without log entries: leader-lease reads, the read-index path, and RSL fast reads.

use super::{FastRead, Leader, LinearRead, Replica, RoleState, contract};
use crate::config::Mutation;
use crate::io::{Command, ReadId, ReadRefusal};
use crate::quorum::{kth_largest, kth_largest_in};
use crate::types::Slot;

impl Replica {
    /// A linearizable read: the leader serves it once it has applied every slot it had given a
    /// value when the read arrived, and either holds a lease or a majority acknowledged a
    /// heartbeat sent after the read arrived (read-index).
    pub(super) fn on_read(&mut self, id: ReadId, out: &mut Vec<Command>) {
        // A read sees every write proposed before it, also within one step batch.
        self.cut_deferred(out);
        let hint = self.leader_hint;
        let pending = self.pending_reads();
        let max = self.config.max_pending_reads;
        let deadline = self.now + self.config.read_timeout_ticks;
        let RoleState::Leader(l) = &mut self.role else {
            out.push(Command::ReadRefused {
                id,
                reason: ReadRefusal::NotLeader { hint },
            });
            return;
        };
        if let Some(t) = &l.transfer {
            let hint = Some(t.to);
            out.push(Command::ReadRefused {
                id,
                reason: ReadRefusal::NotLeader { hint },
            });
            return;
        }
        if pending >= max {
            out.push(Command::ReadRefused {
                id,
                reason: ReadRefusal::Overloaded,
            });
            return;
        }
        let slot = l.next_slot - 1;
        let seq_needed = l.hb_seq + 1;
        contract!(self, slot >= self.commit, "read slot {slot} below commit");
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        l.reads.push_back(LinearRead {
            id,
            slot,
            seq_needed,
            deadline,
        });
        self.serve_reads(out);
    }

    /// An RSL fast read: served from this replica's state once it has applied `min_slot`.
    pub(super) fn on_fast_read(&mut self, id: ReadId, min_slot: Slot, out: &mut Vec<Command>) {
        let lag_max = self.config.fast_read_lag_max;
        if self.applied >= min_slot {
            out.push(Command::ReadReady {
                id,
                slot: self.applied,
            });
            return;
        }
        if min_slot - self.applied > lag_max {
            let reason = ReadRefusal::Lagging {
                applied: self.applied,
                min_slot,
                lag_max,
            };
            out.push(Command::ReadRefused { id, reason });
            return;
        }
        if self.pending_reads() >= self.config.max_pending_reads {
            out.push(Command::ReadRefused {
                id,
                reason: ReadRefusal::Overloaded,
            });
            return;
        }
        let deadline = self.now + self.config.read_timeout_ticks;
        self.fast_reads.push(FastRead {
            id,
            min_slot,
            deadline,
        });
    }

    fn pending_reads(&self) -> usize {
        let linear = match &self.role {
            RoleState::Leader(l) => l.reads.len(),
            _ => 0,
        };
        linear + self.fast_reads.len()
    }

    /// Whether the leader may serve a read from its lease now.
    pub(super) fn lease_valid(&self, l: &Leader) -> bool {
        if self.config.lease_ticks == 0 || !l.lease_held {
            return false;
        }
        self.now < l.lease_until || self.mutation_on(Mutation::LeaseReadAfterExpiry)
    }

    /// Recomputes the lease from the heartbeats majorities acknowledged: it runs from the
    /// oldest heartbeat a majority (of every membership in play) acknowledged, for
    /// `lease_ticks - clock_drift_ticks`. The leader guards its own lease too.
    pub(super) fn update_lease(&mut self) {
        if self.config.lease_ticks == 0 {
            return;
        }
        let (id, now) = (self.id, self.now);
        let length = self.config.lease_ticks - self.config.clock_drift_ticks;
        // Heartbeat replies call this: the memberships are walked in place and the
        // acknowledgements gathered in a buffer the replica keeps (nothing allocated).
        let mut acks = std::mem::take(&mut self.acks_scratch);
        let RoleState::Leader(l) = &self.role else {
            self.acks_scratch = acks;
            return;
        };
        let mut start: Option<u64> = None;
        let mut every_quorum = true;
        for m in self.leader_memberships_of(l) {
            acks.clear();
            acks.extend(m.voters.iter().filter_map(|v| {
                if *v == id {
                    Some(now)
                } else {
                    l.peers.get(v).and_then(|p| p.hb_ack_sent_at)
                }
            }));
            let Some(s) = kth_largest_in(&mut acks, m.quorum()) else {
                every_quorum = false;
                break;
            };
            start = Some(start.map_or(s, |x: u64| x.min(s)));
        }
        self.acks_scratch = acks;
        if !every_quorum {
            return;
        }
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let Some(start) = start else { return };
        let until = start + length;
        if until > l.lease_until {
            l.lease_until = until;
        }
        l.lease_held = true;
        let (until, ballot) = (l.lease_until, l.ballot);
        // A lease never reaches past one lease length from now (it starts at an acknowledged
        // heartbeat, which was sent no later than now).
        contract!(
            self,
            until <= now + length,
            "lease until {until} beyond now {now} + {length}"
        );
        if until > self.lease_guard_until {
            self.lease_guard_until = until;
        }
        self.lease_guard_ballot = ballot;
        contract!(
            self,
            self.lease_guard_until >= until,
            "leader does not guard its own lease"
        );
    }

    /// The highest heartbeat sequence a majority (of every membership in play) acknowledged.
    fn confirmed_seq(&self, l: &Leader) -> u64 {
        let mut confirmed = u64::MAX;
        for m in self.leader_memberships() {
            let acks: Vec<u64> = m
                .voters
                .iter()
                .map(|v| {
                    if *v == self.id {
                        l.hb_seq
                    } else {
                        l.peers.get(v).map_or(0, |p| p.hb_ack_seq)
                    }
                })
                .collect();
            confirmed = confirmed.min(kth_largest(acks, m.quorum()).unwrap_or(0));
        }
        confirmed
    }

    /// Serves every pending read whose conditions now hold; starts a read-index heartbeat
    /// round if a read waits for one not yet sent.
    pub(super) fn serve_reads(&mut self, out: &mut Vec<Command>) {
        let applied = self.applied;
        self.fast_reads.retain(|r| {
            if applied >= r.min_slot {
                out.push(Command::ReadReady {
                    id: r.id,
                    slot: applied,
                });
                false
            } else {
                true
            }
        });
        let (lease_ok, confirmed) = match &self.role {
            // Nothing waits: skip the quorum arithmetic (this runs on every apply).
            RoleState::Leader(l) if l.reads.is_empty() => return,
            RoleState::Leader(l) => (self.lease_valid(l), self.confirmed_seq(l)),
            _ => return,
        };
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        l.reads.retain(|r| {
            if applied >= r.slot && (lease_ok || confirmed >= r.seq_needed) {
                out.push(Command::ReadReady {
                    id: r.id,
                    slot: applied,
                });
                false
            } else {
                true
            }
        });
        let needs_round = !lease_ok && l.reads.iter().any(|r| r.seq_needed > l.hb_seq);
        if needs_round {
            self.broadcast_heartbeat(out);
        }
    }

    /// Refuses reads that waited past their deadline.
    pub(super) fn expire_reads(&mut self, out: &mut Vec<Command>) {
        let now = self.now;
        self.fast_reads.retain(|r| {
            if now >= r.deadline {
                out.push(Command::ReadRefused {
                    id: r.id,
                    reason: ReadRefusal::Timeout,
                });
                false
            } else {
                true
            }
        });
        if let RoleState::Leader(l) = &mut self.role {
            l.reads.retain(|r| {
                if now >= r.deadline {
                    out.push(Command::ReadRefused {
                        id: r.id,
                        reason: ReadRefusal::Timeout,
                    });
                    false
                } else {
                    true
                }
            });
        }
    }
}
