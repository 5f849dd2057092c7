//! Test-only fault injection for any transport: [`FaultNet`] wraps the replica's [`Net`] and
//! drops the messages that a *fault file* says are cut, in both directions.
//!
//! It exists for the end-to-end tests, which run real `keel run` processes and need to isolate
//! a replica over transports that have no proxy to put in the way (`shm` rings, `rdma` queue
//! pairs). It is off unless the configuration names a file:
//!
//! ```toml
//! [testing]                      # test-only: never set this in production
//! fault_file = "/tmp/cluster/faults"
//! ```
//!
//! Without `testing.fault_file` the replica's transport is not wrapped at all, so there is no
//! cost. With it, the file is re-read at most every [`RELOAD_EVERY`] (at the start of a loop
//! pass), and a missing or empty file means no faults. Every replica of a cluster can share one
//! file. Its lines (`#` starts a comment):
//!
//! ```text
//! isolate 3      # replica 3 exchanges no message with anyone
//! cut 1 2        # replicas 1 and 2 exchange no message (both directions)
//! ```
//!
//! Write the file atomically (write a temporary file, rename it over; [`write_fault_file`] does)
//! so a replica never reads half of it. A file that does not parse is refused with a typed
//! [`FaultFileError`] when the replica starts; one that turns bad while the replica runs is
//! reported on stderr and the previous rules stay in force.
//!
//! Tested by the unit tests below (parsing, errors, both directions dropped, reload) and by the
//! end-to-end tests that isolate a leader over `shm` and `rdma` (`tests/tests/e2e_shm.rs`,
//! `tests/tests/vm_e2e_rdma.rs`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_core::{Message, ReplicaId};

use super::Net;

/// How often a running replica re-reads its fault file.
pub const RELOAD_EVERY: Duration = Duration::from_millis(5);

/// Why a fault file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FaultFileError {
    /// The file exists but could not be read.
    #[error("cannot read fault file {path}: {source}")]
    Read {
        /// The fault file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `isolate <id>` or `cut <id> <id>`.
    #[error("fault file {path}, line {line}: `{text}`: {reason}")]
    Parse {
        /// The fault file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
        /// What would be accepted.
        reason: &'static str,
    },
    /// The file could not be written (by [`write_fault_file`]).
    #[error("cannot write fault file {path}: {source}")]
    Write {
        /// The fault file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The faults in force: isolated replicas and cut links.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    isolated: BTreeSet<u64>,
    /// Links cut, as `(lower id, higher id)`.
    cuts: BTreeSet<(u64, u64)>,
}

impl Faults {
    /// No faults.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Adds: replica `id` exchanges no message with anyone.
    pub fn isolate(mut self, id: u64) -> Faults {
        self.isolated.insert(id);
        self
    }

    /// Adds: replicas `a` and `b` exchange no message.
    pub fn cut(mut self, a: u64, b: u64) -> Faults {
        self.cuts.insert((a.min(b), a.max(b)));
        self
    }

    /// Whether messages between `a` and `b` are dropped (in either direction).
    pub fn is_cut(&self, a: u64, b: u64) -> bool {
        self.isolated.contains(&a)
            || self.isolated.contains(&b)
            || self.cuts.contains(&(a.min(b), a.max(b)))
    }

    /// No fault at all.
    pub fn is_empty(&self) -> bool {
        self.isolated.is_empty() && self.cuts.is_empty()
    }

    /// Parses the text of a fault file (`path` only names it in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Faults, FaultFileError> {
        let mut faults = Faults::none();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason| FaultFileError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                text: raw.to_string(),
                reason,
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            let id = |w: &str| w.parse::<u64>().ok().filter(|&id| id > 0);
            faults = match words.as_slice() {
                ["isolate", a] => faults.isolate(id(a).ok_or(bad("a replica id is >= 1"))?),
                ["cut", a, b] => {
                    let (a, b) = (
                        id(a).ok_or(bad("a replica id is >= 1"))?,
                        id(b).ok_or(bad("a replica id is >= 1"))?,
                    );
                    if a == b {
                        return Err(bad("`cut` takes two different replicas"));
                    }
                    faults.cut(a, b)
                }
                _ => return Err(bad("expected `isolate <id>` or `cut <id> <id>`")),
            };
        }
        Ok(faults)
    }

    /// The text of a fault file holding these faults (what [`Faults::parse`] reads back).
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for id in &self.isolated {
            text.push_str(&format!("isolate {id}\n"));
        }
        for (a, b) in &self.cuts {
            text.push_str(&format!("cut {a} {b}\n"));
        }
        text
    }
}

