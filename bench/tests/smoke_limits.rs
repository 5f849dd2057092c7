//! Smoke test: `keel-bench limits` runs briefly and writes a JSON report and a plot with every
//! limit it measured. It checks that the tool works, not how fast the machine is.

use std::process::Command;

#[test]
fn limits_runs_briefly_and_writes_json_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("limits.json");
    let plot = dir.path().join("limits.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_keel-bench"))
        .args([
            "limits",
            "--duration-ms",
            "50",
            "--quiet",
            "--pwrite-sizes",
            "64",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("cacheline-rtt"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["command"], "limits");
    assert_eq!(v["params"]["duration_ms"], 50);
    let names: Vec<&str> = v["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "cacheline-rtt",
            "tcp-rtt-64B-busy",
            "tcp-rtt-64B-blocking",
            "fdatasync-4KiB-overwrite",
            "pwrite-fdatasync-64B"
        ]
    );
    for l in v["limits"].as_array().unwrap() {
        assert!(l["summary"]["count"].as_u64().unwrap() > 0, "{l}");
        assert!(l["summary"]["p50_ns"].as_f64().unwrap() > 0.0, "{l}");
    }
    // The RDMA limit is either measured or skipped with a reason, never silently absent.
    let ib_measured = names.iter().any(|n| n.starts_with("ib-write-rtt"));
    let ib_skipped = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "ib-write-rtt-64B");
    assert!(ib_measured || ib_skipped);
    // The scratch files are removed.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".keel-bench"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(
        std::fs::read_to_string(&plot)
            .unwrap()
            .contains("cacheline-rtt")
    );
}
