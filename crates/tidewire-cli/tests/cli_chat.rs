//! `tidewire chat` run as a user runs it, against the real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tidewire/tests/support/mod.rs"]
mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::spawn_app;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

fn chat(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidewire"));
    command
        .arg("chat")
        .args(["--url", url])
        .args(args)
        .env_remove("TIDEWIRE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn output(mut command: Command) -> (String, String, Option<i32>) {
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap()
        .unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.code(),
    )
}

async fn conversations(app: &support::TestApp) -> Vec<Value> {
    let (_, list) = app.get_json("/api/conversations").await;
    list["conversations"].as_array().unwrap().clone()
}

#[tokio::test]
async fn on_a_pipe_it_prints_only_the_answer_text() {
    let app = spawn_app().await;
    let (stdout, stderr, code) =
        output(chat(&app.base, &["what is a tide?", "--max-tokens", "12"])).await;
    assert_eq!(code, Some(0), "{stderr}");
    let conversation = &conversations(&app).await[0];
    let messages = app.messages(conversation["id"].as_str().unwrap()).await;
    assert_eq!(
        stdout,
        format!("{}\n", messages[1]["content"].as_str().unwrap())
    );
    assert_eq!(stdout.split(' ').count(), 12);
}

#[tokio::test]
async fn json_prints_every_event_with_its_id() {
    let app = spawn_app().await;
    let (stdout, _, code) = output(chat(
        &app.base,
        &["json please", "--max-tokens", "3", "--json"],
    ))
    .await;
    assert_eq!(code, Some(0));
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(line["id"], n as u64 + 1);
    }
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .starts_with("{\"id\":1,\"event\":\"run\",\"data\":{")
    );
    assert_eq!(lines[6]["event"], "done");
    assert_eq!(lines[6]["data"]["status"], "complete");
}

#[tokio::test]
async fn attach_follows_a_run_after_an_event_id() {
    let app = spawn_app().await;
    let stream = app
        .chat_stream(serde_json::json!({"message": "to attach", "options": {"max_tokens": 5, "tokens_per_second": 0}}))
        .await;
    let run_id = stream.run_id();
    let (stdout, _, code) = output(chat(
        &app.base,
        &["--attach", &run_id, "--last-event-id", "3", "--json"],
    ))
    .await;
    assert_eq!(code, Some(0));
    let first: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], 4);
    assert_eq!(stdout.lines().count(), stream.events.len() - 3);
}

#[tokio::test]
async fn the_interactive_loop_keeps_the_conversation() {
    let app = spawn_app().await;
    let mut command = chat(&app.base, &["--max-tokens", "4"]);
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"first question\n\nsecond question\n")
        .await
        .unwrap();
    drop(stdin);
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .await
        .unwrap();
    assert!(child.wait().await.unwrap().success());
    let conversations = conversations(&app).await;
    assert_eq!(conversations.len(), 1);
    let messages = app.messages(conversations[0]["id"].as_str().unwrap()).await;
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[2]["content"], "second question");
    let answers = format!(
        "{}\n{}\n",
        messages[1]["content"].as_str().unwrap(),
        messages[3]["content"].as_str().unwrap()
    );
    assert_eq!(stdout, answers);
}

#[tokio::test]
async fn ctrl_c_stops_the_run_and_returns_to_the_prompt_and_a_second_one_exits() {
    let app = spawn_app().await;
    let mut child = chat(&app.base, &["--max-tokens", "1000"]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"a long answer please\n").await.unwrap();
    stdin.flush().await.unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Wait until the answer is streaming.
    let mut first = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(10), stdout.read_exact(&mut first))
        .await
        .unwrap()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let interrupt = || {
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
    };
    assert!(interrupt().success());

    let conversation_id = app
        .eventually(Duration::from_secs(10), || async {
            conversations(&app)
                .await
                .first()
                .map(|c| c["id"].as_str().unwrap().to_owned())
        })
        .await;
    let answer = app
        .eventually(Duration::from_secs(10), || async {
            let messages = app.messages(&conversation_id).await;
            (messages[1]["status"] != "streaming").then(|| messages[1].clone())
        })
        .await;
    assert_eq!(answer["status"], "cancelled");
    // Back at the prompt: the rest of the answer line arrives, then nothing.
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running, at the prompt"
    );

    assert!(interrupt().success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(130));
}

#[tokio::test]
async fn a_failed_answer_exits_1_with_the_error_on_stderr() {
    // A model server that refuses every request.
    let mock = support::upstream::start_upstream().await;
    let url = mock.openai_url("json-error");
    let app = support::spawn_app_with(|config| {
        config.llm_url = Some(url);
        config.llm_model = Some("m".into());
        config.llm.default = "default".into();
        config.llm.attempts = 1;
    })
    .await;
    let (stdout, stderr, code) = output(chat(&app.base, &["hello?"])).await;
    assert_eq!(code, Some(1), "stdout {stdout:?} stderr {stderr:?}");
    assert_eq!(stdout, "", "nothing on stdout but the answer");
    assert!(stderr.contains("error:"), "{stderr}");
}

#[tokio::test]
async fn last_event_id_without_attach_is_refused() {
    let app = spawn_app().await;
    let (_, stderr, code) = output(chat(&app.base, &["hi", "--last-event-id", "3"])).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--attach"), "{stderr}");
}

#[tokio::test]
async fn with_no_server_it_says_so_at_once() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut child = chat(&url, &["hi"]).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(5), stderr.next_line())
        .await
        .expect("a message within 5 s")
        .unwrap()
        .unwrap();
    assert!(
        first.contains("cannot connect") && first.contains("still trying"),
        "{first}"
    );
}

#[tokio::test]
async fn slash_commands_are_commands_not_questions() {
    let app = spawn_app().await;
    let mut child = chat(&app.base, &["--max-tokens", "2"]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"first question\n/help\n/new\nsecond question\n/exit\n")
        .await
        .unwrap();
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("/new"), "/help answered: {stderr}");
    assert!(stderr.contains("(a new conversation)"), "{stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "no terminal colours on a pipe: {stderr:?}"
    );
    // Two questions, two conversations (/new), and no command stored as a question.
    let conversations = conversations(&app).await;
    assert_eq!(conversations.len(), 2, "{conversations:?}");
    for conversation in &conversations {
        let messages = app.messages(conversation["id"].as_str().unwrap()).await;
        assert!(!messages[0]["content"].as_str().unwrap().starts_with('/'));
    }
}
