//! The answer pipeline end to end: documents added over HTTP, then questions
//! answered by the offline extractive backend through every stage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::upstream::{MockUpstream, backend, start_upstream};
use support::{Event, Stream, TestApp, read_stream_body, read_until, spawn_app_with};
use tidewire::config::{BackendKind, PipelineConfig};

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

/// The corpus answered by a mock language model playing `scenario`.
async fn app_with_model(mock: &MockUpstream, scenario: &str) -> TestApp {
    let url = mock.openai_url(scenario);
    app_with_corpus(|config| {
        let model = backend(BackendKind::Openai, url);
        config.llm.backends.insert("model".into(), model);
        config.llm.default = "model".into();
    })
    .await
}

fn is_stage(name: &'static str) -> impl Fn(&Event) -> bool {
    move |event| event.name == "stage" && event.data["stage"] == name
}

/// The mock's requests that asked to rewrite a question.
fn rewrites(mock: &MockUpstream, scenario: &str) -> Vec<Value> {
    mock.requests(scenario)
        .into_iter()
        .filter(|body| {
            body["messages"][0]["content"]
                .as_str()
                .is_some_and(|system| system.starts_with("Rewrite"))
        })
        .collect()
}

#[tokio::test]
async fn a_follow_up_question_is_searched_as_the_model_rewrote_it() {
    let mock = start_upstream().await;
    let app = app_with_model(&mock, "pipeline").await;
    let first = app
        .chat_stream(json!({"message": "Tell me about volcanoes."}))
        .await;
    assert!(
        rewrites(&mock, "pipeline").is_empty(),
        "a first question has nothing to be made standalone against"
    );
    // Every word of this is a stop word: searched as asked, it finds nothing.
    let follow_up = app
        .chat_stream(json!({
            "conversation_id": first.conversation_id(),
            "message": "What does it do then?"
        }))
        .await;
    let rewrites = rewrites(&mock, "pipeline");
    assert_eq!(rewrites.len(), 1);
    let input = rewrites[0]["messages"][1]["content"].as_str().unwrap();
    assert!(
        input.contains("User: Tell me about volcanoes.")
            && input.ends_with("What does it do then?"),
        "{input}"
    );
    let sources = event(&follow_up, "sources")["sources"].as_array().unwrap();
    assert_eq!(sources[0]["document_name"], "volcanoes.md", "{sources:?}");
    // The question stored and shown is the user's own.
    let messages = app.messages(&first.conversation_id()).await;
    assert_eq!(messages[2]["content"], "What does it do then?");
}

#[tokio::test]
async fn a_cancel_during_query_analysis_stops_before_retrieval() {
    let mock = start_upstream().await;
    let app = app_with_model(&mock, "pipeline-slow-rewrite").await;
    let first = app
        .chat_stream(json!({"message": "Tell me about volcanoes."}))
        .await;
    let response = app
        .chat(json!({"conversation_id": first.conversation_id(), "message": "And then?"}))
        .await;
    let mut body = response.bytes_stream();
    let seen = read_until(&mut body, is_stage("query_analysis")).await;
    let run_id = seen[0].data["run_id"].as_str().unwrap();
    let asked = std::time::Instant::now();
    let (status, _) = app.post_json(&format!("/api/runs/{run_id}/cancel")).await;
    assert_eq!(status, 200);
    let rest = read_stream_body(&mut body).await;
    // The rewrite hangs for 30 s: the cancel did not wait for it.
    assert!(asked.elapsed() < std::time::Duration::from_secs(10));
    let names: Vec<&str> = rest.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["metadata", "done"], "{rest:?}");
    assert_eq!(rest[1].data["status"], "cancelled");
    let messages = app.messages(&first.conversation_id()).await;
    assert_eq!(messages[3]["status"], "cancelled");
}

#[tokio::test]
async fn a_cancel_during_follow_ups_keeps_the_answer_and_its_score() {
    let mock = start_upstream().await;
    let app = app_with_model(&mock, "pipeline-slow-follow-ups").await;
    let response = app.chat(json!({"message": "What is lava?"})).await;
    let mut body = response.bytes_stream();
    let seen = read_until(&mut body, is_stage("follow_ups")).await;
    let names: Vec<&str> = seen.iter().map(|e| e.name.as_str()).collect();
    assert!(names.contains(&"quality_score"), "{names:?}");
    let run_id = seen[0].data["run_id"].as_str().unwrap();
    let asked = std::time::Instant::now();
    let (status, _) = app.post_json(&format!("/api/runs/{run_id}/cancel")).await;
    assert_eq!(status, 200);
    let rest = read_stream_body(&mut body).await;
    assert!(asked.elapsed() < std::time::Duration::from_secs(10));
    let names: Vec<&str> = rest.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["metadata", "done"], "{rest:?}");
    assert_eq!(rest[1].data["status"], "cancelled");
    let conversation = seen[0].data["conversation_id"].as_str().unwrap();
    let answer = &app.messages(conversation).await[1];
    assert_eq!(answer["status"], "cancelled");
    assert_eq!(answer["content"], "Magma comes out [1].");
    assert!(answer["quality_score"].is_number(), "{answer}");
}

#[tokio::test]
async fn follow_ups_come_from_the_model_when_there_is_one() {
    let mock = start_upstream().await;
    let app = app_with_model(&mock, "pipeline").await;
    let stream = app.chat_stream(json!({"message": "What is lava?"})).await;
    assert_eq!(
        event(&stream, "follow_up_questions")["follow_up_questions"],
        json!(["Why do volcanoes erupt?", "What is lava made of?"])
    );
}
