//! `tidewire ingest`: sends files to a running server's `POST /api/documents`
//! (the server owns the index), in batches of a few dozen files (one index commit
//! per request, which is most of an ingest's time). The server takes a batch whole
//! or not at all, so a refused batch is sent again file by file: a file that
//! cannot be read or parsed is reported and skipped without stopping the rest.
//!
//! Folders are walked (hidden entries such as `.git` are skipped, symbolic links
//! followed); `.md`, `.markdown`, `.txt`, `.html`, `.htm` and `.pdf` files are
//! sent, others counted as skipped. Each file goes with its absolute path as its
//! source, which makes a second run find unchanged files unchanged, and lets
//! `--prune` tell the server which files under the given folders still exist.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use tidewire_protocol::documents::{IngestResponse, IngestStatus, PruneRequest, PruneResponse};
use walkdir::WalkDir;

/// The extensions of the files sent.
const EXTENSIONS: [&str; 6] = ["md", "markdown", "txt", "html", "htm", "pdf"];

/// Files larger than this are not read (the server's limit is far lower).
const MAX_FILE_BYTES: u64 = 1024 * 1024 * 1024;

/// Most files in one request.
const BATCH_FILES: usize = 32;

/// Most bytes of files in one request (under the server's default limit of
/// 16 MiB; a batch the server refuses is sent again file by file).
const BATCH_BYTES: u64 = 4 * 1024 * 1024;

/// Options of `tidewire ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files and folders to ingest; folders are walked.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The collection the documents go into.
    #[arg(long, default_value = "default")]
    collection: String,
    /// Also remove the collection's documents whose files were under the given
    /// folders but are gone.
    #[arg(long)]
    prune: bool,
    /// The tidewire server.
    #[arg(long, env = "TIDEWIRE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key or a JWT, for a server with authentication on.
    #[arg(long, env = "TIDEWIRE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// What happened, for the summary.
#[derive(Debug, Default)]
struct Tally {
    files: usize,
    added: usize,
    replaced: usize,
    unchanged: usize,
    failed: usize,
    skipped: usize,
    chunks: u64,
    bytes: u64,
    removed: Option<usize>,
}

