//! weft's certificate authority and workload identities (issue 6: mTLS between sidecars).
//!
//! - A workload identity is the SPIFFE ID `spiffe://<trust-domain>/ns/<namespace>/svc/<service>`
//!   ([`SpiffeId`]), carried as the one URI SAN of a workload certificate.
//! - [`Ca`] is the control plane's root: created at first start in the data dir (`ca.key` 0600,
//!   `ca.crt`) or loaded from there (an operator may put its own there), and signs CSRs
//!   ([`Ca::sign_csr`]) after checking the identity they ask for.
//! - [`Csr::generate`] is the sidecar's side: a fresh key that never leaves the process and a
//!   PEM CSR naming the identity.
//! - [`identity_of`] reads the SPIFFE ID back out of a DER certificate (verifiers).
//!
//! Plain functions over explicit inputs (the clock is passed in) apart from [`Ca::load_or_create`].

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

/// The trust domain when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "weft.local";
/// A workload certificate's lifetime when none is configured.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// File names in the data dir.
pub const CA_KEY_FILE: &str = "ca.key";
pub const CA_CERT_FILE: &str = "ca.crt";

/// What went wrong, in one line.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0}")]
    Io(String),
    #[error("invalid CSR: {0}")]
    BadCsr(String),
    #[error("{0}")]
    Identity(String),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// `spiffe://<trust-domain>/ns/<namespace>/svc/<service>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service: String,
}

impl SpiffeId {
    pub fn new(trust_domain: &str, namespace: &str, service: &str) -> SpiffeId {
        SpiffeId {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service: service.into(),
        }
    }

    /// Parses the URI form; `None` for anything else (other paths, query, empty parts).
    pub fn parse(uri: &str) -> Option<SpiffeId> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (td, path) = rest.split_once('/')?;
        let mut parts = path.split('/');
        let (Some("ns"), Some(ns), Some("svc"), Some(svc), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        };
        (ok(td) && ok(ns) && ok(svc)).then(|| SpiffeId::new(td, ns, svc))
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/{}/svc/{}", self.trust_domain, self.namespace, self.service)
    }
}

/// The root: its key, its certificate as PEM (returned at the end of every chain) and the
/// rcgen issuer rebuilt from them.
pub struct Ca {
    key: KeyPair,
    issuer: rcgen::Certificate,
    cert_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A signed workload certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Leaf then root, PEM.
    pub chain_pem: String,
    pub identity: SpiffeId,
    pub not_after: SystemTime,
    pub serial: String,
}

