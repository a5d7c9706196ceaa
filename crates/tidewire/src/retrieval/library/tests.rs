//! Tests of the library's consistency between records and index.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;
use crate::retrieval::chunk::Chunk;
use crate::store::SqliteStore;

const SETTINGS: LibrarySettings = LibrarySettings {
    chunks: ChunkSettings {
        chars: 1200,
        overlap: 200,
    },
    seed_docs: false,
};

async fn open(dir: &Path) -> (Arc<Library>, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).await.unwrap());
    let library = Library::open(dir, Arc::clone(&store), SETTINGS)
        .await
        .unwrap();
    (library, store)
}

async fn names(library: &Library, query: &str) -> Vec<String> {
    library
        .search(query, &Scope::collection("c"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|hit| hit.document_name)
        .collect()
}

#[tokio::test]
async fn chunks_left_without_a_record_are_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (library, store) = open(dir.path()).await;
    library
        .ingest(
            "kept.md",
            None,
            b"Kept: albatross.".to_vec(),
            Format::Markdown,
            "c",
        )
        .await
        .unwrap();
    // As a stop between the index write and the record would leave it.
    let orphan = Chunk {
        id: "orphan:0".into(),
        document_id: "orphan".into(),
        position: 0,
        heading_path: Vec::new(),
        text: "Orphan: albatross.".into(),
    };
    library
        .index
        .apply(vec![Change::Put {
            document_id: "orphan".into(),
            collection: "c".into(),
            name: "orphan.md".into(),
            chunks: vec![orphan],
        }])
        .await
        .unwrap();
    let mut found = names(&library, "albatross").await;
    found.sort_unstable();
    assert_eq!(found, ["kept.md", "orphan.md"]);
    drop((library, store));

    let (library, _store) = open(dir.path()).await;
    assert_eq!(names(&library, "albatross").await, ["kept.md"]);
}

#[tokio::test]
async fn records_whose_index_is_gone_are_forgotten_so_their_files_go_in_again() {
    let dir = tempfile::tempdir().unwrap();
    let (library, store) = open(dir.path()).await;
    let bytes = b"Cormorants dive.".to_vec();
    let first = library
        .ingest(
            "birds.txt",
            Some("/n/birds.txt"),
            bytes.clone(),
            Format::Text,
            "c",
        )
        .await
        .unwrap();
    assert_eq!(first.status, IngestStatus::Added);
    drop((library, store));
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();

    let (library, _store) = open(dir.path()).await;
    assert!(library.list(None).await.unwrap().is_empty());
    let again = library
        .ingest("birds.txt", Some("/n/birds.txt"), bytes, Format::Text, "c")
        .await
        .unwrap();
    assert_eq!(again.status, IngestStatus::Added);
    assert_eq!(names(&library, "cormorant").await, ["birds.txt"]);
}

#[tokio::test]
async fn concurrent_ingests_of_one_source_make_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let (library, _store) = open(dir.path()).await;
    let ingests = (0..8).map(|i| {
        let library = Arc::clone(&library);
        // Half the same bytes, half other bytes: each write sees the one before.
        let text = format!("Gannets {}.", i % 2);
        async move {
            library
                .ingest(
                    "g.md",
                    Some("/n/g.md"),
                    text.into_bytes(),
                    Format::Markdown,
                    "c",
                )
                .await
                .unwrap()
        }
    });
    let outcomes = futures_util::future::join_all(ingests).await;
    let added = outcomes
        .iter()
        .filter(|o| o.status == IngestStatus::Added)
        .count();
    assert_eq!(added, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| o.document_id == outcomes[0].document_id)
    );
    assert_eq!(library.list(Some("c")).await.unwrap().len(), 1);
    assert_eq!(names(&library, "gannets").await, ["g.md"]);
}

#[tokio::test]
async fn a_batch_with_one_unreadable_document_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (library, _store) = open(dir.path()).await;
    let upload = |name: &str, bytes: &[u8], format| Upload {
        name: name.into(),
        source: None,
        bytes: bytes.to_vec(),
        format,
        collection: "c".into(),
    };
    let error = library
        .ingest_many(vec![
            upload("good.md", b"Puffins nest.", Format::Markdown),
            upload("bad.pdf", b"%PDF-1.4 broken", Format::Pdf),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LibraryError::Parse { name, .. } if name == "bad.pdf"),
        "{error}"
    );
    assert!(library.list(None).await.unwrap().is_empty());
    assert!(names(&library, "puffins").await.is_empty());
}

#[tokio::test]
async fn an_index_of_another_schema_is_started_anew() {
    let dir = tempfile::tempdir().unwrap();
    let (library, store) = open(dir.path()).await;
    library
        .ingest(
            "a.md",
            Some("/n/a.md"),
            b"Terns.".to_vec(),
            Format::Markdown,
            "c",
        )
        .await
        .unwrap();
    drop((library, store));
    // An index as another version would have written it.
    let index_dir = dir.path().join("index");
    std::fs::remove_dir_all(&index_dir).unwrap();
    std::fs::create_dir_all(&index_dir).unwrap();
    let mut other = tantivy::schema::Schema::builder();
    other.add_text_field("body", tantivy::schema::TEXT);
    tantivy::Index::create_in_dir(&index_dir, other.build()).unwrap();

    let (library, _store) = open(dir.path()).await;
    assert!(library.list(None).await.unwrap().is_empty());
    let again = library
        .ingest(
            "a.md",
            Some("/n/a.md"),
            b"Terns.".to_vec(),
            Format::Markdown,
            "c",
        )
        .await
        .unwrap();
    assert_eq!(again.status, IngestStatus::Added);
    assert_eq!(names(&library, "terns").await, ["a.md"]);
}
