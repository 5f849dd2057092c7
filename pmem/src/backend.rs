//! Choosing a backend by configuration.

use std::path::PathBuf;

use crate::dax::{DaxOptions, DaxRegion};
use crate::error::{LogError, RegionError};
use crate::file::{DirectIo, FileOptions, FileRegion};
use crate::log::{Log, Recovered};
use crate::region::Region;
use crate::sim::SimRegion;
use crate::uring::{UringOptions, UringRegion};

/// Which region backend a log runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `MAP_SYNC` mapping on a DAX file system.
    Dax(DaxOptions),
    /// io_uring with registered buffers and linked write + fdatasync.
    Uring(UringOptions),
    /// Gathered writes, then `fdatasync` (or one `RWF_DSYNC` write): direct I/O by default.
    File(FileOptions),
    /// In-memory crash model (the path is ignored; nothing persists past the process).
    Sim,
}

impl Backend {
    /// Parses `dax`, `dax-msync` (dax with the msync fallback), `uring`, `file` (direct I/O
    /// where the file system allows it), `file-buffered` (`pwrite` + `fdatasync` through the
    /// page cache), `uring-buffered` (io_uring without direct I/O), `sim`.
    pub fn parse(name: &str) -> Option<Backend> {
        Some(match name {
            "dax" => Backend::Dax(DaxOptions::default()),
            "dax-msync" => Backend::Dax(DaxOptions {
                msync_fallback: true,
                ..DaxOptions::default()
            }),
            "uring" => Backend::Uring(UringOptions::default()),
            "uring-buffered" => Backend::Uring(UringOptions {
                direct: DirectIo::Off,
                ..UringOptions::default()
            }),
            "file" => Backend::File(FileOptions::default()),
            "file-buffered" => Backend::File(FileOptions {
                direct: DirectIo::Off,
            }),
            "sim" => Backend::Sim,
            _ => return None,
        })
    }

    /// The backend's name.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Dax(_) => "dax",
            Backend::Uring(UringOptions {
                direct: DirectIo::Off,
                ..
            }) => "uring-buffered",
            Backend::Uring(_) => "uring",
            Backend::File(FileOptions {
                direct: DirectIo::Off,
            }) => "file-buffered",
            Backend::File(_) => "file",
            Backend::Sim => "sim",
        }
    }
}

/// Where and on what a log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The backend.
    pub backend: Backend,
    /// Backing file (ignored by `sim`).
    pub path: PathBuf,
    /// Region size in bytes when creating (the log area is this minus 4 KiB of metadata);
    /// 0 when opening means "the file's size".
    pub region_bytes: u64,
    /// Identifier stored in the log (checked on recovery).
    pub log_id: u64,
}

impl LogConfig {
    /// Opens the configured region.
    pub fn open_region(&self) -> Result<Box<dyn Region>, RegionError> {
        Ok(match self.backend {
            Backend::Dax(o) => Box::new(DaxRegion::open(&self.path, self.region_bytes, o)?),
            Backend::Uring(o) => Box::new(UringRegion::open(&self.path, self.region_bytes, o)?),
            Backend::File(o) => Box::new(FileRegion::open_with(&self.path, self.region_bytes, o)?),
            Backend::Sim => Box::new(SimRegion::new(self.region_bytes)),
        })
    }
}

/// A log over whichever backend the configuration named.
pub type DynLog = Log<Box<dyn Region>>;

impl Log<Box<dyn Region>> {
    /// Creates (formats) a log as configured.
    pub fn create_with(cfg: &LogConfig) -> Result<DynLog, LogError> {
        Log::create(cfg.open_region()?, cfg.log_id)
    }

    /// Opens and recovers a log as configured.
    pub fn open_with(cfg: &LogConfig) -> Result<(DynLog, Recovered), LogError> {
        Log::open(cfg.open_region()?)
    }
}
