//! Real model upstreams, played back by a mock server on a random port: the wire
//! shape of each server, every error shape, timeouts, retries, fallback and cancel.
//! Each case asserts the exact events a client receives and what is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::upstream::{MockUpstream, backend, start_upstream};
use support::{Stream, TestApp, read_events, spawn_app_with};
use tidewire::Config;
use tidewire::config::{BackendConfig, BackendKind, Secret, Span};

/// The server with `backend` as its default backend, named `up`.
async fn app_with(backend: BackendConfig, tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(|config| {
        config.llm.backends.insert("up".into(), backend);
        config.llm.default = "up".into();
        tweak(config);
    })
    .await
}

async fn openai_app(mock: &MockUpstream, scenario: &str) -> TestApp {
    app_with(
        backend(BackendKind::Openai, mock.openai_url(scenario)),
        |_| {},
    )
    .await
}

async fn ask(app: &TestApp, message: &str) -> Stream {
    app.chat_stream(json!({"message": message})).await
}

/// The events as short strings: `token Hello`, `error upstream_error`, `done failed`,
/// and `metadata` with the model, usage and finish reason.
fn shape(stream: &Stream) -> Vec<String> {
    stream
        .events
        .iter()
        .map(|event| match event.name.as_str() {
            "token" => format!("token {}", event.data["token"].as_str().unwrap()),
            "stage" => format!("stage {}", event.data["stage"].as_str().unwrap()),
            "error" => format!("error {}", event.data["code"].as_str().unwrap()),
            "done" => format!("done {}", event.data["status"].as_str().unwrap()),
            "metadata" => {
                let usage = &event.data["usage"];
                let mut text = format!(
                    "metadata {} {}/{}",
                    event.data["model"].as_str().unwrap(),
                    usage["prompt_tokens"],
                    usage["completion_tokens"]
                );
                if let Some(reason) = event.data["finish_reason"].as_str() {
                    text.push_str(&format!(" {reason}"));
                }
                if event.data["usage_estimated"] == json!(true) {
                    text.push_str(" estimated");
                }
                text
            }
            other => other.to_owned(),
        })
        .collect()
}

fn error_message(stream: &Stream) -> String {
    let error = stream
        .events
        .iter()
        .find(|e| e.name == "error")
        .expect("an error event");
    error.data["error"].as_str().unwrap().to_owned()
}

async fn stored_answer(app: &TestApp, stream: &Stream) -> Value {
    app.messages(&stream.conversation_id()).await[1].clone()
}

#[tokio::test]
async fn openai_stream_with_usage_chunk_and_obfuscation() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "openai").await;
    let stream = ask(&app, "hello?").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token Hello",
            "token  world",
            "metadata test-model 9/2 stop",
            "done complete"
        ]
    );
    let stored = stored_answer(&app, &stream).await;
    assert_eq!(stored["content"], "Hello world");
    assert_eq!(stored["status"], "complete");
    assert_eq!(stored["model"], "test-model");
    assert_eq!(stored["usage"]["prompt_tokens"], 9);
    let request = &mock.requests("openai")[0];
    assert_eq!(request["model"], "test-model");
    assert_eq!(request["stream"], true);
    assert_eq!(request["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        request["messages"],
        json!([{"role": "user", "content": "hello?"}])
    );
    // No limit asked for, none configured: the model answers up to its own.
    assert!(request.get("max_tokens").is_none(), "{request}");
}

#[tokio::test]
async fn vllm_error_after_tokens_keeps_the_partial_answer() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "vllm-error").await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token Partial",
            "token  answer",
            "error upstream_error",
            "metadata test-model 1/2 estimated",
            "done failed"
        ]
    );
    assert!(error_message(&stream).contains("CUDA out of memory (InternalServerError)"));
    let stored = stored_answer(&app, &stream).await;
    assert_eq!(stored["status"], "failed");
    assert_eq!(stored["content"], "Partial answer");
    // An error after the first token is not retried.
    assert_eq!(mock.requests("vllm-error").len(), 1);
}

