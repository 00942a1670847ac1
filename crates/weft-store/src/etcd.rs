//! The etcd backend: the [`Store`] contract on an etcd v3 cluster (etcd 3.4 or later), through
//! the `etcd-client` crate (gRPC).
//!
//! Everything maps onto etcd's own model rather than being rebuilt on top of it:
//!
//! - **Revisions** are etcd's. A transaction's revision is the header revision of its etcd
//!   `Txn`; `create_revision`, `mod_revision` and `version` are etcd's `KeyValue` fields. The
//!   revision is global to the etcd cluster, so writes by anyone else sharing it (another weft
//!   under another prefix) advance it too: revisions are strictly increasing, not consecutive.
//! - **`txn`** is one etcd `Txn`. Each op's precondition is one comparison on its key (`Absent`:
//!   create_revision = 0, `Exists`: create_revision > 0, `ModRevision(r)`: mod_revision = r);
//!   the success branch holds the writes (asking for the previous key-values, from which the
//!   results are built), and the failure branch reads the conditioned keys so that the first
//!   failing precondition can be reported with the revision found. A transaction that only
//!   deletes absent keys changes nothing, and etcd does not bump the revision for it. etcd
//!   refuses a key twice in one `Txn`, and so does the contract (`DuplicateKey`).
//! - **`watch(prefix, after)`** is an etcd watch on the prefix range from `start_revision =
//!   after` with `prev_kv` (delete events carry the key's last value); events at `after` itself
//!   are dropped. Starting at `after` rather than `after + 1` makes etcd's own compaction check
//!   (start < compaction point) exactly the contract's (`after` < compaction point). A watch
//!   whose connection breaks resumes from the last revision it delivered (see module `watch`).
//! - **`compact`** is etcd's compaction. etcd does not report its compaction point, so
//!   `compacted_revision` finds it: reading at revision r fails with "required revision has
//!   been compacted" exactly when r is below it (one probe when it has not moved since last
//!   time, a binary search when it has).
//! - **Keys** live under an optional prefix (`Options::prefix`), prepended as is, so several
//!   weft clusters or tests can share one etcd.
//!
//! The client needs the `etcd` cargo feature (`etcd-client` compiles etcd's protobuf files,
//! which needs `protoc` at build time); [`LocalEtcd`], which runs a throwaway etcd for tests
//! and benchmarks, is always there.

#[cfg(feature = "etcd")]
mod client;
mod local;

#[cfg(feature = "etcd")]
pub use client::{Etcd, Leadership, Options};
pub use local::{LocalEtcd, LocalEtcdCluster, LocalEtcdError};
