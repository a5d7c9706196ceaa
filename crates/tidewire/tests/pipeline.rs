//! The answer pipeline end to end: documents added over HTTP, then questions
//! answered by the offline extractive backend through every stage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{Stream, TestApp, spawn_app_with};
use tidewire::config::PipelineConfig;

const TIDES: &str = "# Tides\n\nTides are the rise and fall of the sea. They are caused by the \
    gravity of the Moon and, to a lesser degree, of the Sun.\n\n## Spring tides\n\nWhen the Sun \
    and the Moon line up, their pulls add up and the tides are strongest: these are spring tides.";
const VOLCANOES: &str = "# Volcanoes\n\nA volcano erupts when magma rises through the crust and \
    reaches the surface. Lava is magma that has reached the surface.";
const BREAD: &str = "# Bread\n\nBread is made of flour, water, salt and yeast. The yeast makes \
    the dough rise before it is baked.";

/// The whole pipeline with the offline answerer, no seeded documentation, and a
/// small corpus.
async fn app_with_corpus(adjust: impl FnOnce(&mut tidewire::Config)) -> TestApp {
    let app = spawn_app_with(|config| {
        config.pipeline = PipelineConfig::default();
        config.llm.default = "extractive".into();
        config.default_tokens_per_second = 0.0;
        config.documents.seed_docs = false;
        adjust(config);
    })
    .await;
    for (name, text) in [
        ("tides.md", TIDES),
        ("volcanoes.md", VOLCANOES),
        ("bread.md", BREAD),
    ] {
        let response = app
            .client
            .post(app.url("/api/documents"))
            .json(&json!({"name": name, "text": text, "format": "markdown"}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    }
    app
}

fn names(stream: &Stream) -> Vec<String> {
    stream
        .events
        .iter()
        .map(|event| match event.name.as_str() {
            "stage" => format!("stage {}", event.data["stage"].as_str().unwrap()),
            "token" => "token".to_owned(),
            other => other.to_owned(),
        })
        .fold(Vec::new(), |mut names, name| {
            if !(name == "token" && names.last().is_some_and(|last| last == "token")) {
                names.push(name);
            }
            names
        })
}

fn event<'a>(stream: &'a Stream, name: &str) -> &'a Value {
    &stream
        .events
        .iter()
        .find(|event| event.name == name)
        .unwrap_or_else(|| panic!("no {name} event"))
        .data
}

#[tokio::test]
async fn every_stage_in_order_with_sources_a_score_and_follow_ups() {
    let app = app_with_corpus(|_| {}).await;
    let stream = app
        .chat_stream(json!({"message": "What causes tides?"}))
        .await;
    assert_eq!(
        names(&stream),
        [
            "run",
            "stage query_analysis",
            "stage retrieval",
            "sources",
            "stage generation",
            "token",
            "stage scoring",
            "quality_score",
            "stage follow_ups",
            "follow_up_questions",
            "metadata",
            "done"
        ]
    );
    let sources = event(&stream, "sources")["sources"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(sources[0]["document_name"], "tides.md");
    let score = sources[0]["score"].as_f64().unwrap();
    assert!(score > 0.0 && score < 1.0, "{score}");
    let text = stream.text();
    assert!(text.contains("caused by the gravity of the Moon"), "{text}");
    assert!(text.contains("[1]"), "cites its source: {text}");
    let quality = event(&stream, "quality_score")["quality_score"]
        .as_f64()
        .unwrap();
    assert!(
        quality > 0.9,
        "an answer made of the sources is supported: {quality}"
    );
    let follow_ups = event(&stream, "follow_up_questions")["follow_up_questions"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!follow_ups.is_empty() && follow_ups.len() <= 3);
    let metadata = event(&stream, "metadata");
    assert_eq!(metadata["model"], "extractive");
    for stage in [
        "query_analysis",
        "retrieval",
        "generation",
        "scoring",
        "follow_ups",
    ] {
        assert!(metadata["stages"][stage].is_u64(), "{stage}: {metadata}");
    }
    // What was streamed is what is stored.
    let answer = &app.messages(&stream.conversation_id()).await[1];
    assert_eq!(answer["content"], text);
    assert_eq!(answer["sources"][0]["document_name"], "tides.md");
    assert_eq!(answer["quality_score"].as_f64(), Some(quality));
    assert_eq!(
        answer["follow_up_questions"].as_array().unwrap(),
        &follow_ups
    );
}

#[tokio::test]
async fn a_question_the_documents_do_not_cover_is_answered_plainly_and_scores_low() {
    let app = app_with_corpus(|_| {}).await;
    let stream = app
        .chat_stream(json!({"message": "Who won the chess championship?"}))
        .await;
    assert_eq!(
        stream.text(),
        tidewire::llm::NOTHING_FOUND,
        "says so plainly"
    );
    let quality = event(&stream, "quality_score")["quality_score"]
        .as_f64()
        .unwrap();
    assert!(
        quality < 0.2,
        "an answer the sources do not support scores low: {quality}"
    );
    assert_eq!(stream.last().data["status"], "complete");
}

#[tokio::test]
async fn retrieval_stays_in_the_requested_collection() {
    let app = app_with_corpus(|_| {}).await;
    let stream = app
        .chat_stream(
            json!({"message": "What causes tides?", "options": {"collection": "elsewhere"}}),
        )
        .await;
    assert!(
        event(&stream, "sources")["sources"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(stream.text(), tidewire::llm::NOTHING_FOUND);
}

#[tokio::test]
async fn stages_can_be_switched_off() {
    let app = app_with_corpus(|config| {
        config.pipeline.query_analysis = false;
        config.pipeline.scoring = false;
        config.pipeline.follow_ups = false;
    })
    .await;
    let stream = app
        .chat_stream(json!({"message": "How is bread made?"}))
        .await;
    assert_eq!(
        names(&stream),
        [
            "run",
            "stage retrieval",
            "sources",
            "stage generation",
            "token",
            "metadata",
            "done"
        ]
    );
    assert!(stream.text().contains("flour"), "{}", stream.text());
}

#[tokio::test]
async fn a_cancel_during_generation_stops_the_stages_after_it() {
    let app = app_with_corpus(|config| config.default_tokens_per_second = 2.0).await;
    let response = app.chat(json!({"message": "What causes tides?"})).await;
    let mut body = response.bytes_stream();
    let seen = support::read_events(&mut body, 6).await;
    assert_eq!(seen.last().unwrap().name, "token");
    let run_id = seen[0].data["run_id"].as_str().unwrap();
    let (status, _) = app.post_json(&format!("/api/runs/{run_id}/cancel")).await;
    assert_eq!(status, 200);
    let rest = support::read_stream_body(&mut body).await;
    let names: Vec<&str> = rest.iter().map(|e| e.name.as_str()).collect();
    assert!(!names.contains(&"quality_score") && !names.contains(&"follow_up_questions"));
    assert_eq!(rest.last().unwrap().data["status"], "cancelled");
}
