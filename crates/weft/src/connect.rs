//! Where the CLI finds its server and token: flags, then environment, then what a local server
//! wrote in its data dir, then the default address.

use std::path::{Path, PathBuf};

use anyhow::Context;
use weft_client::Client;

/// The file a server writes its address to, in its data dir.
pub const SERVER_FILE: &str = "server";
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// Options every command that talks to a server shares.
#[derive(Clone, Debug, clap::Args)]
pub struct Connection {
    /// Api server URL [default: the address in <data-dir>/server, else http://127.0.0.1:7070]
    #[arg(long, env = "WEFT_SERVER", global = true)]
    pub server: Option<String>,
    /// Bearer token [default: <data-dir>/admin.token]
    #[arg(long, env = "WEFT_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Where a local server keeps its state, address and admin token
    #[arg(long, env = "WEFT_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Certificates to trust for an https api server (PEM) [default: <data-dir>/api-ca.crt,
    /// which a server with TLS writes]
    #[arg(long, env = "WEFT_CA_FILE", global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl Connection {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    pub fn server_url(&self) -> String {
        if let Some(s) = &self.server {
            return s.clone();
        }
        read_trimmed(&self.data_dir().join(SERVER_FILE))
            .unwrap_or_else(|| DEFAULT_SERVER.to_string())
    }

    pub fn token(&self) -> Option<String> {
        self.token
            .clone()
            .or_else(|| read_trimmed(&self.data_dir().join(weft_server::auth::ADMIN_TOKEN_FILE)))
    }

    /// The CA file for https servers: the flag or environment, else the one a local server
    /// wrote in the data dir (if there is one).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.ca_file.clone().or_else(|| {
            let p = self.data_dir().join(weft_server::tls::API_CA_FILE);
            p.is_file().then_some(p)
        })
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        let url = self.server_url();
        Client::new(&url, self.token()).with_context(|| "cannot use the server address".to_string())
    }
}

pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".weft"),
        None => PathBuf::from(".weft"),
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}
