//! mTLS between sidecars (issue 6).
//!
//! Every sidecar and gateway has a workload identity, `spiffe://<trust-domain>/ns/<ns>/svc/<svc>`
//! (`weft_ca`), in a certificate signed by the control plane's CA: a dynamic sidecar makes a
//! key, sends a CSR (`POST /api/v1/certificates`, [`obtain`]) before it serves, and renews at
//! 70% of the certificate's life ([`renew_forever`]); a fixed identity can come from files
//! (`--mtls-cert/--mtls-key/--mtls-ca`). The key never leaves the process.
//!
//! - Inbound listeners ([`Mesh::accept`]) peek at the first byte: a TLS handshake (0x16) must
//!   present a client certificate chaining to the CA (expired or foreign ones are refused);
//!   anything else is plaintext, refused under `strict` and served under `permissive`. Each
//!   outcome is counted in `weft_mtls_connections_total{side="inbound",result}`.
//! - Connections to other sidecars' inbound ports ([`Mesh::connect`], from the pool and the TCP
//!   relay) originate mTLS and check that the server's SPIFFE ID is the Service being called
//!   (its namespace and name; the server name carries them as `<svc>.<ns>.svc`).
//! - Rotation swaps the certificate and key behind both configs' resolvers (`arc-swap`): new
//!   handshakes use the new one, established connections are untouched.
//!
//! With `--mtls off` no TLS code runs on any path: connections stay `Conn::Tcp`.

pub(crate) mod conn;

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_ca::SpiffeId;

pub(crate) use conn::Conn;

use crate::metrics::Metrics;

/// `--mtls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    Off,
    Permissive,
    Strict,
}

/// A certificate chain and key, as PEM.
#[derive(Clone)]
pub(crate) struct Material {
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
}

