//! Arbitrary bytes into the persist-op decoder (records read back from disk): never panics.
#![no_main]

use keel_core::codec::{decode_persist_op, encode_persist_op};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(op) = decode_persist_op(data) {
        let mut bytes = Vec::new();
        encode_persist_op(&op, &mut bytes);
        assert_eq!(
            decode_persist_op(&bytes).as_ref(),
            Ok(&op),
            "re-encoding changed the op"
        );
    }
});
