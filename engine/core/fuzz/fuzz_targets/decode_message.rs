//! Arbitrary bytes into the wire decoder: it must never panic, and whatever it accepts must
//! re-encode to bytes that decode to the same message.
#![no_main]

use keel_core::codec::{decode_message, message_to_vec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_message(data) {
        let again = decode_message(&message_to_vec(&msg));
        assert_eq!(again.as_ref(), Ok(&msg), "re-encoding changed the message");
    }
});
