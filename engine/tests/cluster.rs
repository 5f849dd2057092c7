//! In-process clusters over the local transport: the runtime end to end without processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_engine::kv::{KvCommand, KvStore};
use keel_engine::{
    Builder, Config, Error, LocalNetwork, Member, MemberChange, Replica, Role, StateMachine,
};

fn config(id: u64, dir: &std::path::Path, backend: &str, n: u64) -> Config {
    let durability = keel_engine::config::Durability {
        log_backend: backend.into(),
        log_capacity_bytes: 8 << 20,
        ..Default::default()
    };
    Builder::new(id, dir.join(format!("r{id}")))
        .members((1..=n).map(|i| Member::voter(i, format!("r{i}"))).collect())
        .transport(keel_engine::TransportKind::Local)
        .durability(durability)
        .build()
        .unwrap()
}

fn put(key: &str, value: &str) -> Vec<u8> {
    KvCommand::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
    .encode()
}

fn wait_leader(replicas: &[Option<Replica<KvStore>>], within: Duration) -> usize {
    let start = Instant::now();
    while start.elapsed() < within {
        for (i, r) in replicas.iter().enumerate() {
            if let Some(r) = r
                && r.role() == Role::Leader
            {
                return i;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("no leader within {within:?}");
}

/// Proposes through whichever replica leads, retrying on NotLeader.
fn propose_anywhere(replicas: &[Option<Replica<KvStore>>], cmd: Vec<u8>) -> u64 {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no commit within 10 s"
        );
        let i = wait_leader(replicas, Duration::from_secs(10));
        let r = replicas[i].as_ref().unwrap();
        match r.propose(cmd.clone()).wait() {
            Ok(a) => return a.slot,
            Err(Error::NotLeader { .. } | Error::Aborted { .. }) => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("propose failed: {e}"),
        }
    }
}

#[test]
fn three_replicas_commit_read_and_survive_leader_loss() {
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNetwork::new();
    let mut replicas: Vec<Option<Replica<KvStore>>> = (1..=3)
        .map(|i| {
            Some(
                Replica::start_local(config(i, dir.path(), "memory", 3), KvStore::new(), &net)
                    .unwrap(),
            )
        })
        .collect();
    for k in 0..50 {
        propose_anywhere(&replicas, put(&format!("k{k}"), "v"));
    }
    let leader = wait_leader(&replicas, Duration::from_secs(5));
    let r = replicas[leader].as_ref().unwrap();
    let got = r
        .read(|kv: &KvStore| kv.get(b"k49").map(<[u8]>::to_vec))
        .wait()
        .unwrap();
    assert_eq!(got.value.as_deref(), Some(&b"v"[..]));
    let status = r.status().wait().unwrap();
    assert_eq!(status.role, Role::Leader);
    assert!(status.commit_index >= 50, "{status:?}");
    assert_eq!(status.peers.len(), 2);
    assert!(status.commit_latency_us.count >= 1);

    // A follower serves a session-consistent read once it has applied the slot we saw.
    let slot = propose_anywhere(&replicas, put("session", "x"));
    let follower = (leader + 1) % 3;
    let fr = replicas[follower]
        .as_ref()
        .unwrap()
        .fast_read(slot, |kv: &KvStore| kv.get(b"session").map(<[u8]>::to_vec))
        .wait()
        .unwrap();
    assert!(fr.slot >= slot);
    assert_eq!(fr.value.as_deref(), Some(&b"x"[..]));

    // Stop the leader: the others elect a new one that commits.
    let old = replicas[leader].take().unwrap();
    old.shutdown().unwrap();
    assert!(matches!(
        old.propose(put("late", "x")).wait(),
        Err(Error::ShutDown)
    ));
    let started = Instant::now();
    propose_anywhere(&replicas, put("after", "failover"));
    eprintln!("fail-over commit after {:?}", started.elapsed());
    let new_leader = wait_leader(&replicas, Duration::from_secs(5));
    assert_ne!(new_leader, leader);
    let got = replicas[new_leader]
        .as_ref()
        .unwrap()
        .read(|kv: &KvStore| {
            (
                kv.get(b"k0").map(<[u8]>::to_vec),
                kv.get(b"after").map(<[u8]>::to_vec),
            )
        })
        .wait()
        .unwrap();
    assert_eq!(got.value.0.as_deref(), Some(&b"v"[..]));
    assert_eq!(got.value.1.as_deref(), Some(&b"failover"[..]));
}

#[test]
fn a_replica_restarted_from_its_file_log_recovers_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNetwork::new();
    let mut replicas: Vec<Option<Replica<KvStore>>> = (1..=3)
        .map(|i| {
            Some(
                Replica::start_local(config(i, dir.path(), "file", 3), KvStore::new(), &net)
                    .unwrap(),
            )
        })
        .collect();
    for k in 0..20 {
        propose_anywhere(&replicas, put(&format!("k{k}"), &k.to_string()));
    }
    // Stop every replica, then start them all again from their logs.
    for r in replicas.iter_mut() {
        r.take().unwrap().shutdown().unwrap();
    }
    let replicas: Vec<Option<Replica<KvStore>>> = (1..=3)
        .map(|i| {
            Some(
                Replica::start_local(config(i, dir.path(), "file", 3), KvStore::new(), &net)
                    .unwrap(),
            )
        })
        .collect();
    propose_anywhere(&replicas, put("after", "restart"));
    let leader = wait_leader(&replicas, Duration::from_secs(5));
    let got = replicas[leader]
        .as_ref()
        .unwrap()
        .read(|kv: &KvStore| (kv.len(), kv.get(b"k7").map(<[u8]>::to_vec)))
        .wait()
        .unwrap();
    assert_eq!(got.value.0, 21);
    assert_eq!(got.value.1.as_deref(), Some(&b"7"[..]));
    let status = replicas[leader].as_ref().unwrap().status().wait().unwrap();
    assert!(
        status.flushes > 0 && status.flush_latency_us.count > 0,
        "{status:?}"
    );
}

