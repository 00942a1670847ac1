//! On-disk layout of the embedded store.
//!
//! Tables:
//! - `kv`: key → current record (bookkeeping + value). Holds only live keys.
//! - `log.<segment>`: (revision, index within the transaction) → event, one table per
//!   [`SEGMENT`] revisions. Watches replay it, so it is keyed by revision first: resuming from
//!   any revision is a range scan. Segments exist so that compaction can drop whole tables:
//!   every write's history entry is eventually deleted, and deleting entries one by one cost
//!   as much as writing them.
//! - `meta`: the current revision, the compaction point and the format version. They are
//!   written in the same redb transaction as the data, so they can never disagree with it.
//!
//! Records carry a leading format byte so the layout can evolve without a migration of every
//! key; the log record puts the key before the value so a watcher can reject an event of a
//! foreign prefix without copying its value.

use bytes::Bytes;
use redb::TableDefinition;

use crate::{Event, EventKind, KeyValue, Revision, StoreError};

pub(super) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Revisions per history segment table.
pub(super) const SEGMENT: u64 = 4096;

/// The segment holding a revision's history.
pub(super) fn segment_of(revision: Revision) -> u64 {
    revision / SEGMENT
}

pub(super) fn log_table_name(segment: u64) -> String {
    format!("log.{segment:016x}")
}

/// The segment number of a table name, if it is a history segment.
pub(super) fn parse_log_table_name(name: &str) -> Option<u64> {
    u64::from_str_radix(name.strip_prefix("log.")?, 16).ok()
}

/// The table of one history segment.
pub(super) fn log_table(name: &str) -> TableDefinition<'_, (u64, u32), &'static [u8]> {
    TableDefinition::new(name)
}
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub(super) const META_REVISION: &str = "revision";
pub(super) const META_COMPACTED: &str = "compacted";
pub(super) const META_FORMAT: &str = "format";
/// Version of the whole file layout, checked at open.
pub(super) const FORMAT_VERSION: u64 = 2;

const RECORD_V1: u8 = 1;
const KIND_PUT: u8 = 0;
const KIND_DELETE: u8 = 1;
/// format byte + create_revision + mod_revision + version
const KV_HEADER: usize = 1 + 8 + 8 + 8;
/// format byte + kind + key length
const LOG_HEADER: usize = 1 + 1 + 4;
/// create_revision + version
const LOG_BOOKKEEPING: usize = 8 + 8;

/// Encodes a `kv` table record.
pub(super) fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(KV_HEADER + kv.value.len());
    out.push(RECORD_V1);
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

/// Decodes a `kv` table record stored under `key`.
pub(super) fn decode_kv(key: &str, raw: &[u8]) -> Result<KeyValue, StoreError> {
    if raw.len() < KV_HEADER || raw[0] != RECORD_V1 {
        return Err(corrupt("kv", key, raw));
    }
    Ok(KeyValue {
        key: key.to_string(),
        create_revision: read_u64(raw, 1),
        mod_revision: read_u64(raw, 9),
        version: read_u64(raw, 17),
        value: Bytes::copy_from_slice(&raw[KV_HEADER..]),
    })
}

/// Encodes a `log` table record. The event's revision is the log key, so it is not repeated.
pub(super) fn encode_event(event: &Event) -> Result<Vec<u8>, StoreError> {
    let kv = &event.kv;
    let key_len = u32::try_from(kv.key.len())
        .map_err(|_| StoreError::Backend(format!("key too long ({} bytes)", kv.key.len())))?;
    let mut out = Vec::with_capacity(LOG_HEADER + kv.key.len() + LOG_BOOKKEEPING + kv.value.len());
    out.push(RECORD_V1);
    out.push(match event.kind {
        EventKind::Put => KIND_PUT,
        EventKind::Delete => KIND_DELETE,
    });
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(kv.key.as_bytes());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.version.to_le_bytes());
    out.extend_from_slice(&kv.value);
    Ok(out)
}