#[tokio::test]
async fn llama_cpp_timings_and_its_error_field() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "llamacpp").await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token Llama",
            "token  says",
            "metadata test-model 4/2 stop",
            "done complete"
        ]
    );

    let app = openai_app(&mock, "llamacpp-error").await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token Before",
            "error upstream_error",
            "metadata test-model 1/1 estimated",
            "done failed"
        ]
    );
    assert!(error_message(&stream).contains("exceeds the available context size"));
    assert_eq!(stored_answer(&app, &stream).await["content"], "Before");
}

#[tokio::test]
async fn ollama_native_ndjson() {
    let mock = start_upstream().await;
    let app = app_with(
        backend(BackendKind::Ollama, mock.ollama_url("ollama")),
        |_| {},
    )
    .await;
    let stream = app
        .chat_stream(json!({"message": "hi", "options": {"max_tokens": 10}}))
        .await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token Native",
            "token  answer",
            "metadata test-model 7/2 stop",
            "done complete"
        ]
    );
    let request = &mock.requests("ollama")[0];
    assert_eq!(request["options"]["num_predict"], 10);
    assert_eq!(request["stream"], true);
    assert_eq!(
        stored_answer(&app, &stream).await["content"],
        "Native answer"
    );

    let app = app_with(
        backend(BackendKind::Ollama, mock.ollama_url("ollama-error")),
        |_| {},
    )
    .await;
    let stream = ask(&app, "hi").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token Half",
            "error upstream_error",
            "metadata test-model 1/1 estimated",
            "done failed"
        ]
    );
    assert!(error_message(&stream).contains("an error was encountered while running the model"));

    let app = app_with(
        backend(BackendKind::Ollama, mock.ollama_url("ollama-missing")),
        |_| {},
    )
    .await;
    let stream = ask(&app, "hi").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "error upstream_not_found",
            "metadata test-model 1/0 estimated",
            "done failed"
        ]
    );
    assert!(error_message(&stream).contains("not found, try pulling it first"));
}

#[tokio::test]
async fn ollama_openai_compatible_endpoint() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "ollama-v1").await;
    let stream = ask(&app, "hi").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token Hi",
            "metadata test-model 3/1 stop",
            "done complete"
        ]
    );
}

#[tokio::test]
async fn tgi_without_space_crlf_and_no_done() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "tgi").await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token Text",
            "token  gen",
            "metadata test-model 1/2 length estimated",
            "done complete"
        ]
    );

    let app = openai_app(&mock, "tgi-error").await;
    let stream = ask(&app, "q").await;
    assert_eq!(shape(&stream)[2], "error upstream_error");
    assert!(
        error_message(&stream).contains("Input validation error: inputs too long (validation)")
    );
}

#[tokio::test]
async fn comments_multiline_data_reasoning_and_tool_calls_do_not_break_the_answer() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "tolerant").await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token Multi",
            "token  line",
            "metadata test-model 1/2 stop estimated",
            "done complete"
        ]
    );
    assert_eq!(
        stored_answer(&app, &stream).await["content"],
        "Multi line",
        "no reasoning in the answer"
    );
}

#[tokio::test]
async fn a_malformed_line_is_skipped_and_a_one_megabyte_line_passes() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "malformed").await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token Good",
            "token  still",
            "metadata test-model 1/2 stop estimated",
            "done complete"
        ]
    );

    let app = openai_app(&mock, "huge").await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        stream.events[2].data["token"].as_str().unwrap().len(),
        1024 * 1024
    );
    assert_eq!(stream.last().data["status"], "complete");
    assert_eq!(
        stored_answer(&app, &stream).await["content"]
            .as_str()
            .unwrap()
            .len(),
        1024 * 1024
    );
}

#[tokio::test]
async fn an_end_of_body_without_a_finish_is_incomplete_not_success() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "incomplete").await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token Cut",
            "token  short",
            "error upstream_incomplete",
            "metadata test-model 1/2 estimated",
            "done failed"
        ]
    );
    let error = stream.events.iter().find(|e| e.name == "error").unwrap();
    assert_eq!(error.data["retryable"], true);
    let stored = stored_answer(&app, &stream).await;
    assert_eq!(
        (stored["status"].as_str(), stored["content"].as_str()),
        (Some("failed"), Some("Cut short"))
    );
}

#[tokio::test]
async fn a_connection_dropped_mid_stream_keeps_the_partial_answer() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "drop").await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token One",
            "token  two",
            "error upstream_disconnected",
            "metadata test-model 1/2 estimated",
            "done failed"
        ]
    );
    assert_eq!(stored_answer(&app, &stream).await["content"], "One two");
}

