//! `weft scale deploy NAME --replicas N`.

use weft_api::Deployment;
use weft_api::kinds::deployment::MAX_REPLICAS;
use weft_client::ClientError;

use crate::cmd::get::resolve_kind;
use crate::connect::Connection;
use crate::exit;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  weft scale deploy catalog --replicas 3\n\nAn autoscaler targeting the deployment will keep adjusting replicas after this."
)]
pub struct ScaleArgs {
    /// The kind: deployment (deploy)
    pub kind: String,
    pub name: String,
    #[arg(long)]
    pub replicas: i32,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

pub async fn run(conn: &Connection, args: ScaleArgs) -> anyhow::Result<()> {
    let kind = resolve_kind(&args.kind)?;
    if kind.kind != "Deployment" {
        return Err(exit::usage(format!("only deployments can be scaled, not {}", kind.plural)));
    }
    if !(0..=MAX_REPLICAS).contains(&args.replicas) {
        return Err(exit::usage(format!("--replicas must be between 0 and {MAX_REPLICAS}")));
    }
    let client = conn.client()?;
    // Read-modify-write with the object's resourceVersion: a concurrent change (say the
    // autoscaler's) makes the write fail with 409 and we retry on the fresh object.
    for _ in 0..10 {
        let mut d: Deployment = client.get(Some(&args.namespace), &args.name).await?;
        let from = d.spec.replicas;
        d.spec.replicas = args.replicas;
        d.status = None;
        match client.put(&d).await {
            Ok(_) => {
                println!("deployment/{} scaled from {from} to {}", args.name, args.replicas);
                return Ok(());
            }
            Err(ClientError::Api(e)) if e.code == weft_api::ErrorCode::Conflict => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(anyhow::anyhow!("deployment/{} keeps changing under us; try again", args.name))
}
