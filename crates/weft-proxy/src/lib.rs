//! weft's sidecar proxy (the data plane).

/// `weft proxy` command-line arguments.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// Address to listen on.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
}

/// Runs the proxy until it is told to stop.
pub async fn run(_args: ProxyArgs) -> anyhow::Result<()> {
    anyhow::bail!("weft proxy is not built yet")
}
