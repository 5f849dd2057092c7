//! Keel's persistence log: crash-consistent and corruption-detecting, over DAX, io_uring,
//! plain files, and a simulated region that models crashes.
#![deny(missing_docs)]
