//! Optional TLS on the api listener (issue 6, api hardening).
//!
//! The server's certificate comes either from the operator (`--tls-cert`, `--tls-key`: PEM
//! files) or, with `--tls auto`, from the control plane's own CA ([`weft_ca::Ca`]): a server
//! certificate for the listen address, issued at every start. Either way the certificates a
//! client must trust are written to `<data-dir>/api-ca.crt`, where the CLI on the same machine
//! finds them.
//!
//! A plaintext HTTP request reaching the TLS listener is answered, in plaintext, with one 400
//! that says to use https (and carries `weft-tls-required: true`, so weft's client can turn it
//! into a clear error) instead of a dropped connection.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The file clients read the certificates to trust from, in the data dir.
pub const API_CA_FILE: &str = "api-ca.crt";
/// The header on the plaintext answer of a TLS listener.
pub const TLS_REQUIRED_HEADER: &str = "weft-tls-required";
/// How long a client has for its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong setting TLS up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// A server certificate chain and key, PEM.
#[derive(Clone)]
pub struct Identity {
    pub chain_pem: String,
    pub key_pem: String,
    /// What clients must trust (the CA, or the operator's chain).
    pub trust_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

/// The operator's certificate and key files. The chain's certificates are what clients trust.
pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Identity, TlsError> {
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map_err(|e| TlsError(format!("cannot read the TLS {what} {}: {e}", p.display())))
    };
    let chain_pem = read("certificate", cert)?;
    let key_pem = read("key", key)?;
    if weft_ca::pem_certs(&chain_pem).is_empty() {
        return Err(TlsError(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            cert.display()
        )));
    }
    if weft_ca::pem_key_der(&key_pem).is_none() {
        return Err(TlsError(format!(
            "{} holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
            key.display()
        )));
    }
    Ok(Identity { trust_pem: chain_pem.clone(), chain_pem, key_pem })
}

/// The names a certificate for `listen` must carry: its address, or for an unspecified one
/// (0.0.0.0) loopback, `localhost` and this machine's name.
pub fn names_for(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    if listen.ip().is_unspecified() {
        names.extend(["127.0.0.1".to_string(), "::1".to_string(), "localhost".to_string()]);
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim();
            if !h.is_empty() {
                names.push(h.to_string());
            }
        }
    } else {
        names.push(listen.ip().to_string());
        if listen.ip().is_loopback() {
            names.push("localhost".into());
        }
    }
    for e in extra {
        if !names.contains(e) {
            names.push(e.clone());
        }
    }
    names
}

/// A server certificate for `names` from the control plane's CA (`--tls auto`).
pub fn from_ca(ca: &weft_ca::Ca, names: &[String], now: SystemTime) -> Result<Identity, TlsError> {
    let (chain_pem, key_pem) = ca
        .issue_server(names, Duration::from_secs(365 * 24 * 3600), now)
        .map_err(|e| TlsError(format!("issuing the api server's certificate: {e}")))?;
    Ok(Identity { chain_pem, key_pem, trust_pem: ca.cert_pem().to_string() })
}

/// A rustls server configuration for `id` (HTTP/1.1 only, as the api serves).
pub fn server_config(id: &Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> =
        weft_ca::pem_certs(&id.chain_pem).into_iter().map(CertificateDer::from).collect();
    let key = weft_ca::pem_key_der(&id.key_pem)
        .ok_or_else(|| TlsError("the TLS key is not a PEM private key".into()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(format!("the TLS certificate and key do not go together: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whether the connection's first byte starts a TLS handshake record. Waits for it.
pub async fn starts_with_tls(stream: &TcpStream) -> std::io::Result<bool> {
    let mut first = [0u8; 1];
    let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no handshake"))??;
    Ok(n == 1 && first[0] == 0x16)
}

/// Answers a plaintext request on the TLS listener and closes.
pub async fn refuse_plaintext(mut stream: TcpStream, local: Option<SocketAddr>) {
    let url = local.map_or_else(
        || "https://<address>".to_string(),
        |a| {
            let host: IpAddr = if a.ip().is_unspecified() { [127, 0, 0, 1].into() } else { a.ip() };
            match host {
                IpAddr::V6(h) => format!("https://[{h}]:{}", a.port()),
                IpAddr::V4(h) => format!("https://{h}:{}", a.port()),
            }
        },
    );
    let body = serde_json::json!({
        "code": "BadRequest",
        "message": format!("this api server speaks TLS only: use {url} (and trust the certificates in <data-dir>/{API_CA_FILE}: --ca-file or WEFT_CA_FILE)"),
    })
    .to_string();
    let resp = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n{TLS_REQUIRED_HEADER}: true\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        // Read the request first: closing with unread bytes would reset the connection before
        // the client sees the answer.
        let mut buf = [0u8; 8192];
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