fn odt(t: SystemTime) -> OffsetDateTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Ca {
    /// A new self-signed root for `trust_domain`, valid ten years from `now`.
    pub fn generate(trust_domain: &str, now: SystemTime) -> Result<Ca, CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, format!("weft root CA ({trust_domain})"));
        p.distinguished_name.push(DnType::OrganizationName, "weft");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = odt(now - Duration::from_secs(3600));
        p.not_after = odt(now + Duration::from_secs(10 * 365 * 24 * 3600));
        let cert = p.self_signed(&key).map_err(|e| CaError::Sign(e.to_string()))?;
        let cert_pem = cert.pem();
        Ok(Ca { key, issuer: cert, cert_pem })
    }

    /// A root from PEM text (an operator's, or one written earlier).
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Ca, CaError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| CaError::Io(format!("the CA key is not a usable PEM key: {e}")))?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem)
            .map_err(|e| CaError::Io(format!("the CA certificate cannot be read: {e}")))?;
        // Only the issuer's name and key matter for signing; the certificate handed out in
        // chains is the file's own text.
        let issuer = params.self_signed(&key).map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(Ca { key, issuer, cert_pem: cert_pem.to_string() })
    }

    /// Loads `<dir>/ca.key` and `<dir>/ca.crt`, or creates them (key 0600) when both are
    /// missing. Returns the CA and whether it was created. One of the two without the other is
    /// an error (an operator's half-copied root must not be silently replaced).
    pub fn load_or_create(
        dir: &Path,
        trust_domain: &str,
        now: SystemTime,
    ) -> Result<(Ca, bool), CaError> {
        let kp = dir.join(CA_KEY_FILE);
        let cp = dir.join(CA_CERT_FILE);
        let io = |what: &str, p: &Path, e: std::io::Error| {
            CaError::Io(format!("cannot {what} {}: {e}", p.display()))
        };
        match (kp.exists(), cp.exists()) {
            (true, true) => {
                let key = fs::read_to_string(&kp).map_err(|e| io("read", &kp, e))?;
                let cert = fs::read_to_string(&cp).map_err(|e| io("read", &cp, e))?;
                let ca = Ca::from_pem(&key, &cert).map_err(|e| {
                    CaError::Io(format!("{e} (files {} and {})", kp.display(), cp.display()))
                })?;
                Ok((ca, false))
            }
            (false, false) => {
                let ca = Ca::generate(trust_domain, now)?;
                write_private(&kp, &ca.key.serialize_pem()).map_err(|e| io("write", &kp, e))?;
                fs::write(&cp, &ca.cert_pem).map_err(|e| io("write", &cp, e))?;
                Ok((ca, true))
            }
            (has_key, _) => {
                let (have, missing) = if has_key { (&kp, &cp) } else { (&cp, &kp) };
                Err(CaError::Io(format!(
                    "{} exists but {} does not: put both the CA key and certificate there, or remove it to create a new CA",
                    have.display(),
                    missing.display()
                )))
            }
        }
    }

    /// The root certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The root's key, PEM (for writing it out; never sent anywhere).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Checks that `csr_pem` is a well-formed CSR whose self-signature holds and whose only
    /// identity is `expected`, then signs it for `ttl` from `now` (backdated a minute for
    /// clock skew). The certificate carries the URI SAN only, and may be used as a TLS client
    /// and server.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        expected: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(format!("{e} (send a PEM PKCS#10 request)")))?;
        let asked = requested_identity(&csr.params.subject_alt_names)?;
        if asked != *expected {
            return Err(CaError::Identity(format!(
                "the CSR asks for {asked}, but this instance's identity is {expected}"
            )));
        }
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, expected.service.clone());
        p.subject_alt_names = vec![uri_san(&expected.to_string())?];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let not_after = now + ttl;
        p.not_before = odt(now - Duration::from_secs(60));
        p.not_after = odt(not_after);
        let serial: [u8; 16] = random_serial(now, csr_pem);
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = p
            .signed_by(&csr.public_key, &self.issuer, &self.key)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut chain_pem = cert.pem();
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        chain_pem.push_str(&self.cert_pem);
        Ok(Issued {
            chain_pem,
            identity: expected.clone(),
            not_after,
            serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

impl Ca {
    /// A TLS server certificate for `names` (IP addresses or DNS names), signed by this root
    /// for `ttl` from `now`, with a fresh key: the api server's own, for `--tls auto`.
    /// Returns the chain (leaf then root) and the key, PEM.
    pub fn issue_server(
        &self,
        names: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(String, String), CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, "weft api server");
        p.subject_alt_names = names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => rcgen::Ia5String::try_from(n.clone())
                    .map(SanType::DnsName)
                    .map_err(|e| CaError::Identity(format!("{n:?} is not a host name: {e}"))),
            })
            .collect::<Result<_, _>>()?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        p.not_before = odt(now - Duration::from_secs(60));
        p.not_after = odt(now + ttl);
        p.serial_number = Some(SerialNumber::from_slice(&random_serial(now, &names.join(","))));
        let cert =
            p.signed_by(&key, &self.issuer, &self.key).map_err(|e| CaError::Sign(e.to_string()))?;
        let mut chain_pem = cert.pem();
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        chain_pem.push_str(&self.cert_pem);
        Ok((chain_pem, key.serialize_pem()))
    }
}

fn uri_san(uri: &str) -> Result<SanType, CaError> {
    let s = rcgen::Ia5String::try_from(uri.to_string())
        .map_err(|e| CaError::Identity(format!("{uri:?} is not a valid URI SAN: {e}")))?;
    Ok(SanType::URI(s))
}

/// The one SPIFFE ID a CSR asks for.
fn requested_identity(sans: &[SanType]) -> Result<SpiffeId, CaError> {
    let uris: Vec<&SanType> = sans.iter().collect();
    match uris.as_slice() {
        [SanType::URI(u)] => SpiffeId::parse(u.as_str()).ok_or_else(|| {
            CaError::Identity(format!(
                "the CSR's URI SAN {:?} is not spiffe://<trust-domain>/ns/<namespace>/svc/<service>",
                u.as_str()
            ))
        }),
        [] => Err(CaError::Identity(
            "the CSR has no subject alternative name: ask for spiffe://<trust-domain>/ns/<namespace>/svc/<service> as its one URI SAN".into(),
        )),
        _ => Err(CaError::Identity(
            "the CSR must have exactly one subject alternative name, the SPIFFE URI".into(),
        )),
    }
}

/// 16 bytes, positive, unique enough: hashed from the time, the CSR and the process' randomness
/// in `RandomState` (no extra dependency for a serial).
fn random_serial(now: SystemTime, csr: &str) -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.write(csr.as_bytes());
        chunk.copy_from_slice(&h.finish().to_be_bytes());
    }
    out[0] &= 0x7f;
    out[0] |= 0x01;
    out
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

/// A workload's key (kept in memory) and the CSR sent for it.
pub struct Csr {
    /// PKCS#8 PEM of the private key.
    pub key_pem: String,
    pub csr_pem: String,
}

impl fmt::Debug for Csr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Csr").field("csr_pem", &self.csr_pem).finish_non_exhaustive()
    }
}

