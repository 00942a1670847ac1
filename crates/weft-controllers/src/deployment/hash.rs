//! Template hashes and instance names.
//!
//! The hash names a template version: instances carry the hash they were made from, so the
//! rollout can tell old from new. It must be stable across processes and releases, so it is a
//! SHA-256 of the template's canonical JSON (keys sorted, no whitespace), not Rust's `Hash`.

use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use weft_api::kinds::template::Template;

/// Letters and digits without vowels (and without 0, 1, 3 that read as letters), as
/// Kubernetes uses for generated names: no accidental words, never all digits.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Length of a template hash; names use its first [`NAME_HASH`] characters.
pub const HASH_LEN: usize = 10;
pub const NAME_HASH: usize = 5;
pub const NAME_RANDOM: usize = 5;
/// The longest a name may be (a DNS label).
const MAX_NAME: usize = 63;

/// A template's stable hash: 10 characters of [`ALPHABET`].
pub fn template_hash(template: &Template) -> String {
    let value = serde_json::to_value(template).unwrap_or(Value::Null);
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    let mut n = u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
    let base = ALPHABET.len() as u64;
    (0..HASH_LEN)
        .map(|_| {
            let c = ALPHABET[(n % base) as usize] as char;
            n /= base;
            c
        })
        .collect()
}

/// JSON with object keys sorted at every level, so the text depends only on the value.
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `<deployment>-<hash5>-<rand5>`, the deployment part shortened if the whole would not fit
/// in a DNS label.
pub fn instance_name(deployment: &str, hash: &str, rng: &mut dyn RngCore) -> String {
    let random: String = (0..NAME_RANDOM)
        .map(|_| ALPHABET[(rng.next_u32() as usize) % ALPHABET.len()] as char)
        .collect();
    let short_hash: String = hash.chars().take(NAME_HASH).collect();
    let room = MAX_NAME - NAME_HASH - NAME_RANDOM - 2;
    let prefix =
        if deployment.len() > room { deployment[..room].trim_end_matches('-') } else { deployment };
    format!("{prefix}-{short_hash}-{random}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn template(yaml: &str) -> Template {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn hash_is_stable_and_tracks_content() {
        let a = template("command: [app]\nenv: {A: '1', B: '2'}\n");
        let b = template("env: {B: '2', A: '1'}\ncommand: [app]\n");
        let c = template("command: [app]\nenv: {A: '1', B: '3'}\n");
        assert_eq!(template_hash(&a), template_hash(&b), "key order does not matter");
        assert_ne!(template_hash(&a), template_hash(&c));
        let h = template_hash(&a);
        assert_eq!(h.len(), HASH_LEN);
        assert!(h.bytes().all(|b| ALPHABET.contains(&b)));
        // Pinned: the hash is part of every instance's identity, so it must never drift
        // between releases without a deliberate change here.
        assert_eq!(template_hash(&template("command: [app]\n")), PINNED);
    }

    const PINNED: &str = "cpx7t8r6mz";

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v: Value = serde_json::from_str(r#"{"b":[{"z":1,"a":2}],"a":"x\"y"}"#).unwrap();
        let mut out = String::new();
        write_canonical(&v, &mut out);
        assert_eq!(out, r#"{"a":"x\"y","b":[{"a":2,"z":1}]}"#);
    }

    #[test]
    fn names_are_dns_labels() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let n = instance_name("web", "bcdfghjklm", &mut rng);
        assert!(n.starts_with("web-bcdfg-"), "{n}");
        assert_eq!(n.len(), "web-bcdfg-".len() + NAME_RANDOM);
        let long = format!("{}-x", "a".repeat(60));
        let n = instance_name(&long, "bcdfghjklm", &mut rng);
        assert!(n.len() <= 63, "{n}");
        assert!(weft_api::validate::dns_label(&n).is_ok(), "{n}");
        let dashy = format!("{}-{}", "a".repeat(50), "b".repeat(10));
        let n = instance_name(&dashy, "bcdfghjklm", &mut rng);
        assert!(weft_api::validate::dns_label(&n).is_ok(), "{n}");
    }
}
