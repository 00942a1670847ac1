//! `https://` for the client: a connector that speaks plain TCP to `http://` servers and TLS
//! (rustls) to `https://` ones, trusting the certificates of a CA file (`--ca-file`,
//! `WEFT_CA_FILE`; a weft server writes its own to `<data-dir>/api-ca.crt`).
//!
//! TLS failures are turned into one line that says what to do ([`TlsFailure`]): an untrusted
//! certificate names the CA file to pass, a plaintext server says to use `http://`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The environment variable naming the CA file, for every weft process that is a client.
pub const CA_FILE_ENV: &str = "WEFT_CA_FILE";

/// The process-wide CA file, for the clients a process makes deep inside its parts (an
/// in-process gateway, agent, controllers) and for the processes it starts (sidecars).
static DEFAULT_CA_FILE: std::sync::RwLock<Option<PathBuf>> = std::sync::RwLock::new(None);

/// Sets the CA file every [`crate::Client::new`] in this process trusts, before
/// `WEFT_CA_FILE`. Set once at start by a binary that was given one (`--ca-file`, or its own
/// server's `<data-dir>/api-ca.crt`).
pub fn set_default_ca_file(path: Option<PathBuf>) {
    *DEFAULT_CA_FILE.write().unwrap_or_else(|p| p.into_inner()) = path;
}

/// The CA file [`crate::Client::new`] trusts: the one set with [`set_default_ca_file`], else
/// `$WEFT_CA_FILE`.
pub fn default_ca_file() -> Option<PathBuf> {
    if let Some(p) = DEFAULT_CA_FILE.read().unwrap_or_else(|p| p.into_inner()).clone() {
        return Some(p);
    }
    std::env::var_os(CA_FILE_ENV).filter(|v| !v.is_empty()).map(Into::into)
}

/// A TLS connection that could not be made, said plainly.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsFailure(pub String);

/// Reads the certificates to trust from a PEM file.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_file {
        let text = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
        let mut n = 0;
        for der in pem_certificates(&text) {
            if roots.add(CertificateDer::from(der)).is_ok() {
                n += 1;
            }
        }
        if n == 0 {
            return Err(format!("the CA file {} holds no usable PEM certificate", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The DER of every `CERTIFICATE` block in a PEM text.
fn pem_certificates(text: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let decode = |b: &str| base64::engine::general_purpose::STANDARD.decode(b).ok();
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    let mut inside = None::<String>;
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            inside = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(b64) = inside.take()
                && let Some(der) = decode(&b64)
            {
                out.push(der);
            }
        } else if let Some(b64) = inside.as_mut() {
            b64.push_str(line);
        }
    }
    out
}

/// Plain TCP for `http://`, TLS for `https://`.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: TlsConnector,
    ca_file: Option<PathBuf>,
}

impl Connector {
    pub fn new(
        http: HttpConnector,
        tls: Arc<rustls::ClientConfig>,
        ca_file: Option<PathBuf>,
    ) -> Connector {
        let mut http = http;
        http.enforce_http(false);
        Connector { http, tls: TlsConnector::from(tls), ca_file }
    }
}

/// A connection, plain or TLS.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// [`Io`] as hyper sees it.
pub struct Conn(TokioIo<Io>);

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut http = self.http.clone();
        let tls = self.tls.clone();
        let ca_file = self.ca_file.clone();
        Box::pin(async move {
            let https = uri.scheme_str() == Some("https");
            let host =
                uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']').to_string();
            let tcp = tower::Service::call(&mut http, uri).await?.into_inner();
            if !https {
                return Ok(Conn(TokioIo::new(Io::Plain(tcp))));
            }
            let name = ServerName::try_from(host.clone())
                .map_err(|_| TlsFailure(format!("{host:?} is not a host name TLS can check")))?;
            match tls.connect(name, tcp).await {
                Ok(s) => Ok(Conn(TokioIo::new(Io::Tls(Box::new(s))))),
                Err(e) => Err(Box::new(explain(&e, &host, ca_file.as_deref())) as BoxError),
            }
        })
    }
}

/// One line for a failed handshake.
fn explain(e: &std::io::Error, host: &str, ca_file: Option<&Path>) -> TlsFailure {
    use rustls::{CertificateError, Error};
    let trust = match ca_file {
        Some(f) => format!(
            "it is not signed by a CA in {} (pass the server's CA bundle, <data-dir>/api-ca.crt on its machine, with --ca-file or WEFT_CA_FILE)",
            f.display()
        ),
        None => "no CA file was given: pass the server's CA bundle (<data-dir>/api-ca.crt on its machine) with --ca-file FILE or WEFT_CA_FILE".to_string(),
    };
    let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<Error>());
    let text = match rustls_error {
        Some(Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => {
            format!("the server's TLS certificate is not trusted: {trust}")
        }
        Some(Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "the server's TLS certificate is not valid for {host} (use the address it was issued for, e.g. the server's --listen address)"
        ),
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "the server's TLS certificate has expired".to_string(),
        Some(Error::InvalidMessage(_)) => {
            "the server does not speak TLS (it answered in plaintext): use http:// for it"
                .to_string()
        }
        Some(other) => format!("TLS handshake failed: {other}"),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the server closed the connection during the TLS handshake (is it a TLS server?)"
                .to_string()
        }
        None => format!("TLS handshake failed: {e}"),
    };
    TlsFailure(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks() {
        let text = b"junk\n-----BEGIN CERTIFICATE-----\naGVs\nbG8=\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n*\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(text), vec![b"hello".to_vec()]);
    }

    #[test]
    fn ca_files() {
        let dir = std::env::temp_dir().join(format!("weft-client-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.crt");
        assert!(client_config(Some(&missing)).unwrap_err().contains("cannot read the CA file"));
        let empty = dir.join("empty.crt");
        std::fs::write(&empty, "not pem").unwrap();
        assert!(client_config(Some(&empty)).unwrap_err().contains("holds no usable PEM"));
        assert!(client_config(None).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
