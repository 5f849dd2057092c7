//! Keel transports: one ring protocol over RDMA verbs and shared memory, and a TCP transport.
#![deny(missing_docs)]
