//! `weft delete`: remove objects by name or by manifest.

use std::path::PathBuf;

use weft_api::kinds;

use crate::cmd::get::resolve_kind;
use crate::connect::Connection;
use crate::{exit, manifest};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  weft delete deploy catalog\n  weft delete -f examples/shop.yaml"
)]
pub struct DeleteArgs {
    /// Kind of the objects to delete
    #[arg(required_unless_present = "files", conflicts_with = "files")]
    pub kind: Option<String>,
    /// Names of the objects
    pub names: Vec<String>,
    /// Delete what these manifests describe
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<PathBuf>,
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
}

pub async fn run(conn: &Connection, args: DeleteArgs) -> anyhow::Result<()> {
    let mut targets = Vec::new();
    if !args.files.is_empty() {
        for l in manifest::load(&args.files, args.recursive)? {
            let kind = kinds::kind_of(&l.value)
                .map_err(|e| exit::usage(format!("{}: {}", l.origin(), e.message)))?;
            let meta = &l.value["metadata"];
            let name = meta["name"]
                .as_str()
                .ok_or_else(|| exit::usage(format!("{}: metadata.name is required", l.origin())))?
                .to_string();
            let ns = meta["namespace"].as_str().unwrap_or(&args.namespace).to_string();
            targets.push((kind, ns, name));
        }
    } else {
        let kind = resolve_kind(args.kind.as_deref().unwrap_or_default())?;
        if args.names.is_empty() {
            return Err(exit::usage(format!(
                "name the {} to delete: weft delete {} NAME",
                kind.plural, kind.singular
            )));
        }
        for n in &args.names {
            targets.push((kind, args.namespace.clone(), n.clone()));
        }
    }
    let client = conn.client()?;
    let mut failed = 0;
    for (kind, ns, name) in targets {
        let ns = kind.namespaced.then_some(ns.as_str());
        match client.delete_value(kind, ns, &name).await {
            Ok(_) => println!("{}/{name} deleted", kind.singular),
            Err(e @ weft_client::ClientError::Unreachable { .. }) => return Err(e.into()),
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(exit::Exit {
            code: exit::FAILURE,
            message: format!("{failed} object(s) could not be deleted"),
        }
        .into());
    }
    Ok(())
}
