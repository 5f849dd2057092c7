//! The conformance suite on a real DAX file system with `MAP_SYNC` (no fallback), once per
//! write-back method. Runs inside the soft-RoCE/NVDIMM VM (`tests/vm/run`), where
//! `KEEL_DAX_DIR` is an ext4 `-o dax` mount; elsewhere every test prints why it is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use keel_pmem::{DaxFlush, DaxOptions, DaxRegion, Region};

fn dax_fixture(flush: DaxFlush) -> Result<common::Opener, String> {
    let Some(dir) = std::env::var_os("KEEL_DAX_DIR") else {
        return Err("skipped: needs a DAX file system (KEEL_DAX_DIR); runs in the soft-RoCE VM via tests/vm/run".into());
    };
    let (clwb, clflushopt, _) = keel_pmem::dax::cpu_flush_support();
    if (flush == DaxFlush::Clwb && !clwb) || (flush == DaxFlush::Clflushopt && !clflushopt) {
        return Err(format!("skipped: this CPU lacks {flush:?}"));
    }
    let dir = tempfile::tempdir_in(dir).map_err(|e| format!("cannot use KEEL_DAX_DIR: {e}"))?;
    let path = dir.path().join("region");
    let opts = DaxOptions {
        msync_fallback: false,
        flush,
    };
    Ok(Box::new(move |len| {
        let _keep = &dir;
        let r = DaxRegion::open(&path, len, opts)?;
        assert!(
            !matches!(r.mode(), keel_pmem::dax::DaxMode::Msync),
            "KEEL_DAX_DIR must give a MAP_SYNC mapping"
        );
        Ok(Box::new(r) as Box<dyn Region>)
    }))
}

mod auto {
    use super::*;
    crate::conformance_suite!(dax_fixture(DaxFlush::Auto));
}
mod clflushopt {
    use super::*;
    crate::conformance_suite!(dax_fixture(DaxFlush::Clflushopt));
}
mod clflush {
    use super::*;
    crate::conformance_suite!(dax_fixture(DaxFlush::Clflush));
}
mod nontemporal {
    use super::*;
    crate::conformance_suite!(dax_fixture(DaxFlush::NonTemporal));
}

/// Page faults (minor and major) the calling thread took while `f` ran.
fn faults_during(f: impl FnOnce()) -> u64 {
    fn now() -> u64 {
        // SAFETY: getrusage writes only into the zeroed struct we pass.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above; RUSAGE_THREAD is the calling thread.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
        assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
        (u.ru_minflt + u.ru_majflt) as u64
    }
    let before = now();
    f();
    now() - before
}

/// `preallocate` on `dax` allocates the file's blocks and faults the pages in writable, so
/// appends into the range take no page fault (a first store into a sparse `MAP_SYNC` file
/// faults and, to allocate the block, commits the file system's journal inside the fault).
/// What was written before survives it.
#[test]
fn appends_into_a_preallocated_dax_range_take_no_page_fault() {
    const MIB: u64 = 1 << 20;
    let Some(dir) = std::env::var_os("KEEL_DAX_DIR") else {
        eprintln!(
            "skipped: needs a DAX file system (KEEL_DAX_DIR); runs in the soft-RoCE VM via tests/vm/run"
        );
        return;
    };
    let dir = tempfile::tempdir_in(dir).unwrap();
    let opts = DaxOptions {
        msync_fallback: false,
        flush: DaxFlush::Auto,
    };
    let r = DaxRegion::open(&dir.path().join("region"), 4 * MIB, opts).unwrap();
    let chunk = vec![0xA5u8; 64 << 10];
    let append = |from: u64| {
        for i in 0..(2 * MIB / chunk.len() as u64) {
            let at = from + i * chunk.len() as u64;
            r.write(at, &chunk).unwrap();
            r.flush(at, chunk.len() as u64).unwrap();
            r.fence().unwrap();
        }
    };
    // A record already in the second half: preallocating around it must keep it.
    r.write(3 * MIB + 100, b"kept").unwrap();
    r.flush(3 * MIB + 100, 4).unwrap();
    r.fence().unwrap();
    let cold = faults_during(|| append(0));
    r.preallocate(2 * MIB, 2 * MIB).unwrap();
    let mut kept = [0u8; 4];
    r.read(3 * MIB + 100, &mut kept).unwrap();
    assert_eq!(&kept, b"kept", "preallocate changed written bytes");
    let warm = faults_during(|| append(2 * MIB));
    eprintln!(
        "page faults appending 2 MiB in 64 KiB records: {cold} into a sparse file, {warm} after \
         preallocate"
    );
    assert!(
        warm <= 2,
        "{warm} page faults appending into a preallocated range ({cold} cold)"
    );
}
