//! `latchkey documents export|import`: the embedded document store as JSON
//! lines, one document each, so it can be backed up, restored, and moved to
//! or from Google Firestore.

use std::io::{BufRead, Write};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use latchkey_docstore::DocumentStore;
use latchkey_documents::rest::proto_json;
use latchkey_gateway::config::DocumentsBackend;

use crate::cli::{DocumentsCommand, DocumentsExportArgs, DocumentsImportArgs};

pub(crate) async fn run(cmd: DocumentsCommand) -> Result<std::process::ExitCode> {
    match cmd {
        DocumentsCommand::Export(args) => export(args).await,
        DocumentsCommand::Import(args) => import(args).await,
    }
}

/// The embedded store of the configured (or sandbox) data directory.
async fn open(location: &crate::cli::Location) -> Result<DocumentStore> {
    let config = crate::config::locate(location)?;
    if let Some(docs) = &config.documents
        && docs.backend != DocumentsBackend::Embedded
    {
        bail!(
            "documents.backend is `{}`: its documents are in Google Firestore, not here \
             (use `gcloud firestore export` there)",
            docs.backend.as_str()
        );
    }
    let path = config.server.data_dir.join("latchkey.db");
    if config.store.backend == latchkey_gateway::config::StoreBackend::Sqlite && !path.exists() {
        bail!("no state store at `{}`", path.display());
    }
    let store = latchkey_gateway::open_documents_for_command(&config)
        .await
        .context("cannot open the state store")?;
    let clock: latchkey_core::SharedClock = Arc::new(latchkey_core::SystemClock);
    Ok(DocumentStore::new(store, clock))
}

async fn export(args: DocumentsExportArgs) -> Result<std::process::ExitCode> {
    let store = open(&args.location).await?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create `{}`", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut documents = store
        .export(args.database.as_deref())
        .map_err(|s| anyhow::anyhow!("cannot export: {}", s.message))?;
    let mut n = 0u64;
    while let Some(doc) = documents.next().await {
        let doc = doc.map_err(|s| anyhow::anyhow!("export failed: {}", s.message))?;
        serde_json::to_writer(&mut out, &proto_json::document_json(&doc))?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.flush()?;
    eprintln!("exported {n} documents");
    Ok(std::process::ExitCode::SUCCESS)
}

async fn import(args: DocumentsImportArgs) -> Result<std::process::ExitCode> {
    let store = open(&args.location).await?;
    let input: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin().lock()))
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("cannot open `{}`", args.file.display()))?,
        ))
    };
    // Checked whole before anything is written: a bad line changes nothing.
    let mut documents = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("line {}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("line {}: not JSON: {e}", i + 1))?;
        let doc = proto_json::document_from_json(&json)
            .map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))?;
        documents.push(doc);
    }
    let n = documents.len();
    store
        .import(documents)
        .await
        .map_err(|s| anyhow::anyhow!("import failed, nothing was written: {}", s.message))?;
    eprintln!("imported {n} documents");
    Ok(std::process::ExitCode::SUCCESS)
}
