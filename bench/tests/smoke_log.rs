//! Smoke test: `keel-bench log` runs briefly on the `file` backend and reports the bare loop,
//! the floor, the single and group figures (interleaved) and the targets. It checks that the
//! tool works, not how fast the machine is.

use std::process::Command;

#[test]
fn log_runs_briefly_and_reports_single_and_group_figures() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("log.json");
    let out = Command::new(env!("CARGO_BIN_EXE_keel-bench"))
        .args([
            "log",
            "--duration-ms",
            "300",
            "--quiet",
            "--backends",
            "file",
            "--payloads",
            "64",
            "--appenders",
            "4",
            "--region-mib",
            "1",
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
    assert_eq!(v["command"], "log");
    // Pinned to the core of the disk's interrupt, or not pinned with a note saying why.
    let notes = v["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n.as_str().unwrap().contains("pinned")),
        "{notes:?}"
    );
    let names = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names("limits"),
        [
            "pwrite-fdatasync-64B",
            "direct-dsync-64B-record",
            "pwrite-fdatasync-64Bx4"
        ]
    );
    assert_eq!(
        names("results"),
        ["log-file-64B-single", "log-file-64B-group4"]
    );
    for r in v["results"].as_array().unwrap() {
        assert!(r["summary"]["count"].as_u64().unwrap() > 0, "{r}");
        assert!(r["params"]["commits"].as_u64().unwrap() > 0, "{r}");
    }
    let targets: Vec<&str> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        targets.contains(&"log-file-64B-group4 throughput >= 8x log-file-64B-single throughput"),
        "{targets:?}"
    );
}

#[test]
fn log_refuses_a_core_it_may_not_run_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keel-bench"))
        .args(["log", "--quiet", "--pin-core", "4096"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("core 4096"), "{stderr}");
}
