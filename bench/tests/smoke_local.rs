//! Smoke test: `keel-bench local` starts a 3-replica in-process cluster, drives one client
//! briefly, measures a fail-over, and reports it with the limits of the same run. It checks
//! that the tool and the embedding API work together, not how fast they are.

use std::process::Command;

#[test]
fn local_runs_a_three_replica_cluster_briefly() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("local.json");
    let out = Command::new(env!("CARGO_BIN_EXE_keel-bench"))
        .args([
            "local",
            "--transports",
            "local",
            "--durability",
            "none",
            "--clients",
            "1",
            "--duration-ms",
            "200",
            "--warmup-ms",
            "50",
            "--quiet",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["command"], "local");
    assert_eq!(v["limits"][0]["name"], "cacheline-rtt");
    let results = v["results"].as_array().unwrap();
    let load = results
        .iter()
        .find(|r| r["name"] == "keel-local-none-64B-c1")
        .unwrap_or_else(|| panic!("no load figure: {v}"));
    assert!(load["summary"]["count"].as_u64().unwrap() > 0, "{load}");
    assert_eq!(load["ratios"]["limit"], "cacheline-rtt");
    assert_eq!(load["params"]["replicas"], 3);
    let failover = results
        .iter()
        .find(|r| r["name"] == "keel-local-none-64B-failover")
        .unwrap_or_else(|| panic!("no fail-over figure: {v}"));
    assert_eq!(failover["summary"]["count"], 1);
    // The replicas' data directories are removed.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".keel-bench"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
