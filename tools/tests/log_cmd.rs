//! Tests of the `keel log verify` / `keel log dump` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::Path;
use std::process::{Command, Output};

use keel_pmem::{Backend, Log, LogConfig};

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn make_log(path: &Path) -> Vec<u64> {
    let cfg = LogConfig {
        backend: Backend::File(Default::default()),
        path: path.to_path_buf(),
        region_bytes: 64 * 1024,
        log_id: 77,
    };
    let log = Log::create_with(&cfg).unwrap();
    let mut pos = vec![log.append(b"first").unwrap()];
    pos.extend(log.append_batch(&[b"second", &[0xab; 40]]).unwrap());
    pos
}

#[test]
fn verify_reports_an_intact_log_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    make_log(&path);
    let o = keel(&["log", "verify", path.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains(": ok"), "{out}");
    assert!(
        out.contains("records: 3 (all checksums verified), 51 payload bytes"),
        "{out}"
    );
    assert!(out.contains("log id 77"), "{out}");
    // Three records (104 bytes) and the two commit marks (48 bytes each) closing the batches.
    assert!(out.contains("ends at log position 200"), "{out}");
}

#[test]
fn verify_finds_a_damaged_record_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let pos = make_log(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    let off = 4096 + pos[0] as usize + 16 + 2;
    bytes[off] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let o = keel(&["log", "verify", path.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("CORRUPT"), "{err}");
    assert!(
        err.contains(&format!("record payload at log position {}", pos[0])),
        "{err}"
    );
    assert!(
        err.contains(&format!("region offset {}", 4096 + pos[0])),
        "{err}"
    );
}

#[test]
fn verify_says_when_the_last_one_fence_batch_is_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let pos = make_log(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4096 + pos[2] as usize + 16] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let o = keel(&["log", "verify", path.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("records: 1 "), "{out}");
    assert!(
        out.contains(&format!("incomplete batch at log position {}", pos[1])),
        "{out}"
    );
}

#[test]
fn verify_rejects_a_damaged_selector_and_a_file_that_is_not_a_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    make_log(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[130] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let o = keel(&["log", "verify", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o)
            .1
            .contains("metadata selector at region offset 128")
    );

    let other = dir.path().join("zeros");
    std::fs::write(&other, vec![0u8; 8192]).unwrap();
    let o = keel(&["log", "verify", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("no Keel log"));

    let o = keel(&[
        "log",
        "verify",
        dir.path().join("missing").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        !dir.path().join("missing").exists(),
        "verify must not create files"
    );
}

#[test]
fn dump_prints_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let pos = make_log(&path);
    let o = keel(&["log", "dump", path.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("pos ")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], format!("pos {} len 5 6669727374", pos[0]));
    assert!(
        lines[2].ends_with("..."),
        "long payloads are cut: {}",
        lines[2]
    );
    let o = keel(&["log", "dump", "--hex", path.to_str().unwrap()]);
    assert!(text(&o).0.contains(&"ab".repeat(40)));
}