/// The mesh identity in force and the TLS configs built around it.
pub(crate) struct Mesh {
    /// Strict or permissive, switched live by the namespace's MeshConfig (`set_mode`); never
    /// `Off` (then there is no Mesh at all).
    mode: std::sync::atomic::AtomicU8,
    pub(crate) trust_domain: String,
    pub(crate) identity: SpiffeId,
    current: Arc<ArcSwap<CertifiedKey>>,
    not_after: AtomicU64,
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl fmt::Debug for Mesh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mesh")
            .field("mode", &self.mode())
            .field("trust_domain", &self.trust_domain)
            .field("identity", &self.identity.to_string())
            .field("not_after", &self.not_after.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certified key from PEM text; also its validity end (unix seconds).
fn certified(m: &Material, provider: &CryptoProvider) -> Result<(CertifiedKey, u64), String> {
    let certs: Vec<CertificateDer<'static>> =
        weft_ca::pem_certs(&m.chain_pem).into_iter().map(CertificateDer::from).collect();
    let Some(leaf) = certs.first() else {
        return Err("the certificate file holds no CERTIFICATE block".into());
    };
    let not_after = weft_ca::not_after_of(leaf)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let key_der = weft_ca::pem_key_der(&m.key_pem).ok_or("the key file holds no PRIVATE KEY")?;
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::try_from(key_der).map_err(|e| e.to_string())?)
        .map_err(|e| format!("unusable private key: {e}"))?;
    Ok((CertifiedKey::new(certs, key), not_after))
}

#[derive(Debug)]
struct Resolver(Arc<ArcSwap<CertifiedKey>>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks a server's chain against the mesh CA and its SPIFFE ID against the Service called
/// (named by the server name `<svc>.<ns>.svc`).
#[derive(Debug)]
struct PeerVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
    trust_domain: String,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let want = match server_name {
            ServerName::DnsName(n) => expected_identity(n.as_ref(), &self.trust_domain),
            _ => None,
        };
        let got = weft_ca::identity_of(end_entity);
        match (want, got) {
            (Some(w), Some(g)) if w == g => Ok(ServerCertVerified::assertion()),
            (w, g) => Err(rustls::Error::General(format!(
                "the peer's identity is {}, expected {}",
                g.map_or_else(|| "missing".to_string(), |g| g.to_string()),
                w.map_or_else(|| "a mesh service".to_string(), |w| w.to_string()),
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The server name that carries the identity of Service `name` in `namespace`.
fn server_name_for(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.svc")
}

fn expected_identity(server_name: &str, trust_domain: &str) -> Option<SpiffeId> {
    let rest = server_name.strip_suffix(".svc")?;
    let (svc, ns) = rest.split_once('.')?;
    Some(SpiffeId::new(trust_domain, ns, svc))
}

impl Mesh {
    /// Builds the TLS configs around `material`, trusting `ca_pem`.
    pub(crate) fn new(
        mode: MtlsMode,
        trust_domain: &str,
        material: &Material,
        ca_pem: &str,
    ) -> Result<Mesh, String> {
        let provider = provider();
        let (key, not_after) = certified(material, &provider)?;
        let identity = key.cert.first().and_then(|c| weft_ca::identity_of(c)).ok_or(
            "the certificate has no SPIFFE ID (spiffe://<domain>/ns/<ns>/svc/<svc> URI SAN)",
        )?;
        let mut roots = RootCertStore::empty();
        for der in weft_ca::pem_certs(ca_pem) {
            roots.add(CertificateDer::from(der)).map_err(|e| format!("CA certificate: {e}"))?;
        }
        if roots.is_empty() {
            return Err("the CA file holds no CERTIFICATE block".into());
        }
        let roots = Arc::new(roots);
        let current = Arc::new(ArcSwap::from_pointee(key));
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| format!("client verifier: {e}"))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(Arc::new(Resolver(current.clone())));
        let verifier = PeerVerifier {
            roots,
            algs: provider.signature_verification_algorithms,
            trust_domain: trust_domain.to_string(),
        };
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(Resolver(current.clone())));
        Ok(Mesh {
            mode: std::sync::atomic::AtomicU8::new(mode as u8),
            trust_domain: trust_domain.to_string(),
            identity,
            current,
            not_after: AtomicU64::new(not_after),
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Replaces the certificate and key for new handshakes; the identity must stay the same.
    pub(crate) fn renew(&self, material: &Material) -> Result<(), String> {
        let (key, not_after) = certified(material, &provider())?;
        let id = key.cert.first().and_then(|c| weft_ca::identity_of(c));
        if id.as_ref() != Some(&self.identity) {
            return Err(format!(
                "the renewed certificate is for {}, not {}",
                id.map_or_else(|| "no identity".into(), |i| i.to_string()),
                self.identity
            ));
        }
        self.current.store(Arc::new(key));
        self.not_after.store(not_after, Ordering::Relaxed);
        Ok(())
    }

    /// When the certificate in force expires (unix seconds).
    pub(crate) fn not_after(&self) -> u64 {
        self.not_after.load(Ordering::Relaxed)
    }

    /// Whether inbound connections and calls to other sidecars use TLS at all.
    pub(crate) fn enabled(&self) -> bool {
        self.mode() != MtlsMode::Off
    }

    /// The mode in force for new inbound connections.
    pub(crate) fn mode(&self) -> MtlsMode {
        match self.mode.load(Ordering::Relaxed) {
            x if x == MtlsMode::Strict as u8 => MtlsMode::Strict,
            x if x == MtlsMode::Permissive as u8 => MtlsMode::Permissive,
            _ => MtlsMode::Off,
        }
    }

    /// Switches between strict and permissive for new connections (open ones are untouched);
    /// `Off` is refused: a mesh that has certificates keeps using them. Returns whether the
    /// mode changed.
    pub(crate) fn set_mode(&self, mode: MtlsMode) -> bool {
        if mode == MtlsMode::Off {
            return false;
        }
        self.mode.swap(mode as u8, Ordering::Relaxed) != mode as u8
    }

    /// Admits a connection accepted on an inbound port: mTLS, or plaintext when permitted.
    /// `None` means it was refused (and counted) or closed.
    pub(crate) async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
        metrics: &Metrics,
    ) -> Option<Conn> {
        let mut first = [0u8; 1];
        let n = match tokio::time::timeout(timeout, stream.peek(&mut first)).await {
            Ok(Ok(n)) => n,
            _ => return None,
        };
        if n == 0 {
            return None;
        }
        if first[0] != 0x16 {
            if self.mode() == MtlsMode::Strict {
                metrics.mtls("inbound", "refused_plaintext");
                return None;
            }
            metrics.mtls("inbound", "plaintext");
            return Some(Conn::Tcp(stream));
        }
        match tokio::time::timeout(timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                metrics.mtls("inbound", "mtls");
                // The verifier accepted a chain to our CA; the SPIFFE ID in its leaf is the
                // caller's identity for authorization.
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| weft_ca::identity_of(c));
                let mut conn = Conn::tls(tokio_rustls::TlsStream::Server(tls));
                conn.set_peer(peer);
                Some(conn)
            }
            _ => {
                metrics.mtls("inbound", "refused_handshake");
                None
            }
        }
    }

    /// Originates mTLS on a connection to an inbound port of Service `name` in `namespace`.
    pub(crate) async fn connect(
        &self,
        stream: TcpStream,
        namespace: &str,
        name: &str,
        metrics: &Metrics,
    ) -> io::Result<Conn> {
        let sn = ServerName::try_from(server_name_for(namespace, name))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        match self.connector.connect(sn, stream).await {
            Ok(tls) => {
                metrics.mtls("outbound", "mtls");
                Ok(Conn::tls(tokio_rustls::TlsStream::Client(tls)))
            }
            Err(e) => {
                metrics.mtls("outbound", "refused_handshake");
                Err(e)
            }
        }
    }
}

/// `POST /api/v1/certificates`: a new key and a certificate for it. `instance` is
/// `(namespace, name)`; `None` asks for the gateway identity.
pub(crate) async fn obtain(
    client: &weft_client::Client,
    identity: &SpiffeId,
    instance: Option<(&str, &str)>,
) -> Result<(Material, String), String> {
    let csr = weft_ca::Csr::generate(identity).map_err(|e| e.to_string())?;
    let mut body = serde_json::json!({ "csr": csr.csr_pem });
    match instance {
        Some((ns, name)) => {
            body["instance"] = name.into();
            body["namespace"] = ns.into();
        }
        None => body["gateway"] = true.into(),
    }
    let bytes = bytes::Bytes::from(body.to_string());
    let (_, answer) = client
        .call(http::Method::POST, "/api/v1/certificates", Some((bytes, "application/json")))
        .await
        .map_err(|e| e.to_string())?;
    let v: serde_json::Value =
        serde_json::from_slice(&answer).map_err(|e| format!("decoding the answer: {e}"))?;
    let chain = v["certificateChain"].as_str().ok_or("the answer has no certificateChain")?;
    let ca = v["caCertificate"].as_str().ok_or("the answer has no caCertificate")?;
    Ok((Material { chain_pem: chain.to_string(), key_pem: csr.key_pem }, ca.to_string()))
}

/// When to renew a certificate valid until `not_after` that was obtained at `obtained`: at 70%
/// of its life (at least a second from now).
pub(crate) fn renew_at(obtained: SystemTime, not_after: u64) -> SystemTime {
    let end = SystemTime::UNIX_EPOCH + Duration::from_secs(not_after);
    let life = end.duration_since(obtained).unwrap_or_default();
    obtained + life.mul_f64(0.7)
}

/// How a dynamic sidecar or gateway gets its identity.
#[derive(Debug, Clone)]
pub(crate) struct Enrolment {
    pub(crate) server: String,
    pub(crate) token: String,
    /// `(namespace, instance)`, or `None` for a gateway.
    pub(crate) instance: Option<(String, String)>,
    pub(crate) identity: SpiffeId,
}

/// Renews the certificate at 70% of its life, forever; a failure is retried with backoff while
/// the current certificate stays in force.
pub(crate) async fn renew_forever(mesh: Arc<Mesh>, enrol: Enrolment, metrics: Arc<Metrics>) {
    let Ok(client) = weft_client::Client::new(&enrol.server, Some(enrol.token.clone())) else {
        return;
    };
    let mut obtained = SystemTime::now();
    loop {
        let at = renew_at(obtained, mesh.not_after());
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
        let mut delay = Duration::from_secs(1);
        loop {
            let inst = enrol.instance.as_ref().map(|(ns, n)| (ns.as_str(), n.as_str()));
            let res = obtain(&client, &enrol.identity, inst).await;
            match res.and_then(|(m, _)| mesh.renew(&m)) {
                Ok(()) => {
                    metrics.set_cert_expiry(mesh.not_after());
                    obtained = SystemTime::now();
                    break;
                }
                Err(e) => {
                    eprintln!(
                        "weft proxy: renewing the workload certificate of {}: {e}; retrying in {delay:?}",
                        enrol.identity
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_carry_the_identity() {
        let sn = server_name_for("shop", "catalog");
        assert_eq!(sn, "catalog.shop.svc");
        assert_eq!(
            expected_identity(&sn, "weft.local").unwrap().to_string(),
            "spiffe://weft.local/ns/shop/svc/catalog"
        );
        assert!(expected_identity("catalog", "weft.local").is_none());
    }

    #[test]
    fn renews_at_seventy_percent() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(renew_at(t0, 2000), SystemTime::UNIX_EPOCH + Duration::from_secs(1700));
    }
}