#[tokio::test]
async fn a_slow_first_token_times_out_while_keepalives_flow() {
    let mock = start_upstream().await;
    let mut up = backend(BackendKind::Openai, mock.openai_url("slow-first"));
    up.first_token_timeout = Some(Span(Duration::from_millis(400)));
    let app = app_with(up, |config| {
        config.keepalive = Duration::from_millis(100);
        config.llm.attempts = 1;
    })
    .await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "error upstream_first_token_timeout",
            "metadata test-model 1/0 estimated",
            "done failed"
        ]
    );
    let keepalives = String::from_utf8_lossy(&stream.bytes)
        .matches(": keepalive")
        .count();
    assert!(keepalives >= 3, "keepalives while waiting: {keepalives}");
}

#[tokio::test]
async fn the_llm_url_model_takes_its_timeouts_and_the_error_says_the_wait_in_all() {
    let mock = start_upstream().await;
    let app = spawn_app_with(|config| {
        config.llm_url = Some(mock.openai_url("slow-first"));
        config.llm_model = Some("test-model".into());
        config.llm_first_token_timeout = Some(Span(Duration::from_millis(300)));
        config.llm.attempts = 2;
    })
    .await;
    let started = Instant::now();
    let stream = ask(&app, "q").await;
    // Far sooner than the model's 3 s start, and than the default 60 s.
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "error upstream_first_token_timeout",
            "metadata test-model 1/0 estimated",
            "done failed"
        ]
    );
    assert_eq!(
        error_message(&stream),
        "the model server sent no first token after 2 attempts of 300ms each (600ms in all)"
    );
    assert_eq!(mock.requests("slow-first").len(), 2);
}

#[tokio::test]
async fn a_stall_mid_stream_is_an_idle_timeout_with_the_partial_answer_kept() {
    let mock = start_upstream().await;
    let mut up = backend(BackendKind::Openai, mock.openai_url("stall"));
    up.idle_timeout = Some(Span(Duration::from_millis(300)));
    let app = app_with(up, |_| {}).await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token Stalled",
            "token  here",
            "error upstream_idle_timeout",
            "metadata test-model 1/2 estimated",
            "done failed"
        ]
    );
    assert_eq!(
        stored_answer(&app, &stream).await["content"],
        "Stalled here"
    );
    assert_eq!(
        mock.requests("stall").len(),
        1,
        "no retry after the first token"
    );
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "429").await;
    let started = Instant::now();
    let stream = ask(&app, "q").await;
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token After",
            "token  waiting",
            "metadata test-model 1/2 stop estimated",
            "done complete"
        ]
    );
    assert_eq!(mock.requests("429").len(), 2);
}

#[tokio::test]
async fn a_500_is_retried_then_falls_back_to_the_next_backend() {
    let mock = start_upstream().await;
    let app = app_with(
        backend(BackendKind::Openai, mock.openai_url("500")),
        |config| {
            config.llm.fallback = vec!["synthetic".into()];
        },
    )
    .await;
    let stream = app
        .chat_stream(json!({"message": "q", "options": {"max_tokens": 3, "tokens_per_second": 0}}))
        .await;
    let events = shape(&stream);
    assert_eq!(
        events[2..5]
            .iter()
            .filter(|s| s.starts_with("token "))
            .count(),
        3
    );
    assert!(events[5].starts_with("metadata synthetic "), "{events:?}");
    assert_eq!(events[6], "done complete");
    assert_eq!(
        mock.requests("500").len(),
        2,
        "two attempts on the failing backend"
    );
    assert_eq!(stored_answer(&app, &stream).await["model"], "synthetic");

    // Without a fallback the error reaches the client.
    let app = openai_app(&mock, "500").await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "error upstream_unavailable",
            "metadata test-model 1/0 estimated",
            "done failed"
        ]
    );
    assert!(error_message(&stream).contains("upstream exploded"));
}

#[tokio::test]
async fn a_server_that_refuses_stream_options_is_asked_again_without() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "no-stream-options").await;
    let stream = ask(&app, "hello there").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "token No",
            "token  usage",
            "metadata test-model 3/2 stop estimated",
            "done complete"
        ]
    );
    let requests = mock.requests("no-stream-options");
    assert_eq!(requests.len(), 2);
    assert!(requests[0].get("stream_options").is_some());
    assert!(requests[1].get("stream_options").is_none());
}

