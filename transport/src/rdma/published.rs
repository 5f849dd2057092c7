//! Positions published by one-sided RDMA WRITE in a form a torn read cannot pass.
//!
//! The ring's tail (leader to follower) and head (follower to leader) are written into the
//! other side's memory by its NIC while that side's CPU may be reading them. Neither the verbs
//! specification nor PCIe promises that the bytes of one RDMA WRITE become visible to a
//! concurrent reader all at once, and on soft-RoCE in the test VM they did not: the ring's
//! stream test saw 2-9 tail reads per 1,500 frames land mid-write. A reader that loads the
//! 8-byte position mid-write sees a mix of old and new bytes: a value that was never published, which
//! may lie past the real position (the follower would read frames that are not there yet; the
//! leader would overwrite frames the follower has not read).
//!
//! So each position is published as 16 bytes, `[value: u64 LE][check: u64 LE]`, in one RDMA
//! WRITE, where `check` is [`check_word`]`(value)`, a bijective 64-bit mix of the value. The
//! reader loads both words and accepts the value only when they agree ([`load`]); a torn read
//! mixes the bytes of two pairs, which agrees only by a 2^-64 chance, and is simply not
//! accepted: the reader keeps the last position it accepted and sees the new one on a later
//! load, once the write finished. Positions only grow, so the reader also keeps the largest
//! accepted value (an old write landing again cannot move it back).
//!
//! Zeroed memory does not validate (the mix is salted), so a fresh region reads as "nothing
//! published" rather than as position 0 by accident; both ends store a valid pair before they
//! connect ([`store`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of one published position: the value and its check word.
pub const PUBLISHED_BYTES: usize = 16;

/// Salt of the check word (`"keelpub!"`): zeroed memory does not validate.
const SALT: u64 = u64::from_le_bytes(*b"keelpub!");

/// The check word published with `value`: murmur3's 64-bit finalizer of the salted value (a
/// bijection, so distinct values have distinct check words, and every output bit depends on
/// every input bit).
#[must_use]
pub const fn check_word(value: u64) -> u64 {
    let mut z = value ^ SALT;
    z ^= z >> 33;
    z = z.wrapping_mul(0xff51_afd7_ed55_8ccd);
    z ^= z >> 33;
    z = z.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    z ^ (z >> 33)
}

/// The 16 bytes that publish `value`, as one RDMA WRITE sends them.
#[must_use]
pub fn encode(value: u64) -> [u8; PUBLISHED_BYTES] {
    let mut out = [0u8; PUBLISHED_BYTES];
    out[..8].copy_from_slice(&value.to_le_bytes());
    out[8..].copy_from_slice(&check_word(value).to_le_bytes());
    out
}

/// The value of a pair read as two words, if they agree.
#[must_use]
pub fn decode(value: u64, check: u64) -> Option<u64> {
    (check_word(value) == check).then_some(value)
}

/// The value published in `value` and `check` (the two words of a pair, which the peer's NIC
/// may be writing), or `None` when they do not agree: a torn read, or nothing published yet.
/// Both loads acquire, so memory the peer wrote before the pair (the frames below a tail) is
/// visible once the value is accepted.
#[must_use]
pub fn load(value: &AtomicU64, check: &AtomicU64) -> Option<u64> {
    let v = value.load(Ordering::Acquire);
    let c = check.load(Ordering::Acquire);
    decode(v, c)
}

/// Stores a valid pair locally (before the peer may write it: at set-up).
pub fn store(value: &AtomicU64, check: &AtomicU64, v: u64) {
    value.store(v, Ordering::Release);
    check.store(check_word(v), Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The 16 bytes a reader sees when byte `i` comes from `new` where bit `i` of `mask` is
    /// set and from `old` elsewhere.
    fn mix(old: [u8; 16], new: [u8; 16], mask: u16) -> (u64, u64) {
        let mut b = old;
        for (i, byte) in b.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *byte = new[i];
            }
        }
        let (v, c) = b.split_at(8);
        (
            u64::from_le_bytes(v.try_into().unwrap()),
            u64::from_le_bytes(c.try_into().unwrap()),
        )
    }

    /// Accepts `value` from the pair `(v, c)` only when it is `old` or `new`.
    fn only_old_or_new(old: u64, new: u64, mask: u16) -> Result<(), String> {
        let (v, c) = mix(encode(old), encode(new), mask);
        match decode(v, c) {
            None => Ok(()),
            Some(x) if x == old || x == new => Ok(()),
            Some(x) => Err(format!(
                "torn read of {old:#x} -> {new:#x} (mask {mask:#06x}) accepted as {x:#x}"
            )),
        }
    }

    #[test]
    fn a_published_pair_reads_back_and_zeroed_memory_reads_as_nothing() {
        for v in [0, 1, 8, 4096, u64::MAX, 0x0007_6540] {
            let b = encode(v);
            let (value, check) = mix(b, b, 0);
            assert_eq!(decode(value, check), Some(v));
            let (w, c) = (AtomicU64::new(0), AtomicU64::new(0));
            assert_eq!(load(&w, &c), None, "zeroed memory accepted");
            store(&w, &c, v);
            assert_eq!(load(&w, &c), Some(v));
        }
    }

    /// Every one of the 65,536 byte-wise mixes of two consecutive ring positions (8-byte
    /// frame steps across the byte boundaries where a tear changes the value most), including
    /// the in-order prefixes a byte-at-a-time copy leaves, is refused or reads as one of them.
    #[test]
    fn no_byte_wise_mix_of_two_positions_is_accepted_as_a_third() {
        let steps = [
            (0x0007_5fc0, 0x0007_6040),
            (0x0000_00f8, 0x0000_0100),
            (0x00ff_fff8, 0x0100_0000),
            (0, 0x5c0),
            (0x1_0000_0000 - 8, 0x1_0000_0000 + 1472),
        ];
        for (old, new) in steps {
            for mask in 0..=u16::MAX {
                only_old_or_new(old, new, mask).unwrap();
                only_old_or_new(new, old, mask).unwrap();
            }
        }
    }

    proptest! {
        #[test]
        fn a_torn_pair_of_any_two_values_is_never_accepted_as_a_third(
            old in any::<u64>(),
            new in any::<u64>(),
            mask in any::<u16>(),
        ) {
            only_old_or_new(old, new, mask).map_err(TestCaseError::fail)?;
        }
    }
}