/// Reads a fault file; a missing file means no faults.
pub fn read_fault_file(path: &Path) -> Result<Faults, FaultFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Faults::parse(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Faults::none()),
        Err(source) => Err(FaultFileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces the fault file atomically (a temporary file renamed over it), so a replica reads
/// either the old rules or the new ones.
pub fn write_fault_file(path: &Path, faults: &Faults) -> Result<(), FaultFileError> {
    let err = |source| FaultFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, faults.to_text()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// A transport that drops what the fault file cuts; see the module docs.
pub struct FaultNet {
    inner: Box<dyn Net>,
    me: u64,
    path: PathBuf,
    faults: Faults,
    /// The last bad file's error text, reported once.
    reported: Option<String>,
    reloaded_at: Instant,
    /// Messages dropped on the way out and on the way in.
    pub dropped_out: u64,
    /// See `dropped_out`.
    pub dropped_in: u64,
}

impl FaultNet {
    /// Wraps replica `me`'s transport; fails if the fault file exists and is bad.
    pub fn new(inner: Box<dyn Net>, me: u64, path: PathBuf) -> Result<FaultNet, FaultFileError> {
        let faults = read_fault_file(&path)?;
        Ok(FaultNet {
            inner,
            me,
            path,
            faults,
            reported: None,
            reloaded_at: Instant::now(),
            dropped_out: 0,
            dropped_in: 0,
        })
    }

    /// The faults in force.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    fn reload(&mut self) {
        match read_fault_file(&self.path) {
            Ok(faults) => {
                self.faults = faults;
                self.reported = None;
            }
            Err(e) => {
                let text = e.to_string();
                if self.reported.as_ref() != Some(&text) {
                    eprintln!(
                        "keel replica {}: {text}; keeping the previous faults",
                        self.me
                    );
                    self.reported = Some(text);
                }
            }
        }
    }
}

impl Net for FaultNet {
    fn send(&mut self, to: ReplicaId, msg: Message) {
        if self.faults.is_cut(self.me, to.0) {
            self.dropped_out += 1;
            return;
        }
        self.inner.send(to, msg);
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

    fn drain(&mut self, out: &mut Vec<(ReplicaId, Message)>) {
        if self.reloaded_at.elapsed() >= RELOAD_EVERY {
            self.reloaded_at = Instant::now();
            self.reload();
        }
        let first_new = out.len();
        self.inner.drain(out);
        if self.faults.is_empty() {
            return;
        }
        let before = out.len();
        let (me, faults) = (self.me, &self.faults);
        let mut i = 0usize;
        out.retain(|(from, _)| {
            let keep = i < first_new || !faults.is_cut(me, from.0);
            i += 1;
            keep
        });
        self.dropped_in += (before - out.len()) as u64;
    }

    fn close(&mut self) {
        self.inner.close();
    }
}

/// Wraps `net` in a [`FaultNet`] if the configuration names a fault file; otherwise returns it
/// untouched.
pub(crate) fn wrap(
    net: Box<dyn Net>,
    config: &crate::config::Config,
) -> Result<Box<dyn Net>, FaultFileError> {
    match &config.testing.fault_file {
        None => Ok(net),
        Some(path) => Ok(Box::new(FaultNet::new(net, config.id, path.clone())?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::Ballot;
    use std::sync::{Arc, Mutex};

    #[test]
    fn fault_files_parse_and_round_trip() {
        let p = Path::new("faults");
        let f = Faults::parse(p, "# a comment\n\nisolate 3\ncut 2 1 # trailing\n").unwrap();
        assert_eq!(f, Faults::none().isolate(3).cut(1, 2));
        assert!(f.is_cut(3, 1) && f.is_cut(2, 3) && f.is_cut(1, 2) && f.is_cut(2, 1));
        assert!(!f.is_cut(1, 4) && !f.is_cut(4, 2));
        assert_eq!(Faults::parse(p, &f.to_text()).unwrap(), f);
        assert!(Faults::parse(p, "").unwrap().is_empty());
    }

    #[test]
    fn a_bad_line_is_a_typed_error_naming_the_line() {
        let p = Path::new("/x/faults");
        for (text, line) in [
            ("isolate\n", 1),
            ("isolate 1\nisolate one\n", 2),
            ("isolate 0\n", 1),
            ("cut 1\n", 1),
            ("cut 2 2\n", 1),
            ("\n\npartition 1 2\n", 3),
        ] {
            match Faults::parse(p, text) {
                Err(FaultFileError::Parse { line: l, path, .. }) => {
                    assert_eq!((l, path.as_path()), (line, p), "{text:?}")
                }
                other => panic!("{text:?}: expected a parse error, got {other:?}"),
            }
        }
        let e = Faults::parse(p, "cut 2 2").unwrap_err().to_string();
        assert!(e.contains("/x/faults") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn a_missing_file_is_no_faults_and_an_unreadable_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            read_fault_file(&dir.path().join("absent"))
                .unwrap()
                .is_empty()
        );
        // A directory cannot be read as a file.
        assert!(matches!(
            read_fault_file(dir.path()),
            Err(FaultFileError::Read { .. })
        ));
    }

    /// A transport that records what was sent and hands out what a test queued.
    #[derive(Clone, Default)]
    struct Recorder {
        sent: Arc<Mutex<Vec<u64>>>,
        inbox: Arc<Mutex<Vec<(ReplicaId, Message)>>>,
    }

    impl Net for Recorder {
        fn send(&mut self, to: ReplicaId, _msg: Message) {
            self.sent.lock().unwrap().push(to.0);
        }
        fn flush(&mut self) {}
        fn drain(&mut self, out: &mut Vec<(ReplicaId, Message)>) {
            out.append(&mut self.inbox.lock().unwrap());
        }
    }

    fn msg() -> Message {
        Message::PreVoteReply {
            ballot: Ballot {
                round: 1,
                leader: ReplicaId(1),
            },
            granted: false,
        }
    }

    #[test]
    fn cut_links_drop_both_directions_and_the_file_is_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults");
        write_fault_file(&path, &Faults::none().isolate(2)).unwrap();
        let rec = Recorder::default();
        let mut net = FaultNet::new(Box::new(rec.clone()), 1, path.clone()).unwrap();

        for to in [2, 3] {
            net.send(ReplicaId(to), msg());
        }
        assert_eq!(
            *rec.sent.lock().unwrap(),
            vec![3],
            "to the isolated replica: dropped"
        );
        assert_eq!(net.dropped_out, 1);

        // What was already in `out` is never touched; what arrives from 2 is dropped.
        let mut out = vec![(ReplicaId(2), msg())];
        rec.inbox
            .lock()
            .unwrap()
            .extend([(ReplicaId(2), msg()), (ReplicaId(3), msg())]);
        net.drain(&mut out);
        let from: Vec<u64> = out.iter().map(|(r, _)| r.0).collect();
        assert_eq!(from, vec![2, 3]);
        assert_eq!(net.dropped_in, 1);

        // Healed: the next drain after RELOAD_EVERY reads the new file.
        write_fault_file(&path, &Faults::none()).unwrap();
        std::thread::sleep(RELOAD_EVERY * 2);
        rec.inbox.lock().unwrap().push((ReplicaId(2), msg()));
        let mut out = Vec::new();
        net.drain(&mut out);
        assert_eq!(out.len(), 1, "healed: messages from 2 arrive");
        net.send(ReplicaId(2), msg());
        assert_eq!(*rec.sent.lock().unwrap(), vec![3, 2]);

        // A file that turns bad keeps the rules in force.
        write_fault_file(&path, &Faults::none().isolate(1)).unwrap();
        std::thread::sleep(RELOAD_EVERY * 2);
        net.drain(&mut Vec::new());
        assert!(net.faults().is_cut(1, 3));
        std::fs::write(&path, "isolate x\n").unwrap();
        std::thread::sleep(RELOAD_EVERY * 2);
        net.drain(&mut Vec::new());
        assert!(
            net.faults().is_cut(1, 3),
            "a bad file keeps the previous rules"
        );

        // And a bad file refuses to start.
        assert!(matches!(
            FaultNet::new(Box::new(Recorder::default()), 1, path),
            Err(FaultFileError::Parse { line: 1, .. })
        ));
    }
}