/// Runs `tidewire ingest`: exits 0 when every file was ingested, 1 when some
/// failed (each reported on stderr).
pub fn ingest(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let base = args.url.trim_end_matches('/').to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &args.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token holds characters an HTTP header cannot")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()
        .context("building the HTTP client")?;
    let mut tally = Tally::default();
    let found = find_files(&args.paths, &mut tally);

    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(found.files.len() as u64);
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {wide_msg}")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let report = |bar: &ProgressBar, path: &Path, why: &str| {
        // The server names the file too; the path says it already.
        let name = path.file_name().map(|name| name.to_string_lossy());
        let why = name
            .and_then(|name| why.strip_prefix(&format!("{name}: ")))
            .unwrap_or(why);
        let line = format!("tidewire: {}: {why}", path.display());
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    for (path, why) in &found.unreadable {
        report(&bar, path, why);
    }
    tally.failed += found.unreadable.len();

    for batch in batches(&found.files) {
        // Read the batch; a file that cannot be read fails alone.
        let mut loaded = Vec::with_capacity(batch.len());
        for path in batch {
            tally.files += 1;
            match read(path).await {
                Ok(bytes) => loaded.push((path.as_path(), bytes)),
                Err(why) => {
                    tally.failed += 1;
                    report(&bar, path, &why);
                    bar.inc(1);
                }
            }
        }
        if let Some((path, _)) = loaded.first() {
            bar.set_message(path.display().to_string());
        }
        let sent = send(&client, &base, &args.collection, &loaded).await;
        // A refused batch (a file that cannot be parsed fails all of it) is sent
        // again file by file, to ingest the others and name the one at fault.
        let results = match sent {
            Err(Failure::File(_)) if loaded.len() > 1 => {
                let mut results = Vec::with_capacity(loaded.len());
                for one in &loaded {
                    let result =
                        send(&client, &base, &args.collection, std::slice::from_ref(one)).await;
                    results.push((vec![one.0], result));
                }
                results
            }
            result => vec![(loaded.iter().map(|(path, _)| *path).collect(), result)],
        };
        for (paths, result) in results {
            match result {
                Ok(response) => {
                    for document in response.documents {
                        match document.status {
                            IngestStatus::Added => tally.added += 1,
                            IngestStatus::Replaced => tally.replaced += 1,
                            IngestStatus::Unchanged => tally.unchanged += 1,
                        }
                        tally.chunks += document.chunks;
                        tally.bytes += document.bytes;
                    }
                }
                Err(Failure::File(why)) => {
                    tally.failed += paths.len();
                    for path in &paths {
                        report(&bar, path, &why);
                    }
                }
                Err(Failure::Server(error)) => {
                    bar.abandon();
                    return Err(error);
                }
            }
            bar.inc(paths.len() as u64);
        }
    }
    bar.finish_and_clear();

    if args.prune {
        if found.roots.is_empty() {
            eprintln!("tidewire: --prune removes files gone from folders; no folder was given");
        } else {
            let request = PruneRequest {
                collection: Some(args.collection.clone()),
                roots: found.roots.iter().map(|root| text(root)).collect(),
                present: found.present.iter().map(|path| text(path)).collect(),
            };
            let response = client
                .post(format!("{base}/api/documents/prune"))
                .json(&request)
                .send()
                .await
                .with_context(|| format!("cannot reach the tidewire server at {base}"))?;
            let response: PruneResponse = answer(response)
                .await
                .map_err(|why| anyhow::anyhow!("the server refused to prune: {why}"))?;
            tally.removed = Some(response.removed.len());
        }
    }

    println!("{}", summary(&tally, started.elapsed()));
    Ok(if tally.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The files to send, the folders walked, every file with a known extension
/// found under them (sent or not), and what could not be read.
#[derive(Debug, Default)]
struct Found {
    files: Vec<PathBuf>,
    roots: Vec<PathBuf>,
    present: BTreeSet<PathBuf>,
    unreadable: Vec<(PathBuf, String)>,
}

fn find_files(paths: &[PathBuf], tally: &mut Tally) -> Found {
    let mut found = Found::default();
    for path in paths {
        // Sources are absolute and canonical, so the same file is the same
        // document whichever way it is named.
        let path = match std::fs::canonicalize(path) {
            Ok(path) => path,
            Err(error) => {
                found.unreadable.push((path.clone(), error.to_string()));
                continue;
            }
        };
        if !path.is_dir() {
            if supported(&path) {
                found.present.insert(path.clone());
                found.files.push(path);
            } else {
                tally.skipped += 1;
            }
            continue;
        }
        found.roots.push(path.clone());
        let walk = WalkDir::new(&path)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|entry| entry.depth() == 0 || !hidden(entry.file_name()));
        for entry in walk {
            match entry {
                Ok(entry) if entry.file_type().is_file() => {
                    let file = entry.into_path();
                    if supported(&file) {
                        found.present.insert(file.clone());
                        found.files.push(file);
                    } else {
                        tally.skipped += 1;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    let at = error.path().unwrap_or(&path).to_owned();
                    found.unreadable.push((at, error.to_string()));
                }
            }
        }
    }
    // A file named twice (as itself and inside a folder) is sent once.
    let mut seen = BTreeSet::new();
    found.files.retain(|file| seen.insert(file.clone()));
    found
}

/// Why a file was not ingested.
enum Failure {
    /// This file: reported, and the rest go on.
    File(String),
    /// The server cannot be reached: nothing else can go either.
    Server(anyhow::Error),
}

/// The files in requests of at most [`BATCH_FILES`] files and [`BATCH_BYTES`]
/// bytes (a larger file goes alone): one index commit per request, not per file.
fn batches(files: &[PathBuf]) -> Vec<&[PathBuf]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, file) in files.iter().enumerate() {
        let size = std::fs::metadata(file).map_or(0, |metadata| metadata.len());
        if i > start && (i - start == BATCH_FILES || bytes + size > BATCH_BYTES) {
            batches.push(&files[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < files.len() {
        batches.push(&files[start..]);
    }
    batches
}

async fn read(path: &Path) -> Result<Vec<u8>, String> {
    let size = tokio::fs::metadata(path)
        .await
        .map_err(|error| error.to_string())?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(format!("{} is too large to send", HumanBytes(size)));
    }
    tokio::fs::read(path)
        .await
        .map_err(|error| error.to_string())
}

/// One request with these files, each with its path as its source.
async fn send(
    client: &reqwest::Client,
    base: &str,
    collection: &str,
    files: &[(&Path, Vec<u8>)],
) -> Result<IngestResponse, Failure> {
    if files.is_empty() {
        return Ok(IngestResponse {
            documents: Vec::new(),
        });
    }
    let mut form = reqwest::multipart::Form::new().text("collection", collection.to_owned());
    for (path, bytes) in files {
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| text(path));
        // A `source` field goes with the `file` part after it.
        form = form.text("source", text(path)).part(
            "file",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name(name),
        );
    }
    let response = client
        .post(format!("{base}/api/documents"))
        .multipart(form)
        .send()
        .await
        .map_err(|error| {
            if error.is_connect() {
                Failure::Server(
                    anyhow::Error::new(error)
                        .context(format!("cannot reach the tidewire server at {base}")),
                )
            } else {
                Failure::File(error.to_string())
            }
        })?;
    answer(response).await.map_err(Failure::File)
}

/// The body of a successful answer, or the server's error message.
async fn answer<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Result<T, String> {
    let status = response.status();
    let body = response.bytes().await.map_err(|error| error.to_string())?;
    if status.is_success() {
        return serde_json::from_slice(&body)
            .map_err(|error| format!("unexpected answer from the server: {error}"));
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|body| body["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    Err(format!("{message} ({status})"))
}

fn supported(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| {
            EXTENSIONS
                .iter()
                .any(|known| extension.eq_ignore_ascii_case(known))
        })
}

fn hidden(name: &std::ffi::OsStr) -> bool {
    name.to_str().is_some_and(|name| name.starts_with('.'))
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn summary(tally: &Tally, elapsed: Duration) -> String {
    let mut line = format!(
        "{} files: {} added, {} replaced, {} unchanged, {} failed, {} skipped; {} chunks, {} in {:.1}s",
        tally.files,
        tally.added,
        tally.replaced,
        tally.unchanged,
        tally.failed,
        tally.skipped,
        tally.chunks,
        HumanBytes(tally.bytes),
        elapsed.as_secs_f64()
    );
    if let Some(removed) = tally.removed {
        let _ = write!(line, ", {removed} removed");
    }
    line
}
