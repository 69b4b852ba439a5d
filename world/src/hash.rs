//! A stable hash for deterministic, request-dependent choices. Stable across
//! processes and builds (unlike `std`'s `DefaultHasher`), so every topology
//! makes the same choice for the same request.

/// Hashes a seed and a sequence of words into one.
pub fn mix(seed: u64, words: &[u64]) -> u64 {
    let mut buf = Vec::with_capacity(8 * (words.len() + 1));
    buf.extend_from_slice(&seed.to_le_bytes());
    for w in words {
        buf.extend_from_slice(&w.to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&buf)
}

/// A hash mapped to `[0, 1)`.
pub fn unit(seed: u64, words: &[u64]) -> f64 {
    (mix(seed, words) >> 11) as f64 / (1u64 << 53) as f64
}

/// The numeric key of a user id: the number itself when the id is decimal,
/// otherwise a hash (which lands outside the world's users: a cold start).
pub fn user_key(user_id: &str) -> u64 {
    user_id
        .parse()
        .unwrap_or_else(|_| xxhash_rust::xxh3::xxh3_64(user_id.as_bytes()) | (1 << 63))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_spread() {
        assert_eq!(mix(1, &[2, 3]), mix(1, &[2, 3]));
        assert_ne!(mix(1, &[2, 3]), mix(1, &[3, 2]));
        let u = unit(7, &[1]);
        assert!((0.0..1.0).contains(&u));
    }
}
