//! A fast per-thread random generator for request and trace ids (wyrand; not for secrets).

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // RandomState's keys come from the OS once per thread and are then varied per instance.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

/// The next 64 random bits.
pub(crate) fn next_u64() -> u64 {
    STATE.with(|s| {
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A random value that is not zero (trace and span ids must not be all zeros).
pub(crate) fn nonzero_u64() -> u64 {
    loop {
        let v = next_u64();
        if v != 0 {
            return v;
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `v` as 16 lowercase hex digits.
pub(crate) fn hex_u64(v: u64, out: &mut [u8]) {
    for (i, b) in out[..16].iter_mut().enumerate() {
        *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// A random UUID (version 4) in its 36-character text form.
pub(crate) fn uuid_v4() -> [u8; 36] {
    let hi = (next_u64() & !0xf000) | 0x4000; // version 4
    let lo = (next_u64() & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    let mut hex = [0u8; 32];
    hex_u64(hi, &mut hex[..16]);
    hex_u64(lo, &mut hex[16..]);
    let mut out = [b'-'; 36];
    out[..8].copy_from_slice(&hex[..8]);
    out[9..13].copy_from_slice(&hex[8..12]);
    out[14..18].copy_from_slice(&hex[12..16]);
    out[19..23].copy_from_slice(&hex[16..20]);
    out[24..].copy_from_slice(&hex[20..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        let u = uuid_v4();
        let s = std::str::from_utf8(&u).unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
        assert_ne!(uuid_v4(), u);
    }

    #[test]
    fn hex() {
        let mut b = [0u8; 16];
        hex_u64(0x0123_4567_89ab_cdef, &mut b);
        assert_eq!(&b, b"0123456789abcdef");
    }
}
