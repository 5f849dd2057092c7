//! Keel's test infrastructure: the deterministic cluster simulator and end-to-end harnesses.
