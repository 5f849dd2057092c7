//! The conformance suite against every backend that runs on this machine. `dax` runs here with
//! the msync fallback (its MAP_SYNC path runs in the VM: `tests/vm_dax.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::sync::Arc;

use keel_pmem::{
    DaxOptions, DaxRegion, DirectIo, FileOptions, FileRegion, Region, RegionError, SimRegion,
    UringOptions, UringRegion,
};

fn tempfile_opener(
    f: impl Fn(&std::path::Path, u64) -> Result<Box<dyn Region>, RegionError> + 'static,
) -> common::Opener {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    Box::new(move |len| {
        let _keep = &dir;
        f(&path, len)
    })
}

mod sim {
    use super::*;
    fn fixture() -> Result<crate::common::Opener, String> {
        let mut last: Option<Arc<SimRegion>> = None;
        Ok(Box::new(move |len| {
            // Reopening after a crash that persisted nothing pending.
            let r = match &last {
                Some(prev) if len == 0 => Arc::new(SimRegion::from_image(prev.durable_image())),
                _ => Arc::new(SimRegion::new(len)),
            };
            last = Some(Arc::clone(&r));
            Ok(Box::new(r) as Box<dyn Region>)
        }))
    }
    crate::conformance_suite!(fixture());
}

/// `file` with its default, direct I/O where the file system allows it (the fixture says when
/// it fell back).
mod file {
    use super::*;
    fn fixture() -> Result<crate::common::Opener, String> {
        Ok(tempfile_opener(|p, len| {
            let r = FileRegion::open(p, len)?;
            if !r.is_direct() {
                eprintln!(
                    "note: O_DIRECT refused under {}: `file` runs buffered here",
                    p.display()
                );
            }
            Ok(Box::new(r))
        }))
    }
    crate::conformance_suite!(fixture());
}

/// `file` through the page cache (`pwrite` + `fdatasync`).
mod file_buffered {
    use super::*;
    fn fixture() -> Result<crate::common::Opener, String> {
        Ok(tempfile_opener(|p, len| {
            let opts = FileOptions {
                direct: DirectIo::Off,
            };
            Ok(Box::new(FileRegion::open_with(p, len, opts)?))
        }))
    }
    crate::conformance_suite!(fixture());
}

/// `None` when io_uring works here, else the reason it does not.
pub fn uring_unsupported() -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    match UringRegion::open(&dir.path().join("probe"), 4096, UringOptions::default()) {
        Ok(_) => None,
        Err(e @ RegionError::Unsupported { .. }) => Some(format!(
            "io_uring refused by this kernel ({e}: {:?}); runs on any Linux >= 5.6 without a seccomp filter on io_uring",
            std::error::Error::source(&e).map(|s| s.to_string())
        )),
        Err(e) => panic!("uring probe failed unexpectedly: {e}"),
    }
}

/// A `uring` fixture with small staging buffers, so the tests also cover the buffer-full path.
fn uring_fixture(direct: DirectIo) -> Result<common::Opener, String> {
    if let Some(reason) = uring_unsupported() {
        return Err(reason);
    }
    let opts = UringOptions {
        staging_bytes: 8192,
        ring_entries: 8,
        direct,
    };
    Ok(tempfile_opener(move |p, len| {
        Ok(Box::new(UringRegion::open(p, len, opts)?))
    }))
}

/// `uring` with its default, direct I/O where the file system allows it.
mod uring {
    crate::conformance_suite!(super::uring_fixture(keel_pmem::DirectIo::Auto));
}

/// `uring` through the page cache (write chains linked to fdatasync).
mod uring_buffered {
    crate::conformance_suite!(super::uring_fixture(keel_pmem::DirectIo::Off));
}

mod dax_msync_fallback {
    use super::*;
    fn fixture() -> Result<crate::common::Opener, String> {
        let opts = DaxOptions {
            msync_fallback: true,
            ..DaxOptions::default()
        };
        Ok(tempfile_opener(move |p, len| {
            Ok(Box::new(DaxRegion::open(p, len, opts)?))
        }))
    }
    crate::conformance_suite!(fixture());
}

#[test]
fn dax_on_a_non_dax_file_system_fails_with_map_sync_refused() {
    // tmpfs (/dev/shm) and ext4 without -o dax both refuse MAP_SYNC.
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::tempdir_in(base).unwrap();
    let path = dir.path().join("region");
    match DaxRegion::open(&path, 1 << 16, DaxOptions::default()) {
        Err(RegionError::MapSyncRefused { path: p, source }) => {
            assert_eq!(p, path);
            assert!(
                matches!(source.raw_os_error(), Some(libc_eopnotsupp) if libc_eopnotsupp == 95 || libc_eopnotsupp == 22)
            );
            let msg = RegionError::MapSyncRefused { path: p, source }.to_string();
            assert!(
                msg.contains("MAP_SYNC") && msg.contains("msync fallback"),
                "{msg}"
            );
        }
        Err(e) => panic!("expected MapSyncRefused, got {e}"),
        Ok(r) => eprintln!(
            "skipped: {base} accepted MAP_SYNC (a DAX mount?): {:?}",
            r.mode()
        ),
    }
}

#[test]
fn dax_picks_a_write_back_instruction_from_cpuid() {
    let (clwb, clflushopt, clflush) = keel_pmem::dax::cpu_flush_support();
    assert!(clflush, "every x86_64 CPU has clflush");
    println!("cpu: clwb={clwb} clflushopt={clflushopt} clflush={clflush}");
}