#[tokio::test]
async fn a_json_error_body_without_sse_framing() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "json-error").await;
    let stream = ask(&app, "q").await;
    assert_eq!(shape(&stream)[2], "error upstream_error");
    assert!(error_message(&stream).contains("model not loaded"));
}

#[tokio::test]
async fn the_api_key_is_sent_but_never_shown() {
    let mock = start_upstream().await;
    let mut up = backend(BackendKind::Openai, mock.openai_url("auth"));
    up.api_key = Some("sk-test-SECRET-123".parse::<Secret>().unwrap());
    let app = app_with(up, |_| {}).await;
    let stream = ask(&app, "q").await;
    assert_eq!(shape(&stream)[2], "error upstream_auth_failed");
    assert_eq!(
        mock.authorization(),
        [Some("Bearer sk-test-SECRET-123".to_owned())],
        "sent once, not retried"
    );
    assert!(!String::from_utf8_lossy(&stream.bytes).contains("SECRET"));
    let (_, messages) = app
        .get_json(&format!(
            "/api/conversations/{}/messages",
            stream.conversation_id()
        ))
        .await;
    assert!(!messages.to_string().contains("SECRET"));
}

#[tokio::test]
async fn cancel_closes_the_upstream_connection() {
    let mock = start_upstream().await;
    let app = openai_app(&mock, "slow").await;
    let response = app.chat(json!({"message": "long"})).await;
    let mut body = response.bytes_stream();
    let seen = read_events(&mut body, 5).await;
    let run_id = seen[0].data["run_id"].as_str().unwrap().to_owned();
    assert!(mock.dropped_at().is_empty());
    let (status, _) = app.post_json(&format!("/api/runs/{run_id}/cancel")).await;
    assert_eq!(status, 200);
    // The answer would go on for 10 s: the drop within a few is the cancel's. How
    // fast it lands is for the benchmark, not a bound that a busy machine breaks.
    app.eventually(Duration::from_secs(5), || async {
        mock.dropped_at().first().copied()
    })
    .await;
    let mut rest = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        rest.extend_from_slice(&chunk);
    }
    let (events, _) = support::decode(&rest);
    assert_eq!(events.last().unwrap().data, json!({"status": "cancelled"}));
}

#[tokio::test]
async fn one_backend_from_the_environment_variables_is_the_default() {
    let mock = start_upstream().await;
    let app = spawn_app_with(|config| {
        config.llm_url = Some(mock.openai_url("openai"));
        config.llm_model = Some("env-model".into());
    })
    .await;
    let stream = ask(&app, "q").await;
    assert_eq!(shape(&stream)[4], "metadata env-model 9/2 stop");
    assert_eq!(mock.requests("openai")[0]["model"], "env-model");
    // The synthetic backend stays reachable by name.
    let synthetic = app
        .chat_stream(json!({"message": "q", "options": {"backend": "synthetic", "max_tokens": 2}}))
        .await;
    assert!(shape(&synthetic)[4].starts_with("metadata synthetic"));
}

#[tokio::test]
async fn the_system_prompt_and_the_conversation_go_with_the_question() {
    let mock = start_upstream().await;
    let app = app_with(
        backend(BackendKind::Openai, mock.openai_url("openai")),
        |config| {
            config.llm.system_prompt = Some("Answer briefly.".into());
        },
    )
    .await;
    let first = ask(&app, "first question").await;
    let second = app
        .chat_stream(
            json!({"message": "second question", "conversation_id": first.conversation_id()}),
        )
        .await;
    assert_eq!(second.conversation_id(), first.conversation_id());
    let requests = mock.requests("openai");
    assert_eq!(
        requests[1]["messages"],
        json!([
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "Hello world"},
            {"role": "user", "content": "second question"},
        ])
    );
}

/// The server with one OpenAI-compatible backend at `scenario`, tried once.
async fn single_attempt_app(mock: &MockUpstream, scenario: &str, attempts: u32) -> TestApp {
    app_with(
        backend(BackendKind::Openai, mock.openai_url(scenario)),
        |config| config.llm.attempts = attempts,
    )
    .await
}

