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
