//! Documents end to end: uploads over HTTP in every format, the records, the
//! tantivy index, and the search the pipeline will call, on a real server with a
//! real SQLite database and index.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{TestApp, pdf_with_text, spawn_app_and_state, spawn_app_with, spawn_on};
use tidewire::retrieval::{Retriever, Scope};

/// No seeded documentation: these tests count documents.
fn unseeded(config: &mut tidewire::Config) {
    config.documents.seed_docs = false;
}

const TIDES: &str = "# Tides\n\nTides are the rise and fall of the sea.\n\n\
    ## Causes\n\nThe gravity of the moon pulls the ocean towards it, and the sun adds a \
    smaller pull. The moon causes two bulges of water on opposite sides of the earth.\n\n\
    ## Spring and neap tides\n\nWhen the sun and the moon line up, spring tides have the \
    largest tidal range; at quarter moon, neap tides have the smallest.\n";

const SOURDOUGH: &str = "# Sourdough bread\n\nA starter of flour and water ferments with wild \
    yeast and lactic bacteria.\n\n## Baking\n\nBake the loaf in a very hot oven, about 250 \
    degrees Celsius, inside a covered pot for the first twenty minutes so the crust stays \
    soft while the bread rises.\n";

const VOLCANOES: &str = "Volcanoes\n\nA volcano forms where magma from the mantle rises \
    through the crust.\n\nWhen magma reaches the surface it is called lava; an eruption \
    throws out lava, ash and gases. Most volcanoes sit where tectonic plates meet.\n";

const BEES: &str = "<html><head><title>Bees</title><script>track()</script></head><body>\
    <nav><a href='/'>Home</a> <a href='/moon'>Moon and tides</a></nav>\
    <h1>Honeybees</h1><p>A colony lives in a hive with one queen and thousands of workers.</p>\
    <h2>The waggle dance</h2><p>A forager tells the other bees where flowers are with a \
    waggle dance: the angle gives the direction and the length gives the distance to the \
    nectar.</p></body></html>";

const CHESS: [&str; 4] = [
    "Chess rules for beginners.",
    "A player may castle when neither the king nor the rook has moved,",
    "the squares between them are empty, and the king is not in check.",
    "Checkmate ends the game.",
];

const LIGHTHOUSES: &str = "Lighthouses warn ships of rocks and coasts at night. Augustin \
    Fresnel invented the Fresnel lens in 1822: rings of glass prisms that bend the light \
    of a small lamp into a beam seen twenty miles away. Keepers once wound the clockwork \
    that turned the lens.";