/// Decodes a `log` record written at `revision`, or `None` if its key lacks `prefix` (checked
/// before the value is copied).
pub(super) fn decode_event(
    revision: Revision,
    raw: &[u8],
    prefix: &str,
) -> Result<Option<Event>, StoreError> {
    let what = || corrupt("log", &format!("revision {revision}"), raw);
    if raw.len() < LOG_HEADER || raw[0] != RECORD_V1 {
        return Err(what());
    }
    let kind = match raw[1] {
        KIND_PUT => EventKind::Put,
        KIND_DELETE => EventKind::Delete,
        _ => return Err(what()),
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(&raw[2..6]);
    let key_end = usize::try_from(u32::from_le_bytes(len))
        .ok()
        .and_then(|n| n.checked_add(LOG_HEADER))
        .ok_or_else(what)?;
    let body = key_end.checked_add(LOG_BOOKKEEPING).ok_or_else(what)?;
    if raw.len() < body {
        return Err(what());
    }
    let key = std::str::from_utf8(&raw[LOG_HEADER..key_end]).map_err(|_| what())?;
    if !key.starts_with(prefix) {
        return Ok(None);
    }
    Ok(Some(Event {
        kind,
        kv: KeyValue {
            key: key.to_string(),
            create_revision: read_u64(raw, key_end),
            mod_revision: revision,
            version: read_u64(raw, key_end + 8),
            value: Bytes::copy_from_slice(&raw[body..]),
        },
    }))
}

fn read_u64(raw: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[at..at + 8]);
    u64::from_le_bytes(b)
}

fn corrupt(table: &str, what: &str, raw: &[u8]) -> StoreError {
    StoreError::Backend(format!(
        "corrupt record in table {table:?} for {what:?} ({} bytes, format byte {:?})",
        raw.len(),
        raw.first()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &'static [u8], c: u64, m: u64, v: u64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from_static(value),
            create_revision: c,
            mod_revision: m,
            version: v,
        }
    }

    #[test]
    fn kv_round_trip() {
        for value in [&b""[..], b"x", b"{\"a\":1}"] {
            let want = kv("/registry/a", value, 3, u64::MAX, 7);
            let raw = encode_kv(&want);
            assert_eq!(raw.len(), KV_HEADER + value.len());
            assert_eq!(decode_kv("/registry/a", &raw).unwrap(), want);
        }
    }

    #[test]
    fn kv_rejects_truncated_and_unknown_format() {
        let raw = encode_kv(&kv("k", b"v", 1, 2, 3));
        assert!(matches!(decode_kv("k", &raw[..KV_HEADER - 1]), Err(StoreError::Backend(_))));
        let mut bad = raw.clone();
        bad[0] = 9;
        let err = decode_kv("k", &bad).unwrap_err().to_string();
        assert!(err.contains("corrupt record in table \"kv\""), "{err}");
        assert!(decode_kv("k", &[]).is_err());
    }

    #[test]
    fn event_round_trip_uses_log_revision() {
        for kind in [EventKind::Put, EventKind::Delete] {
            let ev = Event { kind, kv: kv("/p/é", b"value", 4, 10, 2) };
            let raw = encode_event(&ev).unwrap();
            // The revision comes from the log key, not from the record.
            assert_eq!(decode_event(10, &raw, "").unwrap(), Some(ev.clone()));
            assert_eq!(decode_event(10, &raw, "/p/").unwrap(), Some(ev.clone()));
            assert_eq!(decode_event(10, &raw, "/p/é").unwrap(), Some(ev));
        }
    }

    #[test]
    fn event_prefix_filter() {
        let raw =
            encode_event(&Event { kind: EventKind::Put, kv: kv("/a/b", b"v", 1, 1, 1) }).unwrap();
        assert_eq!(decode_event(1, &raw, "/b").unwrap(), None);
        assert_eq!(decode_event(1, &raw, "/a/bc").unwrap(), None);
        assert!(decode_event(1, &raw, "/a/").unwrap().is_some());
    }

    #[test]
    fn event_rejects_corruption() {
        let raw =
            encode_event(&Event { kind: EventKind::Delete, kv: kv("key", b"", 1, 2, 1) }).unwrap();
        // Truncated anywhere before the value ends in an error, never a panic.
        for cut in 0..raw.len() {
            assert!(decode_event(2, &raw[..cut], "").is_err(), "cut at {cut}");
        }
        let mut bad_kind = raw.clone();
        bad_kind[1] = 7;
        assert!(decode_event(2, &bad_kind, "").is_err());
        let mut bad_len = raw.clone();
        bad_len[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_event(2, &bad_len, "").is_err());
        let mut bad_utf8 = raw;
        bad_utf8[LOG_HEADER] = 0xff;
        assert!(decode_event(2, &bad_utf8, "").is_err());
    }
}
