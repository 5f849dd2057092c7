//! `keel log verify PATH` and `keel log dump PATH`: offline inspection of a persistence log
//! file (any backend except `sim` writes the same layout to its file).
//!
//! Exit codes: 0 the log is intact; 2 corruption (or not a Keel log), with where it is;
//! 1 the file could not be read.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use keel_pmem::layout::LOG_AREA_OFF;
use keel_pmem::{FileRegion, LogError, Record, Region, scan_region};

/// `keel log ...`
#[derive(Args, Debug)]
pub struct LogArgs {
    #[command(subcommand)]
    command: LogCommand,
}

#[derive(Subcommand, Debug)]
enum LogCommand {
    /// Check a log file: metadata, every live record's checksum, where the log ends.
    Verify {
        /// The log file.
        path: PathBuf,
    },
    /// Print every live record (position, length, payload).
    Dump {
        /// The log file.
        path: PathBuf,
        /// Print whole payloads in hex instead of the first 32 bytes.
        #[arg(long)]
        hex: bool,
    },
}

/// Exit code for corruption or a file that holds no Keel log.
pub const EXIT_CORRUPT: i32 = 2;
/// Exit code for an unreadable file.
pub const EXIT_IO: i32 = 1;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the subcommand; returns the process exit code.
pub fn run(args: LogArgs) -> anyhow::Result<i32> {
    let (path, dump, full_hex) = match args.command {
        LogCommand::Verify { path } => (path, false, false),
        LogCommand::Dump { path, hex } => (path, true, hex),
    };
    let region = match FileRegion::open_read_only(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keel log: {}: {e}", path.display());
            return Ok(EXIT_IO);
        }
    };
    let mut out = std::io::stdout().lock();
    let mut payload_bytes = 0u64;
    let mut write_err = None;
    let result = scan_region(&region, |r: &Record| {
        payload_bytes += r.payload.len() as u64;
        if dump {
            let shown = if full_hex {
                hex(&r.payload)
            } else {
                let n = r.payload.len().min(32);
                let more = if r.payload.len() > n { "..." } else { "" };
                format!("{}{more}", hex(&r.payload[..n]))
            };
            if let Err(e) = writeln!(out, "pos {} len {} {}", r.pos, r.payload.len(), shown) {
                write_err.get_or_insert(e);
            }
        }
    });
    if let Some(e) = write_err {
        return Err(e.into());
    }
    match result {
        Ok((rec, active)) => {
            writeln!(out, "log {}: ok", path.display())?;
            writeln!(
                out,
                "  region {} bytes, log area {} bytes at offset {LOG_AREA_OFF}, log id {}",
                region.len(),
                rec.capacity,
                rec.log_id
            )?;
            writeln!(
                out,
                "  live metadata copy {active}; head {} tail {} ({} bytes used, {} free)",
                rec.head,
                rec.tail,
                rec.tail - rec.head,
                rec.capacity - (rec.tail - rec.head)
            )?;
            writeln!(
                out,
                "  generation {}: metadata covers up to {}, commit marks from there on{}",
                rec.generation,
                rec.metadata_tail,
                rec.last_batch_start
                    .map_or(String::new(), |b| format!(" (last batch at {b})"))
            )?;
            if let Some(at) = rec.discarded_batch_at {
                writeln!(
                    out,
                    "  an incomplete batch at log position {at} is not part of the log \
                     (a crash during its commit, or damage to the last batch after it)"
                )?;
            }
            writeln!(
                out,
                "  records: {} (all checksums verified), {payload_bytes} payload bytes",
                rec.records
            )?;
            writeln!(
                out,
                "  ends at log position {} (region offset {})",
                rec.tail,
                LOG_AREA_OFF + rec.tail % rec.capacity
            )?;
            Ok(0)
        }
        Err(
            e @ (LogError::Corrupt { .. }
            | LogError::NotFormatted
            | LogError::RegionTooSmall { .. }),
        ) => {
            out.flush()?;
            eprintln!("keel log: {}: CORRUPT: {e}", path.display());
            Ok(EXIT_CORRUPT)
        }
        Err(e) => {
            out.flush()?;
            eprintln!("keel log: {}: {e}", path.display());
            Ok(EXIT_IO)
        }
    }
}
