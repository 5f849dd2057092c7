//! `transport = "rdma"` configuration: validated with errors that name the field, with and
//! without the `rdma` feature; a missing device fails the start with a typed error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use keel_engine::kv::KvStore;
use keel_engine::{Config, ConfigError, Replica, StartError, TransportKind};

fn text(device: Option<&str>) -> String {
    let device = device.map_or(String::new(), |d| format!("rdma_device = \"{d}\"\n"));
    format!(
        "id = 1\ndata_dir = \"/tmp/keel-rdma-config\"\ntransport = \"rdma\"\n{device}\n\
         [[members]]\nid = 1\naddr = \"127.0.0.1:7001\"\n\
         [[members]]\nid = 2\naddr = \"127.0.0.1:7011\"\n"
    )
}

fn field(e: ConfigError) -> String {
    match e {
        ConfigError::Invalid { field, .. } => field,
        other => panic!("expected an invalid field, got {other}"),
    }
}

#[test]
fn rdma_without_the_feature_is_refused_naming_transport() {
    if cfg!(feature = "rdma") {
        eprintln!("skipped: built with the rdma feature (the other tests cover it)");
        return;
    }
    let err = Config::from_toml_str(&text(Some("rxe0"))).unwrap_err();
    let msg = err.to_string();
    assert_eq!(field(err), "transport");
    assert!(msg.contains("rdma"), "{msg}");
}

#[test]
fn rdma_needs_a_device_name() {
    if !cfg!(feature = "rdma") {
        eprintln!("skipped: needs keel-engine's rdma feature (runs in tests/vm/run and clippy)");
        return;
    }
    assert_eq!(
        field(Config::from_toml_str(&text(None)).unwrap_err()),
        "rdma_device"
    );
    assert_eq!(
        field(Config::from_toml_str(&text(Some(""))).unwrap_err()),
        "rdma_device"
    );
    let c = Config::from_toml_str(&text(Some("rxe0"))).unwrap();
    assert_eq!(c.transport, TransportKind::Rdma);
    assert_eq!(c.rdma_device.as_deref(), Some("rxe0"));
    assert_eq!(Config::from_toml_str(&c.to_toml()).unwrap(), c);
}

#[test]
fn rdma_members_need_host_port_addresses() {
    let bad = text(Some("rxe0")).replace("127.0.0.1:7011", "replica-2");
    let err = Config::from_toml_str(&bad).unwrap_err();
    assert_eq!(field(err), "members[1].addr");
}

#[test]
fn a_missing_device_fails_the_start_with_a_typed_error() {
    if !cfg!(feature = "rdma") {
        eprintln!("skipped: needs keel-engine's rdma feature (runs in tests/vm/run and clippy)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let t = text(Some("no-such-rdma-device"))
        .replace("/tmp/keel-rdma-config", dir.path().to_str().unwrap());
    let config = Config::from_toml_str(&t).unwrap();
    match Replica::start(config, KvStore::new()) {
        Err(StartError::Transport { kind, reason }) => {
            assert_eq!(kind, "rdma");
            assert!(reason.contains("no-such-rdma-device"), "{reason}");
        }
        Err(other) => panic!("expected a transport error, got {other}"),
        Ok(_) => panic!("a replica started on a device that does not exist"),
    }
}
