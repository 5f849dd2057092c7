//! Fuzz target: see `keel_transport::fuzzing::ring_frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keel_transport::fuzzing::ring_frame(data);
});
