//! The hash behind ring-hash balancing: FNV-1a over the bytes, then murmur3's 64-bit finalizer.
//!
//! Why not `DefaultHasher`: SipHash output may change between Rust releases, and ring positions
//! must agree between sidecars built at different times so a key lands on the same endpoint from
//! every caller. FNV-1a alone mixes short, similar inputs ("10.0.0.1:80" vs "10.0.0.2:80")
//! poorly in the high bits; the finalizer gives full avalanche, so ring points spread evenly.

use std::hash::Hasher;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// murmur3 fmix64: a bijection with full avalanche.
#[inline]
pub(crate) fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The ring-hash key hash of a request's header value (stable across builds and processes).
#[inline]
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = StableHasher::default();
    h.write(bytes);
    h.finish()
}

/// `Hasher` over FNV-1a so endpoint ids of any `Hash` type get a stable ring position.
#[derive(Debug, Clone)]
pub(crate) struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        Self(FNV_OFFSET)
    }
}

impl Hasher for StableHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        fmix64(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        // FNV-1a's published test vector, then pinned outputs: a change here would reshuffle
        // every ring and must be deliberate.
        let mut h = StableHasher::default();
        h.write(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash_bytes(b"a"), fmix64(0xaf63_dc4c_8601_ec8c));
        assert_eq!(hash_bytes(b"user-1"), 0x41a2_fca5_c684_01c5);
    }

    #[test]
    fn similar_inputs_differ_in_high_bits() {
        let a = hash_bytes(b"10.0.0.1:80");
        let b = hash_bytes(b"10.0.0.2:80");
        assert!((a ^ b).count_ones() > 16, "{a:x} {b:x}");
        assert!((a >> 48) != (b >> 48));
    }
}
