//! `tidewire sse decode` and `tidewire sse encode`, run as a user runs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn tidewire(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidewire"));
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn run_with_input(args: &[&str], input: &[u8]) -> (String, String, i32) {
    let mut child = tidewire(args).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.code().unwrap(),
    )
}

#[test]
fn decode_prints_each_event_and_the_reconnect_state() {
    let input = b"\xEF\xBB\xBFretry: 2500\r\nid: 1\r\nevent: token\r\ndata: {\"token\":\"hi\"}\r\n\r\ndata: a\ndata: b\n\n: keepalive\nid: 7\n\ndata: cut off";
    let (stdout, _, code) = run_with_input(&["sse", "decode"], input);
    assert_eq!(code, 0);
    assert_eq!(
        stdout,
        concat!(
            "{\"event\":\"token\",\"data\":\"{\\\"token\\\":\\\"hi\\\"}\",\"id\":\"1\"}\n",
            "{\"event\":\"message\",\"data\":\"a\\nb\",\"id\":\"1\"}\n",
            "{\"last_event_id\":\"7\",\"retry\":2500}\n",
        )
    );
}

#[test]
fn decode_without_retry_prints_null() {
    let (stdout, _, _) = run_with_input(&["sse", "decode"], b"");
    assert_eq!(stdout, "{\"last_event_id\":\"\",\"retry\":null}\n");
}

#[test]
fn decode_prints_an_event_as_soon_as_it_is_dispatched() {
    let mut child = tidewire(&["sse", "decode"]).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The blank line ends in a lone CR: the event must come out without waiting for
    // the rest of the stream, or for an LF that may never come.
    stdin.write_all(b"data: live\r\r").unwrap();
    stdin.flush().unwrap();
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("event printed while stdin is open");
    assert_eq!(
        line,
        "{\"event\":\"message\",\"data\":\"live\",\"id\":\"\"}"
    );
    drop(stdin);
    let last = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(last, "{\"last_event_id\":\"\",\"retry\":null}");
    assert!(child.wait().unwrap().success());
}

#[test]
fn decode_reports_a_limit_error_and_goes_on() {
    let (stdout, stderr, code) = run_with_input(
        &["sse", "decode", "--max-line", "8"],
        b"data: far too long\n\ndata: ok\n\n",
    );
    assert_eq!(code, 2);
    assert!(
        stderr.contains("longer than the limit of 8 bytes"),
        "{stderr}"
    );
    assert!(
        stdout.starts_with("{\"event\":\"message\",\"data\":\"ok\""),
        "{stdout}"
    );
}

#[test]
fn encode_then_decode_round_trips() {
    let input = concat!(
        "{\"id\":\"1\",\"event\":\"token\",\"data\":\"line one\\r\\nline two\"}\n",
        "{\"comment\":\"keepalive\"}\n",
        "{\"data\":\"\"}\n",
        "{\"retry\":1500}\n",
    );
    let (wire, _, code) = run_with_input(&["sse", "encode"], input.as_bytes());
    assert_eq!(code, 0);
    assert_eq!(
        wire,
        "id: 1\nevent: token\ndata: line one\ndata: line two\n\n: keepalive\ndata: \n\nretry: 1500\n\n"
    );
    let (decoded, _, _) = run_with_input(&["sse", "decode"], wire.as_bytes());
    assert_eq!(
        decoded,
        concat!(
            "{\"event\":\"token\",\"data\":\"line one\\nline two\",\"id\":\"1\"}\n",
            "{\"event\":\"message\",\"data\":\"\",\"id\":\"1\"}\n",
            "{\"last_event_id\":\"1\",\"retry\":1500}\n",
        )
    );
}

#[test]
fn encode_refuses_an_id_that_would_break_the_stream() {
    let mut child = tidewire(&["sse", "encode"]).spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"data\":\"ok\"}\n{\"id\":\"a\\nb\",\"data\":\"x\"}\n")
        .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!child.wait().unwrap().success());
    assert_eq!(stdout, "data: ok\n\n");
    assert!(
        stderr.contains("line 2") && stderr.contains("event id"),
        "{stderr}"
    );
}

#[test]
fn decode_says_when_the_input_is_not_an_event_stream() {
    let body = b"{\"error\":{\"code\":\"run_not_found\",\"message\":\"run 7 does not exist\"}}";
    let (stdout, stderr, code) = run_with_input(&["sse", "decode"], body);
    assert_ne!(code, 0);
    assert_eq!(stdout, "");
    assert!(stderr.contains("no event stream on stdin"), "{stderr}");
    assert!(stderr.contains("run 7 does not exist"), "{stderr}");
    let (_, stderr, code) =
        run_with_input(&["sse", "decode"], b"<html>\n<body>Bad Gateway</body>\n");
    assert_ne!(code, 0);
    assert!(stderr.contains("it starts with: <html>\n"), "{stderr}");

    // A stream with no event is still a stream: keepalives, an id, a cut-off event.
    for quiet in [
        &b": keepalive\n\n"[..],
        b"\xEF\xBB\xBF: keepalive\n",
        b"retry: 1000\n",
        b"id: 4\n\n",
        b"data: cut off",
        b"data",
    ] {
        let (stdout, stderr, code) = run_with_input(&["sse", "decode"], quiet);
        assert_eq!(code, 0, "{quiet:?}: {stderr}");
        assert!(stdout.contains("last_event_id"), "{stdout}");
    }
}

#[test]
fn encode_refuses_an_event_without_data() {
    for (line, says) in [
        ("{\"event\":\"token\"}", "needs \"data\""),
        ("{\"id\":\"5\",\"retry\":100}", "needs \"data\""),
        ("{}", "nothing to write"),
    ] {
        let input = format!("{{\"data\":\"ok\"}}\n{line}\n");
        let (stdout, stderr, code) = run_with_input(&["sse", "encode"], input.as_bytes());
        assert_ne!(code, 0, "{line}");
        assert_eq!(stdout, "data: ok\n\n", "{line}");
        assert!(stderr.contains("line 2"), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
    }
}
