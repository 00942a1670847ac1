//! One CA root per cluster. Servers that share a store (replicas on one etcd) must sign with
//! the same root, or a sidecar certified by one server would refuse a peer certified by another.
//! The root therefore lives in the store too, at [`CA_ROOT_KEY`] (outside `/registry/`, so no
//! list, watch or dashboard route ever carries it), and the data dir's `ca.key`/`ca.crt` are a
//! local copy.
//!
//! On start: if the store has a root, it is used (and written to the data dir when that has
//! none); a data dir holding a *different* root is refused, since silently replacing an
//! operator's root would be worse. If the store has none, the data dir's root (or a new one) is
//! published with create-only semantics; a server that loses that race takes the winner's.
//!
//! The key in the store is as safe as the store: protect etcd as you would the CA key file
//! (client certificates, no public listener), as with Kubernetes secrets.

use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use weft_ca::{CA_CERT_FILE, CA_KEY_FILE, Ca, CaError};
use weft_store::{Precondition, Store, StoreError};

/// Where the cluster's root lives in the store.
pub const CA_ROOT_KEY: &str = "/weft/ca/root";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRoot {
    key_pem: String,
    cert_pem: String,
}

/// The cluster's root, agreed through `store`, with `data_dir` holding a copy. Returns the CA
/// and whether this call created it.
pub async fn cluster_root(
    store: &dyn Store,
    data_dir: &Path,
    trust_domain: &str,
    now: SystemTime,
) -> Result<(Ca, bool), CaError> {
    let store_err = |e: StoreError| CaError::Io(format!("cannot read or write the CA root: {e}"));
    if let Some(kv) = store.get(CA_ROOT_KEY).await.map_err(store_err)? {
        return adopt(&kv.value, data_dir, false);
    }
    let (ca, created) = Ca::load_or_create(data_dir, trust_domain, now)?;
    let stored = StoredRoot { key_pem: ca.key_pem(), cert_pem: ca.cert_pem().to_string() };
    let value = serde_json::to_vec(&stored).expect("two strings serialise");
    match store.put(CA_ROOT_KEY, value.into(), Precondition::Absent).await {
        Ok(_) => Ok((ca, created)),
        // Another server published first: use its root. Ours was made a moment ago unless the
        // data dir already had one, and then the two differ and the operator must choose.
        Err(StoreError::PreconditionFailed { .. }) => {
            let kv = store.get(CA_ROOT_KEY).await.map_err(store_err)?.ok_or_else(|| {
                CaError::Io("the cluster's CA root vanished while starting; start again".into())
            })?;
            adopt(&kv.value, data_dir, created)
        }
        Err(e) => Err(store_err(e)),
    }
}

/// Uses the stored root, making the data dir's copy match; `replace_local` when the data dir's
/// root is our own fresh one and may be overwritten.
fn adopt(raw: &[u8], data_dir: &Path, replace_local: bool) -> Result<(Ca, bool), CaError> {
    let stored: StoredRoot = serde_json::from_slice(raw).map_err(|e| {
        CaError::Io(format!(
            "the cluster's CA root in the store ({CA_ROOT_KEY}) is unreadable: {e}"
        ))
    })?;
    let ca = Ca::from_pem(&stored.key_pem, &stored.cert_pem)?;
    let (kp, cp) = (data_dir.join(CA_KEY_FILE), data_dir.join(CA_CERT_FILE));
    let local = match (kp.exists(), cp.exists()) {
        (false, false) => None,
        _ => Some(std::fs::read_to_string(&cp).unwrap_or_default()),
    };
    match local {
        Some(cert) if cert == stored.cert_pem => {}
        Some(_) if !replace_local => {
            return Err(CaError::Io(format!(
                "{} holds a CA root other than the cluster's (kept in the store): remove {} and \
                 {} to use the cluster's root, or give every server the same files",
                data_dir.display(),
                kp.display(),
                cp.display()
            )));
        }
        _ => {
            let io = |p: &Path, e: std::io::Error| {
                CaError::Io(format!("cannot write {}: {e}", p.display()))
            };
            crate::auth::write_private(&kp, &stored.key_pem).map_err(|e| io(&kp, e))?;
            std::fs::write(&cp, &stored.cert_pem).map_err(|e| io(&cp, e))?;
        }
    }
    Ok((ca, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use weft_store::embedded::Embedded;

    fn store(dir: &Path) -> Embedded {
        Embedded::open(dir.join("s.redb")).unwrap()
    }

    /// One store and two servers' data dirs.
    fn two_servers() -> (tempfile::TempDir, Embedded, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a_dir).unwrap();
        std::fs::create_dir_all(&b_dir).unwrap();
        (tmp, s, a_dir, b_dir)
    }

    #[tokio::test]
    async fn servers_sharing_a_store_share_one_root() {
        let (_tmp, s, a_dir, b_dir) = two_servers();
        let now = SystemTime::now();
        let (a, created) = cluster_root(&s, &a_dir, "weft.local", now).await.unwrap();
        assert!(created);
        let (b, created) = cluster_root(&s, &b_dir, "weft.local", now).await.unwrap();
        assert!(!created, "b adopts a's root");
        assert_eq!(a.cert_pem(), b.cert_pem());
        assert_eq!(std::fs::read_to_string(b_dir.join(CA_CERT_FILE)).unwrap(), a.cert_pem());
        // A restart finds the same root in both places.
        let (again, _) = cluster_root(&s, &a_dir, "weft.local", now).await.unwrap();
        assert_eq!(again.cert_pem(), a.cert_pem());
    }

    #[tokio::test]
    async fn a_data_dir_with_another_root_is_refused_not_overwritten() {
        let (_tmp, s, a_dir, b_dir) = two_servers();
        let now = SystemTime::now();
        cluster_root(&s, &a_dir, "weft.local", now).await.unwrap();
        let (theirs, _) = Ca::load_or_create(&b_dir, "weft.local", now).unwrap();
        let err = cluster_root(&s, &b_dir, "weft.local", now).await.unwrap_err().to_string();
        assert!(err.contains("other than the cluster's") && err.contains("remove"), "{err}");
        let kept = std::fs::read_to_string(b_dir.join(CA_CERT_FILE)).unwrap();
        assert_eq!(kept, theirs.cert_pem(), "the operator's root is left alone");
    }

    #[tokio::test]
    async fn an_existing_data_dir_root_is_published() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let now = SystemTime::now();
        let (mine, _) = Ca::load_or_create(tmp.path(), "weft.local", now).unwrap();
        let (ca, created) = cluster_root(&s, tmp.path(), "weft.local", now).await.unwrap();
        assert!(!created);
        assert_eq!(ca.cert_pem(), mine.cert_pem());
        assert!(s.get(CA_ROOT_KEY).await.unwrap().is_some());
    }
}
