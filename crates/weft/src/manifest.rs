//! Reading manifests from files, directories and stdin, keeping where each object came from so
//! errors can point at `file:line`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;
use weft_api::codec;

use crate::exit;

/// One object and where it was read.
pub struct Loaded {
    pub source: String,
    pub line: Option<usize>,
    pub value: Value,
}

impl Loaded {
    /// `file:line` (or just `file`) for messages.
    pub fn origin(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{l}", self.source),
            None => self.source.clone(),
        }
    }

    /// Decodes, defaults and validates the object as the server will (in `namespace` when it
    /// names none), so that a mistake is reported with the file and line it came from (exit 64).
    pub fn normalize(
        &self,
        namespace: Option<&str>,
    ) -> anyhow::Result<(&'static weft_api::kinds::KindInfo, Value)> {
        let mut value = self.value.clone();
        if let (Some(ns), Some(meta)) =
            (namespace, value.get_mut("metadata").and_then(|m| m.as_object_mut()))
        {
            meta.entry("namespace").or_insert_with(|| ns.into());
        }
        weft_api::kinds::normalize(value).map_err(|e| {
            let what = weft_api::kinds::describe_raw(&self.value)
                .map(|w| format!("{w}: "))
                .unwrap_or_default();
            exit::usage(format!("{}: {what}{}", self.origin(), e.message))
        })
    }
}

/// Reads every object from `paths` (`-` is stdin; directories give their `.yaml`, `.yml` and
/// `.json` files in name order, recursively with `recursive`).
pub fn load(paths: &[PathBuf], recursive: bool) -> anyhow::Result<Vec<Loaded>> {
    if paths.is_empty() {
        return Err(exit::usage("no manifests given: use -f FILE, -f DIR or -f - for stdin"));
    }
    let mut files = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            files.push(None);
        } else if p.is_dir() {
            collect_dir(p, recursive, &mut files)?;
        } else if p.exists() {
            files.push(Some(p.clone()));
        } else {
            return Err(exit::usage(format!("{}: no such file or directory", p.display())));
        }
    }
    let mut out = Vec::new();
    for f in files {
        let (source, text) = match f {
            None => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("reading manifests from stdin")?;
                ("stdin".to_string(), text)
            }
            Some(path) => {
                let bytes =
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| exit::usage(format!("{}: not UTF-8 text", path.display())))?;
                (path.display().to_string(), text)
            }
        };
        let docs = codec::parse_documents(&text)
            .map_err(|e| exit::usage(format!("{source}: {}", e.message)))?;
        out.extend(docs.into_iter().map(|d| Loaded {
            source: source.clone(),
            line: d.line,
            value: d.value,
        }));
    }
    if out.is_empty() {
        return Err(exit::usage("the manifests hold no objects"));
    }
    Ok(out)
}

fn collect_dir(dir: &Path, recursive: bool, out: &mut Vec<Option<PathBuf>>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                collect_dir(&p, recursive, out)?;
            }
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")) {
            out.push(Some(p));
        }
    }
    Ok(())
}
