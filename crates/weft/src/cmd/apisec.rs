//! Api hardening flags shared by `weft server` and `weft up`: TLS on the api listener and the
//! audit log of writes (issue 6).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use weft_server::Server;
use weft_server::audit::{AUDIT_FILE, AuditOptions};
use weft_server::tls::{API_CA_FILE, Identity};

use crate::exit;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct ApiSecArgs {
    /// TLS on the api: `auto` issues the server a certificate for --listen from the control
    /// plane's CA (<data-dir>/ca.crt), `off` serves plaintext. With --tls-cert/--tls-key the
    /// operator's certificate is used. Clients trust <data-dir>/api-ca.crt (written here).
    #[arg(long, value_name = "auto|off")]
    pub tls: Option<String>,
    /// The api's TLS certificate chain (PEM), with --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The api's TLS private key (PEM, PKCS#8), with --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// More names (DNS or IP) for the --tls auto certificate, e.g. the address other machines use
    #[arg(long, value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// Audit log of writes (JSON lines): a file, or `off` [default: <data-dir>/audit.log]
    #[arg(long, value_name = "PATH|off")]
    pub audit_log: Option<String>,
    /// Size at which the audit log is rotated (one old file is kept as <path>.1)
    #[arg(long, default_value = "64Mi", value_name = "BYTES")]
    pub audit_log_max_size: String,
}

/// TLS as asked for, checked before anything starts.
pub enum TlsPlan {
    Off,
    Auto(Vec<String>),
    Files(Identity),
}

/// Checks the flags: bad values and unreadable certificate or key files are usage errors
/// (exit 64), found before the server starts.
pub fn plan(args: &ApiSecArgs) -> anyhow::Result<(TlsPlan, Option<AuditOptions>)> {
    let tls = match (args.tls.as_deref(), &args.tls_cert, &args.tls_key) {
        (Some("auto"), Some(_), _) | (Some("auto"), _, Some(_)) => {
            return Err(exit::usage(
                "--tls auto issues a certificate itself: leave out --tls-cert/--tls-key, or --tls auto",
            ));
        }
        (Some("off"), Some(_), _) | (Some("off"), _, Some(_)) => {
            return Err(exit::usage("--tls off contradicts --tls-cert/--tls-key"));
        }
        (Some("auto"), None, None) => TlsPlan::Auto(args.tls_san.clone()),
        (None | Some("off"), None, None) => TlsPlan::Off,
        (None, Some(cert), Some(key)) => TlsPlan::Files(
            weft_server::tls::from_files(cert, key).map_err(|e| exit::usage(e.to_string()))?,
        ),
        (None, _, _) => {
            return Err(exit::usage("give both --tls-cert and --tls-key"));
        }
        (Some(other), _, _) => {
            return Err(exit::usage(format!(
                "--tls {other:?}: use auto, off, or --tls-cert FILE --tls-key FILE"
            )));
        }
    };
    if let TlsPlan::Files(id) = &tls {
        // A certificate that does not match its key is caught now too.
        weft_server::tls::server_config(id).map_err(|e| exit::usage(e.to_string()))?;
    }
    if !args.tls_san.is_empty() && !matches!(tls, TlsPlan::Auto(_)) {
        return Err(exit::usage("--tls-san only applies with --tls auto"));
    }
    let max = args
        .audit_log_max_size
        .parse::<weft_api::quantity::Quantity>()
        .map_err(|e| exit::usage(format!("--audit-log-max-size: {e}")))?
        .as_units_ceil();
    if max < 4096 {
        return Err(exit::usage("--audit-log-max-size must be at least 4Ki"));
    }
    let audit = match args.audit_log.as_deref() {
        Some("off") => None,
        Some("") => return Err(exit::usage("--audit-log: give a file path, or off")),
        Some(p) => Some(PathBuf::from(p)),
        None => Some(PathBuf::new()),
    }
    .map(|p| AuditOptions { max_bytes: max, ..AuditOptions::new(p) });
    Ok((tls, audit))
}

/// Turns on what [`plan`] checked: the audit log (its default path in `data_dir`), and TLS,
/// writing the certificates clients trust to `<data_dir>/api-ca.crt`. Returns the api's URL
/// scheme. Call after the CA is enabled.
pub fn enable(
    server: &mut Server,
    tls: TlsPlan,
    audit: Option<AuditOptions>,
    data_dir: &Path,
    listen: SocketAddr,
) -> anyhow::Result<&'static str> {
    if let Some(mut a) = audit {
        if a.path.as_os_str().is_empty() {
            a.path = data_dir.join(AUDIT_FILE);
        }
        let path = a.path.clone();
        server.enable_audit(a).map_err(|e| exit::Exit {
            code: exit::USAGE,
            message: format!("cannot open the audit log {}: {e} (choose another with --audit-log PATH, or --audit-log off)", path.display()),
        })?;
    }
    let identity = match tls {
        TlsPlan::Off => return Ok("http"),
        TlsPlan::Files(id) => id,
        TlsPlan::Auto(extra) => {
            let ca = server.ca().context("the control plane's CA is not enabled")?;
            let names = weft_server::tls::names_for(listen, &extra);
            weft_server::tls::from_ca(ca, &names, std::time::SystemTime::now())
                .map_err(|e| exit::usage(format!("--tls auto: {e}")))?
        }
    };
    server.enable_tls(&identity).map_err(|e| exit::usage(e.to_string()))?;
    let ca_path = data_dir.join(API_CA_FILE);
    std::fs::write(&ca_path, &identity.trust_pem)
        .with_context(|| format!("writing {}", ca_path.display()))?;
    // This process' own clients (controllers, agent, gateway, and the sidecars it starts)
    // trust it too.
    weft_client::tls::set_default_ca_file(Some(ca_path));
    Ok("https")
}

/// `http://host:port` as `scheme://host:port`.
pub fn with_scheme(url: String, scheme: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) if scheme == "https" => format!("https://{rest}"),
        _ => url,
    }
}
