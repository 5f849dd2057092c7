//! Fuzz target: see `keel_transport::fuzzing::tcp_messages`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keel_transport::fuzzing::tcp_messages(data);
});