/// POSTs a multipart form of `(name, bytes)` files, with the given extra fields.
async fn upload(app: &TestApp, files: &[(&str, Vec<u8>)], fields: &[(&str, &str)]) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    for (name, bytes) in files {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.to_string()),
        );
    }
    let response = app
        .client
        .post(app.url("/api/documents"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn upload_text(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/api/documents"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn list(app: &TestApp, collection: Option<&str>) -> Vec<Value> {
    let path = match collection {
        Some(collection) => format!("/api/documents?collection={collection}"),
        None => "/api/documents".to_owned(),
    };
    let (status, body) = app.get_json(&path).await;
    assert_eq!(status, 200, "{body}");
    body["documents"].as_array().unwrap().clone()
}

/// The names of the documents of the best hits.
async fn found(state: &tidewire::AppState, question: &str, scope: &Scope) -> Vec<String> {
    state
        .documents
        .search(question, scope, 3)
        .await
        .unwrap()
        .into_iter()
        .map(|hit| hit.document_name)
        .collect()
}

async fn ingest_corpus(app: &TestApp, collection: &str) {
    let (status, body) = upload(
        app,
        &[
            ("tides.md", TIDES.into()),
            ("sourdough.markdown", SOURDOUGH.into()),
            ("volcanoes.txt", VOLCANOES.into()),
            ("bees.html", BEES.into()),
            ("chess.pdf", pdf_with_text(&CHESS)),
        ],
        &[("collection", collection)],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let documents = body["documents"].as_array().unwrap();
    assert_eq!(documents.len(), 5);
    for document in documents {
        assert_eq!(document["status"], "added", "{document}");
        assert_eq!(document["collection"], collection);
        assert!(document["chunks"].as_u64().unwrap() >= 1, "{document}");
    }
    let (status, body) = upload_text(
        app,
        json!({"name": "lighthouses", "text": LIGHTHOUSES, "collection": collection}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn every_format_is_ingested_and_questions_find_their_document() {
    let (app, state) = spawn_app_and_state(unseeded).await;
    ingest_corpus(&app, "default").await;

    let documents = list(&app, None).await;
    let mut names: Vec<(&str, &str)> = documents
        .iter()
        .map(|d| (d["name"].as_str().unwrap(), d["format"].as_str().unwrap()))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            ("bees.html", "html"),
            ("chess.pdf", "pdf"),
            ("lighthouses", "text"),
            ("sourdough.markdown", "markdown"),
            ("tides.md", "markdown"),
            ("volcanoes.txt", "text"),
        ]
    );
    let tides = documents.iter().find(|d| d["name"] == "tides.md").unwrap();
    let (status, one) = app
        .get_json(&format!("/api/documents/{}", tides["id"].as_str().unwrap()))
        .await;
    assert_eq!((status, &one), (200, tides));
    assert_eq!(tides["source"], "upload");
    assert_eq!(tides["bytes"], TIDES.len());
    assert_eq!(tides["content_hash"].as_str().unwrap().len(), 64);

    let scope = Scope::collection("default");
    for (question, expected) in [
        ("How does the moon cause the tides?", "tides.md"),
        (
            "What temperature should the oven be for sourdough bread?",
            "sourdough.markdown",
        ),
        (
            "What happens when magma reaches the surface?",
            "volcanoes.txt",
        ),
        (
            "How do bees tell each other where the flowers are?",
            "bees.html",
        ),
        ("When can a player castle in chess?", "chess.pdf"),
        ("Who invented the lens of lighthouses?", "lighthouses"),
        ("neap tides: \"smallest\" range?", "tides.md"),
    ] {
        let names = found(&state, question, &scope).await;
        assert_eq!(
            names.first().map(String::as_str),
            Some(expected),
            "{question}: {names:?}"
        );
    }

    // A hit carries its chunk, document and headings, from the index alone.
    let hits = state
        .documents
        .search("spring tides tidal range", &scope, 1)
        .await
        .unwrap();
    let hit = &hits[0];
    assert_eq!(hit.heading_path, ["Tides", "Spring and neap tides"]);
    assert!(hit.text.contains("largest tidal range"), "{}", hit.text);
    assert_eq!(hit.document_id, tides["id"].as_str().unwrap());
    assert!(hit.chunk_id.starts_with(&format!("{}:", hit.document_id)));
    assert!(hit.score > 0.0);

    // What is dropped from a page is not searchable: the navigation's words.
    let hits = state.documents.search("Home", &scope, 10).await.unwrap();
    assert!(
        hits.iter().all(|hit| hit.document_name != "bees.html"),
        "{hits:?}"
    );
}

#[tokio::test]
async fn questions_are_never_syntax_errors() {
    let (app, state) = spawn_app_and_state(unseeded).await;
    ingest_corpus(&app, "default").await;
    let scope = Scope::collection("default");
    for question in [
        "what is a tide?",
        "\"unbalanced quote",
        "title: moon AND OR NOT",
        "-moon +sun ^2 ~ * [a TO b] {x} (tides",
        "field:value: :: \\ / ! ?",
        "",
        "   ",
        "¿Qué es la marea? 潮汐とは",
    ] {
        let hits = state.documents.search(question, &scope, 5).await;
        assert!(hits.is_ok(), "{question:?}: {hits:?}");
    }
    let hits = state
        .documents
        .search("title: moon AND OR NOT", &scope, 5)
        .await
        .unwrap();
    assert_eq!(hits[0].document_name, "tides.md");
    assert!(
        state
            .documents
            .search("moon", &scope, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn search_stays_within_its_collection_and_documents() {
    let (app, state) = spawn_app_and_state(unseeded).await;
    ingest_corpus(&app, "science").await;
    let (status, body) = upload_text(
        &app,
        json!({"name": "moon-notes.md", "text": "# Moon\n\nThe moon pulls the tides.", "collection": "notes"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let notes_id = body["documents"][0]["document_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let in_notes = found(&state, "moon tides", &Scope::collection("notes")).await;
    assert_eq!(in_notes, ["moon-notes.md"]);
    let in_science = found(&state, "moon tides", &Scope::collection("science")).await;
    assert!(!in_science.is_empty());
    assert!(!in_science.contains(&"moon-notes.md".to_owned()));
    assert!(
        found(&state, "moon tides", &Scope::collection("default"))
            .await
            .is_empty()
    );

    let science = list(&app, Some("science")).await;
    assert_eq!(science.len(), 6);
    assert_eq!(list(&app, Some("notes")).await.len(), 1);
    let id_of = |name: &str| {
        science.iter().find(|d| d["name"] == name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let only = |ids: Vec<String>| Scope {
        collection: "science".into(),
        documents: Some(ids),
    };
    let names = found(&state, "moon tides bees", &only(vec![id_of("bees.html")])).await;
    assert_eq!(names, ["bees.html"]);
    let names = found(
        &state,
        "moon tides bees magma",
        &only(vec![id_of("bees.html"), id_of("volcanoes.txt")]),
    )
    .await;
    assert!(
        names
            .iter()
            .all(|n| n == "bees.html" || n == "volcanoes.txt"),
        "{names:?}"
    );
    assert!(found(&state, "moon", &only(vec![])).await.is_empty());
    // A document of another collection is not in this one's scope.
    assert!(
        found(&state, "moon", &only(vec![notes_id]))
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn unchanged_documents_are_left_alone_and_changed_ones_replaced() {
    let (app, state) = spawn_app_and_state(unseeded).await;
    let scope = Scope::collection("default");
    let body = |text: &str| json!({"name": "harbour.md", "text": text});
    let first = "# Harbour\n\nThe harbour master keeps a ledger of albatross sightings.";
    let (status, added) = upload_text(&app, body(first)).await;
    assert_eq!(status, 201, "{added}");
    let id = added["documents"][0]["document_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (status, again) = upload_text(&app, body(first)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["documents"][0]["status"], "unchanged");
    assert_eq!(again["documents"][0]["document_id"], id.as_str());
    assert_eq!(
        again["documents"][0]["chunks"],
        added["documents"][0]["chunks"]
    );

    let second = "# Harbour\n\nThe harbour master now counts cormorants instead.";
    let (status, replaced) = upload_text(&app, body(second)).await;
    assert_eq!(status, 201, "{replaced}");
    assert_eq!(replaced["documents"][0]["status"], "replaced");
    assert_eq!(replaced["documents"][0]["document_id"], id.as_str());
    assert!(found(&state, "albatross", &scope).await.is_empty());
    assert_eq!(found(&state, "cormorants", &scope).await, ["harbour.md"]);
    let documents = list(&app, None).await;
    assert_eq!(documents.len(), 1);
    assert_eq!(documents[0]["bytes"], second.len());

    // The same name in another collection is another document.
    let (status, other) = upload_text(
        &app,
        json!({"name": "harbour.md", "text": first, "collection": "b"}),
    )
    .await;
    assert_eq!(
        (status, other["documents"][0]["status"].as_str()),
        (201, Some("added"))
    );

    // Deleting removes the record and the chunks.
    let response = app
        .client
        .delete(app.url(&format!("/api/documents/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(found(&state, "cormorants", &scope).await.is_empty());
    assert_eq!(list(&app, Some("default")).await.len(), 0);
    let response = app
        .client
        .delete(app.url(&format!("/api/documents/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "document_not_found");
}

#[tokio::test]
async fn files_are_documents_by_source_and_prune_forgets_the_gone_ones() {
    let (app, state) = spawn_app_and_state(unseeded).await;
    let app = &app;
    let file = |source: &'static str, name: &'static str, text: &'static str| async move {
        upload(
            app,
            &[(name, text.into())],
            &[("source", source), ("collection", "kb")],
        )
        .await
    };
    let (status, body) = file("/docs/a/tides.md", "tides.md", TIDES).await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = file("/docs/a/deep/bread.md", "bread.md", SOURDOUGH).await;
    assert_eq!(status, 201);
    let (status, _) = file("/docs/b/volcanoes.txt", "volcanoes.txt", VOLCANOES).await;
    assert_eq!(status, 201);
    // Same name, other path: another document.
    let (status, body) = file(
        "/docs/b/tides.md",
        "tides.md",
        "# Other\n\nAnother tides file.",
    )
    .await;
    assert_eq!(
        (status, body["documents"][0]["status"].as_str()),
        (201, Some("added"))
    );
    let (status, body) = file("/docs/a/tides.md", "tides.md", TIDES).await;
    assert_eq!(
        (status, body["documents"][0]["status"].as_str()),
        (200, Some("unchanged"))
    );
    assert_eq!(list(app, Some("kb")).await.len(), 4);

    // Under /docs/a only tides.md is left; /docs/b is not looked at.
    let response = app
        .client
        .post(app.url("/api/documents/prune"))
        .json(&json!({"collection": "kb", "roots": ["/docs/a"], "present": ["/docs/a/tides.md"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let pruned: Value = response.json().await.unwrap();
    let removed: Vec<&str> = pruned["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["source"].as_str().unwrap())
        .collect();
    assert_eq!(removed, ["/docs/a/deep/bread.md"]);
    let left: Vec<String> = list(app, Some("kb"))
        .await
        .iter()
        .map(|d| d["source"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left.len(), 3);
    assert!(!left.contains(&"/docs/a/deep/bread.md".to_owned()));
    assert!(
        found(&state, "sourdough oven", &Scope::collection("kb"))
            .await
            .is_empty()
    );

    let response = app
        .client
        .post(app.url("/api/documents/prune"))
        .json(&json!({"roots": ["relative/path"], "present": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
}

#[tokio::test]
async fn a_broken_file_fails_its_batch_by_name_and_others_still_go_in() {
    let app = spawn_app_with(unseeded).await;
    let (status, body) = upload(
        &app,
        &[
            ("good.md", TIDES.into()),
            ("broken.pdf", b"%PDF-1.4 this is not a pdf".to_vec()),
        ],
        &[],
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "unreadable_document");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broken.pdf"),
        "{body}"
    );
    // All or nothing: the good file of that batch is not in.
    assert!(list(&app, None).await.is_empty());

    let (status, _) = upload(&app, &[("good.md", TIDES.into())], &[]).await;
    assert_eq!(status, 201);
    let (status, body) = upload(&app, &[("binary.txt", b"\x89PNG\0\0\0".to_vec())], &[]).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("binary.txt")
    );
    let (status, body) = upload(&app, &[("empty.md", Vec::new())], &[]).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(list(&app, None).await.len(), 1);
}

#[tokio::test]
async fn client_mistakes_get_their_own_status() {
    let app = spawn_app_with(|config| {
        unseeded(config);
        config.documents.max_upload_bytes = 4096;
    })
    .await;
    let post = |content_type: &'static str, body: Vec<u8>| {
        app.client
            .post(app.url("/api/documents"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let expect = |response: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(response.status().as_u16(), status);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    };
    // Multipart without a boundary, or cut short.
    expect(
        post("multipart/form-data", b"x".to_vec()).await.unwrap(),
        400,
        "invalid_multipart",
    )
    .await;
    expect(
        post("multipart/form-data; boundary=XYZ", b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.md\"\r\n\r\nno end".to_vec())
            .await
            .unwrap(),
        400,
        "invalid_multipart",
    )
    .await;
    expect(
        post("text/plain", b"hello".to_vec()).await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    expect(
        post("application/json", b"{not json".to_vec())
            .await
            .unwrap(),
        400,
        "invalid_json",
    )
    .await;
    expect(
        post("application/json", br#"{"name": "a"}"#.to_vec())
            .await
            .unwrap(),
        422,
        "invalid_request",
    )
    .await;

    let (status, body) = upload(&app, &[("picture.png", b"png".to_vec())], &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (415, Some("unsupported_format"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("picture.png")
    );
    let (status, body) = upload(&app, &[], &[("collection", "x")]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("no_files"))
    );
    let (status, body) = upload(
        &app,
        &[("a.md", b"# A\n\ntext".to_vec())],
        &[("colour", "red")],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("unknown_field"))
    );
    let (status, body) =
        upload_text(&app, json!({"name": "a", "text": "t", "format": "pdf"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_format"))
    );
    let (status, body) = upload_text(&app, json!({"name": " ", "text": "t"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_document"))
    );
    let (status, body) = upload_text(
        &app,
        json!({"name": "a", "text": "t", "collection": "a\nb"}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_document"))
    );

    // Over documents.max_upload_bytes, as a file or as JSON.
    let big = "word ".repeat(2000).into_bytes();
    let (status, body) = upload(&app, &[("big.txt", big.clone())], &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("upload_too_large"))
    );
    let (status, body) = upload_text(
        &app,
        json!({"name": "big", "text": String::from_utf8(big).unwrap()}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("upload_too_large"))
    );

    let (status, body) = app.get_json("/api/documents?collection=").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app.get_json("/api/documents/nope").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("document_not_found"))
    );
    let response = app
        .client
        .delete(app.url("/api/documents/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(list(&app, None).await.is_empty());
}

#[tokio::test]
async fn uploads_may_be_larger_than_other_bodies() {
    let app = spawn_app_with(|config| {
        unseeded(config);
        config.max_body_bytes = 64 * 1024;
        config.max_message_bytes = 1024;
    })
    .await;
    let text = "The tide comes in. ".repeat(20_000);
    assert!(text.len() > 256 * 1024);
    let (status, body) = upload(&app, &[("long.txt", text.clone().into_bytes())], &[]).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["documents"][0]["chunks"].as_u64().unwrap() > 100);
    // Chat keeps its own limit.
    let response = app
        .client
        .post(app.url("/api/chat"))
        .json(&json!({"message": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[tokio::test]
async fn a_new_data_directory_is_seeded_with_the_documentation_once() {
    let (app, state) = spawn_app_and_state(|_| {}).await;
    let seeded = app
        .eventually(Duration::from_secs(60), || async {
            let documents = list(&app, Some("default")).await;
            (documents.len() == 2).then_some(documents)
        })
        .await;
    let mut names: Vec<&str> = seeded.iter().map(|d| d["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["README.md", "design-notes.md"]);
    assert!(
        seeded
            .iter()
            .all(|d| d["source"].as_str().unwrap().starts_with("tidewire:"))
    );
    let hits = state
        .documents
        .search(
            "How do I resume a stream with Last-Event-ID?",
            &Scope::collection("default"),
            3,
        )
        .await
        .unwrap();
    assert!(!hits.is_empty());
    assert!(
        hits.iter()
            .all(|hit| hit.document_name == "README.md" || hit.document_name == "design-notes.md")
    );

    // Deleted documentation stays deleted across a restart.
    let readme = seeded.iter().find(|d| d["name"] == "README.md").unwrap();
    let response = app
        .client
        .delete(app.url(&format!(
            "/api/documents/{}",
            readme["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    drop(state);
    let (result, data_dir) = app.shutdown().await;
    result.unwrap();
    let restarted = spawn_on(tidewire::Config::default(), data_dir).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let names: Vec<String> = list(&restarted, None)
        .await
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["design-notes.md"]);
}

#[tokio::test]
async fn seed_docs_false_leaves_a_new_data_directory_empty() {
    let app = spawn_app_with(unseeded).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(list(&app, None).await.is_empty());
    assert!(!app.data_dir.path().join("documents.seeded").exists());
}

#[tokio::test]
async fn documents_survive_a_restart() {
    let (app, state) = spawn_app_and_state(unseeded).await;
    ingest_corpus(&app, "default").await;
    drop(state);
    let (result, data_dir) = app.shutdown().await;
    result.unwrap();
    let config = tidewire::Config {
        data_dir: data_dir.path().to_owned(),
        documents: tidewire::config::DocumentsConfig {
            seed_docs: false,
            ..Default::default()
        },
        ..tidewire::Config::default()
    };
    let restarted = spawn_on(config, data_dir).await;
    assert_eq!(list(&restarted, None).await.len(), 6);
    let (status, body) = upload_text(
        &restarted,
        json!({"name": "lighthouses", "text": LIGHTHOUSES}),
    )
    .await;
    assert_eq!(
        (status, body["documents"][0]["status"].as_str()),
        (200, Some("unchanged"))
    );
}
