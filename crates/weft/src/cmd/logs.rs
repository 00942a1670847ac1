//! `weft logs`: an instance's output, from the agent that runs it.

use std::io::Write;

use futures::StreamExt;
use weft_api::Instance;
use weft_api::selector::Selector;

use crate::connect::Connection;
use crate::exit;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  weft logs catalog-7d4f9-x2k8p\n  weft logs deploy/catalog -f          (one of its instances)\n  weft logs catalog-7d4f9-x2k8p --sidecar --tail 50"
)]
pub struct LogsArgs {
    /// An instance name, or deploy/NAME for one of a deployment's instances
    pub target: String,
    /// Keep printing new lines
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines
    #[arg(long)]
    pub tail: Option<u64>,
    /// The instance's sidecar log instead of the app's
    #[arg(long)]
    pub sidecar: bool,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

pub async fn run(conn: &Connection, args: LogsArgs) -> anyhow::Result<()> {
    let client = conn.client()?;
    let instance = match args.target.split_once('/') {
        None => args.target.clone(),
        Some((kind, name)) => {
            let k = weft_api::kinds::lookup(kind).map(|k| k.kind);
            if k != Some("Deployment") {
                return Err(exit::usage(format!(
                    "{kind}/{name}: use an instance name or deploy/NAME"
                )));
            }
            let sel = Selector::parse(&format!("deployment={name}"))
                .map_err(|e| exit::usage(e.message))?;
            let (mut list, _) = client.list::<Instance>(Some(&args.namespace), Some(&sel)).await?;
            // Prefer a running, ready instance: that is the one people mean.
            list.sort_by_key(|i| {
                let s = i.status.clone().unwrap_or_default();
                (
                    !s.ready,
                    s.phase != weft_api::kinds::instance::Phase::Running,
                    i.metadata.name.clone(),
                )
            });
            let Some(first) = list.first() else {
                return Err(anyhow::anyhow!(
                    "deployment {name:?} has no instances in namespace {:?}",
                    args.namespace
                ));
            };
            if list.len() > 1 {
                eprintln!(
                    "(instance {} of {} for deployment {name})",
                    first.metadata.name,
                    list.len()
                );
            }
            first.metadata.name.clone()
        }
    };
    let mut stream =
        client.logs(&args.namespace, &instance, args.follow, args.tail, args.sidecar).await?;
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?)?;
        out.flush()?;
    }
    Ok(())
}