impl Csr {
    /// A fresh ECDSA P-256 key and a CSR for `id`.
    pub fn generate(id: &SpiffeId) -> Result<Csr, CaError> {
        let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, id.service.clone());
        p.subject_alt_names = vec![uri_san(&id.to_string())?];
        let csr = p.serialize_request(&key).map_err(|e| CaError::Sign(e.to_string()))?;
        let csr_pem = csr.pem().map_err(|e| CaError::Sign(e.to_string()))?;
        Ok(Csr { key_pem: key.serialize_pem(), csr_pem })
    }
}

/// The SPIFFE ID in a DER certificate's URI SANs, if it has exactly one.
pub fn identity_of(cert_der: &[u8]) -> Option<SpiffeId> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => SpiffeId::parse(u),
        _ => None,
    });
    let first = ids.next()?;
    ids.next().is_none().then_some(first)
}

/// A certificate's validity end (seconds since the epoch).
pub fn not_after_of(cert_der: &[u8]) -> Option<SystemTime> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
    let secs = cert.validity().not_after.timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// The DER blocks of every `CERTIFICATE` in a PEM text, in order.
pub fn pem_certs(pem_text: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem_text.as_bytes())
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect()
}

/// The DER (PKCS#8) of a PEM private key.
pub fn pem_key_der(pem_text: &str) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem_text.as_bytes())
        .filter_map(Result::ok)
        .find(|p| p.label.ends_with("PRIVATE KEY"))
        .map(|p| p.contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(svc: &str) -> SpiffeId {
        SpiffeId::new(DEFAULT_TRUST_DOMAIN, "default", svc)
    }

    #[test]
    fn server_certificates_name_their_hosts() {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let now = SystemTime::now();
        let ca = Ca::generate(DEFAULT_TRUST_DOMAIN, now).unwrap();
        let names = vec!["127.0.0.1".to_string(), "localhost".to_string(), "::1".to_string()];
        let (chain, key) = ca.issue_server(&names, Duration::from_secs(3600), now).unwrap();
        let certs = pem_certs(&chain);
        assert_eq!(certs.len(), 2, "leaf then root");
        assert!(pem_key_der(&key).is_some());
        let (_, leaf) = X509Certificate::from_der(&certs[0]).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        let got: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) => format!("{} bytes", ip.len()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(got, vec!["4 bytes", "localhost", "16 bytes"]);
        assert!(!leaf.is_ca());
        assert!(ca.issue_server(&["h\u{f6}st".into()], Duration::from_secs(60), now).is_err());
    }

    #[test]
    fn spiffe_ids_round_trip_and_reject_other_shapes() {
        let i = id("catalog");
        assert_eq!(i.to_string(), "spiffe://weft.local/ns/default/svc/catalog");
        assert_eq!(SpiffeId::parse(&i.to_string()), Some(i));
        for bad in [
            "spiffe://weft.local/ns/default/svc/",
            "spiffe://weft.local/ns/default/svc/a/b",
            "spiffe://weft.local/ns/default/sa/a",
            "https://weft.local/ns/default/svc/a",
            "spiffe:///ns/default/svc/a",
            "spiffe://weft.local/ns/de fault/svc/a",
        ] {
            assert_eq!(SpiffeId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn signs_the_expected_identity_only() {
        let now = SystemTime::now();
        let ca = Ca::generate(DEFAULT_TRUST_DOMAIN, now).unwrap();
        let csr = Csr::generate(&id("catalog")).unwrap();
        let issued = ca.sign_csr(&csr.csr_pem, &id("catalog"), DEFAULT_TTL, now).unwrap();
        let certs = pem_certs(&issued.chain_pem);
        assert_eq!(certs.len(), 2);
        assert_eq!(identity_of(&certs[0]), Some(id("catalog")));
        let na = not_after_of(&certs[0]).unwrap();
        let want = now + DEFAULT_TTL;
        let diff = want.duration_since(na).unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_secs(2), "{diff:?}");
        let e = ca.sign_csr(&csr.csr_pem, &id("cart"), DEFAULT_TTL, now).unwrap_err();
        assert!(e.to_string().contains("asks for spiffe://weft.local/ns/default/svc/catalog"));
        let e = ca.sign_csr("garbage", &id("cart"), DEFAULT_TTL, now).unwrap_err();
        assert!(matches!(e, CaError::BadCsr(_)));
    }

    #[test]
    fn creates_then_loads_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (a, created) = Ca::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN, now).unwrap();
        assert!(created);
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(CA_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, created) = Ca::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN, now).unwrap();
        assert!(!created);
        assert_eq!(a.cert_pem(), b.cert_pem());
        // A certificate signed by the reloaded root still names the same issuer.
        let csr = Csr::generate(&id("x")).unwrap();
        let issued = b.sign_csr(&csr.csr_pem, &id("x"), DEFAULT_TTL, now).unwrap();
        assert!(issued.chain_pem.ends_with(a.cert_pem()));
        fs::remove_file(dir.path().join(CA_CERT_FILE)).unwrap();
        let e = Ca::load_or_create(dir.path(), DEFAULT_TRUST_DOMAIN, now).unwrap_err();
        assert!(e.to_string().contains("exists but"), "{e}");
    }
}
