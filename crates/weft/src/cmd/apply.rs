//! `weft apply -f`: create or update objects, all or nothing.

use std::path::PathBuf;

use weft_api::kinds;
use weft_client::ClientError;

use crate::connect::Connection;
use crate::manifest;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  weft apply -f examples/shop.yaml\n  weft apply -f manifests/ -R\n  cat app.yaml | weft apply -f -\n  weft apply -f app.yaml --dry-run"
)]
pub struct ApplyArgs {
    /// Manifest file, directory, or - for stdin (repeatable)
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespace for objects that name none
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Read directories recursively
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Validate and report what would change, without writing
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(conn: &Connection, args: ApplyArgs) -> anyhow::Result<()> {
    let loaded = manifest::load(&args.files, args.recursive)?;
    // Check locally first: the same validation the server runs, but errors can name the file.
    for l in &loaded {
        l.normalize(args.namespace.as_deref())?;
    }
    let client = conn.client()?;
    let objects: Vec<_> = loaded.iter().map(|l| l.value.clone()).collect();
    let resp = match client.apply(&objects, args.namespace.as_deref(), args.dry_run).await {
        Ok(r) => r,
        Err(ClientError::Api(mut e)) => {
            // Point server-side errors at the file the object came from.
            if let Some(l) = e.document.and_then(|d| loaded.get(d - 1)) {
                let message = strip_document_prefix(&e.message);
                let what =
                    kinds::describe_raw(&l.value).map(|w| format!("{w}: ")).unwrap_or_default();
                e.message = format!("{}: {what}{message}", l.origin());
            }
            return Err(ClientError::Api(e).into());
        }
        Err(e) => return Err(e.into()),
    };
    let suffix = if args.dry_run { " (dry run)" } else { "" };
    for r in resp.results {
        let singular =
            kinds::lookup(&r.kind).map_or(r.kind.to_lowercase(), |k| k.singular.to_string());
        println!("{singular}/{} {}{suffix}", r.name, r.action);
    }
    Ok(())
}

fn strip_document_prefix(message: &str) -> &str {
    if let Some(rest) = message.strip_prefix("document ")
        && let Some((_, tail)) = rest.split_once(": ")
        && rest.chars().next().is_some_and(|c| c.is_ascii_digit())
    {
        return tail;
    }
    message
}

#[cfg(test)]
mod tests {
    #[test]
    fn strips_document_prefix() {
        assert_eq!(
            super::strip_document_prefix("document 2 (Deployment web): spec.x: bad"),
            "spec.x: bad"
        );
        assert_eq!(super::strip_document_prefix("spec.x: bad"), "spec.x: bad");
    }
}
