//! `tidewire ingest` run as a user runs it, against the real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tidewire/tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::{TestApp, pdf_with_text, spawn_app_with};
use tokio::process::Command;

async fn ingest(url: &str, args: &[&str]) -> (String, String, Option<i32>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidewire"));
    command
        .arg("ingest")
        .args(["--url", url])
        .args(args)
        .env_remove("TIDEWIRE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .unwrap()
        .unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.code(),
    )
}

async fn documents(app: &TestApp, collection: &str) -> Vec<Value> {
    let (status, body) = app
        .get_json(&format!("/api/documents?collection={collection}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["documents"].as_array().unwrap().clone()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_folder_goes_in_file_by_file_and_prune_forgets_what_is_gone() {
    let app = spawn_app_with(|config| config.documents.seed_docs = false).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    write(
        &root.join("tides.md"),
        b"# Tides\n\nThe moon pulls the sea.",
    );
    write(
        &root.join("sub/volcanoes.txt"),
        b"Magma rises through the crust.",
    );
    write(
        &root.join("sub/bees.HTML"),
        b"<h1>Bees</h1><p>The waggle dance.</p>",
    );
    write(
        &root.join("chess.pdf"),
        &pdf_with_text(&["Castling moves the king."]),
    );
    write(&root.join("broken.pdf"), b"%PDF-1.4 nothing more");
    write(&root.join("picture.png"), b"\x89PNG");
    write(&root.join(".git/notes.md"), b"# Hidden\n\nNot sent.");

    let folder = root.to_str().unwrap();
    let (stdout, stderr, code) = ingest(&app.base, &[folder, "--collection", "kb"]).await;
    // A file that cannot be read fails alone: reported, counted, exit 1.
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("broken.pdf"), "{stderr}");
    assert!(
        stdout.contains("5 files: 4 added, 0 replaced, 0 unchanged, 1 failed, 1 skipped;"),
        "{stdout}"
    );
    assert!(stdout.contains("chunks"), "{stdout}");
    let stored = documents(&app, "kb").await;
    let mut sources: Vec<&str> = stored
        .iter()
        .map(|d| d["source"].as_str().unwrap())
        .collect();
    sources.sort_unstable();
    let expected: Vec<String> = [
        "chess.pdf",
        "sub/bees.HTML",
        "sub/volcanoes.txt",
        "tides.md",
    ]
    .iter()
    .map(|name| root.join(name).to_str().unwrap().to_owned())
    .collect();
    assert_eq!(sources, expected);
    let names: Vec<&str> = stored.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"bees.HTML") && names.contains(&"chess.pdf"),
        "{names:?}"
    );

    // Again, with the broken file fixed: the others are unchanged.
    std::fs::remove_file(root.join("broken.pdf")).unwrap();
    let (stdout, stderr, code) = ingest(&app.base, &[folder, "--collection", "kb"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("4 files: 0 added, 0 replaced, 4 unchanged, 0 failed, 1 skipped;"),
        "{stdout}"
    );

    // A file changed, one gone: replaced, and pruned.
    write(
        &root.join("sub/volcanoes.txt"),
        b"Lava flows from the vent.",
    );
    std::fs::remove_file(root.join("tides.md")).unwrap();
    let (stdout, stderr, code) =
        ingest(&app.base, &[folder, "--collection", "kb", "--prune"]).await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("3 files: 0 added, 1 replaced, 2 unchanged, 0 failed, 1 skipped;"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with(", 1 removed"), "{stdout}");
    let left = documents(&app, "kb").await;
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|d| d["name"] != "tides.md"));
    // Other collections are not touched.
    assert!(documents(&app, "default").await.is_empty());
}

#[tokio::test]
async fn single_files_and_missing_paths() {
    let app = spawn_app_with(|config| config.documents.seed_docs = false).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.markdown");
    write(&file, b"# Notes\n\nA single file.");
    let missing = dir.path().join("missing.md");
    let (stdout, stderr, code) = ingest(
        &app.base,
        &[file.to_str().unwrap(), missing.to_str().unwrap()],
    )
    .await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("missing.md"), "{stderr}");
    assert!(stdout.contains("1 files: 1 added"), "{stdout}");
    assert_eq!(documents(&app, "default").await.len(), 1);
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_list_of_failures() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.md"), b"# A\n\ntext");
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (stdout, stderr, code) = ingest(
        &format!("http://127.0.0.1:{port}"),
        &[dir.path().to_str().unwrap()],
    )
    .await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("cannot reach the tidewire server"),
        "{stderr}"
    );
}
