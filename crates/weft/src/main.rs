//! The `weft` binary: every role of the platform behind one command.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weft", version, about = "weft: a cloud-native runtime in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar proxy (or a plain reverse proxy with --upstream).
    Proxy(weft_proxy::ProxyArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Proxy(args) => rt.block_on(weft_proxy::run(args)),
    }
}
