//! Fuzz target: see `keel_transport::fuzzing::handshake_bytes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keel_transport::fuzzing::handshake_bytes(data);
});
