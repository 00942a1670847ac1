//! `weft get`: list or show objects, optionally following changes.

use std::io::Write;

use futures::StreamExt;
use serde_json::Value;
use weft_api::selector::Selector;
use weft_api::wire::EventType;
use weft_api::{KindInfo, kinds};

use crate::connect::Connection;
use crate::exit;
use crate::output::{self, Format};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Kinds: deployment (deploy), service (svc), autoscaler (as), instance (inst), endpoints (ep), node (no)\n\nExamples:\n  weft get deploy\n  weft get inst -o wide -w\n  weft get svc catalog -o yaml\n  weft get inst -A -l deployment=catalog"
)]
pub struct GetArgs {
    /// What to get: a kind, in singular, plural or short form
    pub kind: String,
    /// One object by name (all when omitted)
    pub name: Option<String>,
    #[arg(short, long, default_value = "default", conflicts_with = "all_namespaces")]
    pub namespace: String,
    /// Every namespace
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Only objects whose labels match, e.g. app=web,tier!=db
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// After listing, keep printing changes as they happen
    #[arg(short, long)]
    pub watch: bool,
}

pub fn resolve_kind(name: &str) -> anyhow::Result<&'static KindInfo> {
    kinds::lookup(name).ok_or_else(|| {
        exit::usage(format!("unknown kind {name:?} (known: {})", kinds::known_kinds()))
    })
}

pub async fn run(conn: &Connection, args: GetArgs) -> anyhow::Result<()> {
    let kind = resolve_kind(&args.kind)?;
    let selector = match &args.selector {
        Some(s) => Some(Selector::parse(s).map_err(|e| exit::usage(e.message))?),
        None => None,
    };
    let all = args.all_namespaces && kind.namespaced;
    let ns = (!all && kind.namespaced).then_some(args.namespace.as_str());
    let client = conn.client()?;
    let wide = args.output == Format::Wide;
    let headers = output::headers(kind, wide, all);
    let mut out = std::io::stdout().lock();
    let (items, revision) = match &args.name {
        Some(name) => {
            let v = client.get_value(kind, ns, name).await?;
            let rv = v["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok());
            (vec![v], rv)
        }
        None => {
            let list = client.list_value(kind, ns, selector.as_ref()).await?;
            (list.items, list.metadata.resource_version.parse().ok())
        }
    };
    match args.output {
        Format::Table | Format::Wide => {
            if items.is_empty() {
                let place = if all || !kind.namespaced {
                    String::new()
                } else {
                    format!(" in namespace {}", args.namespace)
                };
                eprintln!("No {} found{place}.", kind.plural);
                if args.watch {
                    writeln!(out, "{}", headers.join("   "))?;
                }
            } else {
                let rows: Vec<_> = items.iter().map(|o| output::row(kind, o, wide, all)).collect();
                write!(out, "{}", output::table(&headers, &rows))?;
            }
        }
        Format::Yaml => {
            let v = if args.name.is_some() { items[0].clone() } else { as_list(items) };
            write!(out, "{}", output::yaml(&v))?;
        }
        Format::Json => {
            let v = if args.name.is_some() { items[0].clone() } else { as_list(items) };
            write!(out, "{}", output::json(&v))?;
        }
        Format::Name => {
            for o in &items {
                writeln!(out, "{}", output::kind_name(kind, o))?;
            }
        }
    }
    out.flush()?;
    drop(out);
    if !args.watch {
        return Ok(());
    }
    let mut stream =
        client.watch(kind, ns, args.name.as_deref(), selector.as_ref(), revision).await?;
    while let Some(ev) = stream.next().await {
        let ev = ev?;
        let mut out = std::io::stdout().lock();
        match ev.kind {
            EventType::Bookmark => continue,
            EventType::Error => {
                let msg = ev
                    .object
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("watch failed")
                    .to_string();
                return Err(anyhow::anyhow!(msg));
            }
            _ => {}
        }
        match args.output {
            Format::Table | Format::Wide => {
                let mut r = output::row(kind, &ev.object, wide, all);
                if ev.kind == EventType::Deleted
                    && let Some(c) = r.last_mut()
                {
                    *c = "<deleted>".into();
                }
                write!(out, "{}", output::rows_only(&headers, &[r]))?;
            }
            Format::Yaml => write!(out, "---\n{}", output::yaml(&ev.object))?,
            Format::Json => writeln!(out, "{}", serde_json::to_string(&ev.object)?)?,
            Format::Name => writeln!(
                out,
                "{} {}",
                output::kind_name(kind, &ev.object),
                ev.kind.to_string().to_lowercase()
            )?,
        }
        out.flush()?;
    }
    Ok(())
}

fn as_list(items: Vec<Value>) -> Value {
    serde_json::json!({ "apiVersion": weft_api::API_VERSION, "kind": "List", "items": items })
}