#[tokio::test]
async fn a_refusal_with_an_endless_body_is_read_up_to_a_limit_and_the_run_ends() {
    let mock = start_upstream().await;
    let app = single_attempt_app(&mock, "endless-refusal", 1).await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "error upstream_unavailable",
            "metadata test-model 1/0 estimated",
            "done failed"
        ]
    );
    // tidewire hung up instead of reading for ever.
    app.eventually(Duration::from_secs(10), || async {
        mock.dropped_at().first().copied()
    })
    .await;
}

#[tokio::test]
async fn an_endless_json_body_is_refused_past_its_size_limit() {
    let mock = start_upstream().await;
    let app = single_attempt_app(&mock, "endless-json", 1).await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream),
        [
            "run",
            "stage generation",
            "error upstream_response_too_large",
            "metadata test-model 1/0 estimated",
            "done failed"
        ]
    );
}

#[tokio::test]
async fn a_retry_after_of_a_day_is_not_waited_for() {
    let mock = start_upstream().await;
    let app = single_attempt_app(&mock, "retry-tomorrow", 3).await;
    let stream = ask(&app, "q").await;
    assert_eq!(
        shape(&stream)[2..],
        [
            "error upstream_rate_limited",
            "metadata test-model 1/0 estimated",
            "done failed"
        ]
    );
    assert_eq!(mock.requests("retry-tomorrow").len(), 1, "no retry");
}

#[tokio::test]
async fn error_events_do_not_show_the_model_servers_address_or_library_messages() {
    // Nothing listens on port 1 of loopback: the connection is refused.
    let app = app_with(
        backend(BackendKind::Openai, "http://127.0.0.1:1/v1".into()),
        |config| config.llm.attempts = 1,
    )
    .await;
    let stream = ask(&app, "q").await;
    assert_eq!(shape(&stream)[2], "error upstream_unreachable");
    let message = error_message(&stream);
    assert_eq!(message, "cannot reach the model server");
    let wire = String::from_utf8_lossy(&stream.bytes);
    assert!(
        !wire.contains("127.0.0.1") && !wire.contains("error sending request"),
        "{wire}"
    );
}

#[tokio::test]
async fn an_answer_service_is_streamed_in_pieces_with_its_confidence_and_sources() {
    let mock = start_upstream().await;
    let mut service = backend(BackendKind::Service, mock.service_url("service"));
    service.model = Some("ml-backend".into());
    let app = app_with(service, |_| {}).await;
    let stream = ask(&app, "high water").await;
    let names = shape(&stream);
    assert_eq!(names[..3], ["run", "stage generation", "sources"]);
    assert!(
        names.iter().filter(|n| n.starts_with("token ")).count() > 3,
        "{names:?}"
    );
    assert_eq!(stream.text(), "The tide answer to high water.");
    let score = stream
        .events
        .iter()
        .find(|e| e.name == "quality_score")
        .unwrap();
    assert_eq!(score.data["quality_score"], 0.87);
    let sources = stream.events.iter().find(|e| e.name == "sources").unwrap();
    assert_eq!(sources.data["sources"][0]["document_name"], "Tide tables");
    assert_eq!(sources.data["sources"][1]["document_name"], "almanac.pdf");
    assert_eq!(mock.requests("service")[0], json!({"query": "high water"}));
    let stored = stored_answer(&app, &stream).await;
    assert_eq!(stored["content"], "The tide answer to high water.");
    assert_eq!(stored["quality_score"], 0.87);
    assert_eq!(stored["model"], "ml-backend");
}

#[tokio::test]
async fn an_answer_service_past_its_deadline_is_a_retryable_timeout() {
    let mock = start_upstream().await;
    let mut service = backend(BackendKind::Service, mock.service_url("service-slow"));
    service.total_timeout = Some(Span(Duration::from_millis(300)));
    let app = app_with(service, |config| config.llm.attempts = 1).await;
    let stream = ask(&app, "q").await;
    assert_eq!(shape(&stream)[2], "error upstream_timeout");
    let error = stream.events.iter().find(|e| e.name == "error").unwrap();
    assert_eq!(error.data["retryable"], true);
    assert_eq!(stream.last().data["status"], "failed");
}
