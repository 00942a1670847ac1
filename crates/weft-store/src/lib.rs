//! weft's revisioned key-value store: the contract every other part relies on to keep state
//! and learn about change.
//!
//! Start with [`Store`]: one global revision that grows by one per committed write (etcd
//! semantics), compare-and-swap on a key's `mod_revision`, all-or-nothing transactions, and
//! watches that resume exactly from any revision still in the history. [`embedded::Embedded`]
//! implements it on a redb file with group commit; `etcd::Etcd` (cargo feature `etcd`) on an
//! etcd v3 cluster, for several servers sharing one state. Both pass the same [`conformance`] suite.
//!
//! Keys are UTF-8 strings laid out by the api server as `/registry/{plural}/{ns}/{name}`;
//! values are opaque bytes (JSON).

pub mod conformance;
pub mod embedded;
pub mod etcd;
mod types;

pub use types::*;