#[test]
fn a_learner_joins_and_is_promoted_while_the_cluster_writes() {
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNetwork::new();
    let mut cfgs: Vec<Config> = (1..=4)
        .map(|i| config(i, dir.path(), "memory", 4))
        .collect();
    for c in &mut cfgs {
        c.members[3].standby = true;
    }
    let mut replicas: Vec<Option<Replica<KvStore>>> = cfgs
        .iter()
        .map(|c| Some(Replica::start_local(c.clone(), KvStore::new(), &net).unwrap()))
        .collect();
    for k in 0..10 {
        propose_anywhere(&replicas[..3], put(&format!("k{k}"), "v"));
    }
    let leader = wait_leader(&replicas, Duration::from_secs(5));
    let l = replicas[leader].as_ref().unwrap();
    l.change_membership(MemberChange::AddLearner(4))
        .wait()
        .unwrap();
    for k in 10..20 {
        propose_anywhere(&replicas[..3], put(&format!("k{k}"), "v"));
    }
    l.change_membership(MemberChange::Promote(4))
        .wait()
        .unwrap();
    let status = l.status().wait().unwrap();
    assert_eq!(status.membership.voters, vec![1, 2, 3, 4]);
    // Replica 4 catches up and serves a session read of the latest write.
    let slot = propose_anywhere(&replicas[..3], put("last", "v"));
    let got = replicas[3]
        .as_ref()
        .unwrap()
        .fast_read(slot, |kv: &KvStore| kv.len())
        .wait_timeout(Duration::from_secs(5))
        .expect("replica 4 caught up within 5 s")
        .unwrap();
    assert_eq!(got.value, 21);
    replicas.clear();
}

/// A state machine that panics on a poison command: the failure is surfaced via the handle.
struct Fragile;

impl StateMachine for Fragile {
    type Output = ();
    fn apply(&mut self, decree: u64, command: &[u8]) {
        assert!(command != b"poison", "poison command at decree {decree}");
    }
    fn save_checkpoint(&self, _: &mut dyn std::io::Write) -> std::io::Result<()> {
        Ok(())
    }
    fn load_checkpoint(&mut self, _: &mut dyn std::io::Read) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_panic_in_the_state_machine_stops_the_replica_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let net = LocalNetwork::new();
    let r =
        Arc::new(Replica::start_local(config(1, dir.path(), "memory", 1), Fragile, &net).unwrap());
    let start = Instant::now();
    while r.role() != Role::Leader {
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    r.propose(b"fine".to_vec()).wait().unwrap();
    let err = r.propose(b"poison".to_vec()).wait().unwrap_err();
    let Error::Failed(f) = err else {
        panic!("expected Failed, got {err}")
    };
    assert!(f.message.contains("poison command"), "{f}");
    assert_eq!(f.doing, "applying a decree to the state machine");
    assert!(r.failure().is_some());
    assert!(matches!(
        r.propose(b"x".to_vec()).wait(),
        Err(Error::Failed(_))
    ));
    assert!(r.shutdown().is_err());
}

#[test]
fn three_replicas_over_shared_memory_rings_commit_and_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = keel_engine::ShmMesh::new(&[1, 2, 3]).unwrap();
    let mut replicas: Vec<Option<Replica<KvStore>>> = (1..=3)
        .map(|i| {
            Some(
                Replica::start_shm(config(i, dir.path(), "memory", 3), KvStore::new(), &mesh)
                    .unwrap(),
            )
        })
        .collect();
    for k in 0..50 {
        propose_anywhere(&replicas, put(&format!("k{k}"), "v"));
    }
    let leader = wait_leader(&replicas, Duration::from_secs(5));
    replicas[leader].take().unwrap().shutdown().unwrap();
    propose_anywhere(&replicas, put("after", "failover"));
    let new_leader = wait_leader(&replicas, Duration::from_secs(5));
    let n = replicas[new_leader]
        .as_ref()
        .unwrap()
        .read(|kv: &KvStore| kv.len())
        .wait()
        .unwrap();
    assert_eq!(n.value, 51);
}
