//! `tidewire config`: the layers a user sets, in the order they win.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn effective(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidewire"));
    command.arg("config").args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIDEWIRE_")) {
        command.env_remove(key);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tidewire.toml");
    std::fs::write(
        &file,
        "keepalive = \"3s\"\nretention = \"1m\"\ndrain_timeout = \"9s\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let out = effective(
        &["--config", file, "--retention", "2m"],
        &[
            ("TIDEWIRE_RETENTION", "5m"),
            ("TIDEWIRE_DRAIN_TIMEOUT", "7s"),
        ],
    );
    assert!(out.contains("keepalive = \"3s\""), "{out}");
    assert!(out.contains("drain_timeout = \"7s\""), "{out}");
    assert!(out.contains("retention = \"2m\""), "{out}");
    let defaults = effective(&[], &[]);
    assert!(defaults.contains("addr = \"127.0.0.1:8080\""));
    assert!(defaults.contains("keepalive = \"15s\""));
    assert!(defaults.contains("cancel_after_idle = \"off\""));
}

#[test]
fn a_bad_value_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .args(["config", "--keepalive", "soon"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a duration"), "{stderr}");
}

#[test]
fn one_model_from_the_environment_and_its_key_never_printed() {
    let out = effective(
        &[],
        &[
            ("TIDEWIRE_LLM_URL", "http://127.0.0.1:11434/v1"),
            ("TIDEWIRE_LLM_MODEL", "llama3.2"),
            ("TIDEWIRE_LLM_API_KEY", "sk-do-not-print"),
            ("TIDEWIRE_SYSTEM_PROMPT", "Be brief."),
        ],
    );
    assert!(
        out.contains("llm_url = \"http://127.0.0.1:11434/v1\""),
        "{out}"
    );
    assert!(out.contains("llm_model = \"llama3.2\""), "{out}");
    assert!(out.contains("system_prompt = \"Be brief.\""), "{out}");
    assert!(!out.contains("sk-do-not-print"), "{out}");
    assert!(out.contains("<redacted>"), "{out}");

    let output = Command::new(env!("CARGO_BIN_EXE_tidewire"))
        .arg("config")
        .env("TIDEWIRE_LLM_URL", "http://127.0.0.1:11434/v1")
        .env_remove("TIDEWIRE_LLM_MODEL")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("TIDEWIRE_LLM_MODEL"));
}

/// The binary with only `env` as its `TIDEWIRE_*` environment: its stderr and
/// whether it succeeded.
fn failing(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidewire"));
    command.args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TIDEWIRE_")) {
        command.env_remove(key);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    stderr
}

#[test]
fn each_error_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let stderr = failing(&["config", "--config", missing.to_str().unwrap()], &[]);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("cannot read config file"), "{stderr}");

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "keepalive = \"5s\n").unwrap();
    for command in ["config", "serve"] {
        let stderr = failing(
            &[command, "--config", broken.to_str().unwrap()],
            &[("TIDEWIRE_DATA_DIR", dir.path().to_str().unwrap())],
        );
        assert_eq!(stderr.matches("TOML parse error").count(), 1, "{stderr}");
        assert_eq!(stderr.matches("keepalive = \"5s").count(), 1, "{stderr}");
        assert!(stderr.contains("broken.toml"), "{stderr}");
    }

    let stderr = failing(
        &["serve", "--addr", "127.0.0.1:0", "--log", "a=b=c"],
        &[("TIDEWIRE_DATA_DIR", dir.path().to_str().unwrap())],
    );
    assert_eq!(
        stderr.matches("error parsing level filter").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("TIDEWIRE_LOG"), "{stderr}");

    // A data directory that cannot be created: the store's error, once.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_a_file = file.join("data");
    let stderr = failing(
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            under_a_file.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(stderr.matches("Not a directory").count(), 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn a_bad_environment_variable_is_named_as_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    for (variable, value, says) in [
        ("TIDEWIRE_KEEPALIVE", "abc", "not a duration"),
        ("TIDEWIRE_MAX_CONCURRENT_RUNS", "abc", "\"abc\""),
        ("TIDEWIRE_MAX_BODY_BYTES", "abc", "not a size"),
        (
            "TIDEWIRE_ADDR",
            "localhost:8080",
            "not an address like 127.0.0.1:8080",
        ),
    ] {
        for command in ["serve", "config"] {
            let stderr = failing(
                &[command],
                &[(variable, value), ("TIDEWIRE_DATA_DIR", data_dir)],
            );
            assert!(stderr.contains(variable), "{stderr}");
            assert!(stderr.contains("in the environment"), "{stderr}");
            assert!(stderr.contains(says), "{stderr}");
            let flag = variable
                .trim_start_matches("TIDEWIRE_")
                .to_ascii_lowercase()
                .replace('_', "-");
            assert!(!stderr.contains(&format!("--{flag}")), "{stderr}");
        }
    }
    // The same mistake as a flag names the flag.
    let stderr = failing(&["config", "--addr", "localhost:8080"], &[]);
    assert!(stderr.contains("--addr"), "{stderr}");
    assert!(!stderr.contains("TIDEWIRE_ADDR"), "{stderr}");
}

#[test]
fn the_llm_url_timeouts_are_flags_and_variables() {
    let out = effective(
        &["--llm-first-token-timeout", "2m"],
        &[
            ("TIDEWIRE_LLM_URL", "http://127.0.0.1:11434/v1"),
            ("TIDEWIRE_LLM_MODEL", "llama3.2"),
            ("TIDEWIRE_LLM_IDLE_TIMEOUT", "45s"),
            ("TIDEWIRE_LLM_TOTAL_TIMEOUT", "900"),
        ],
    );
    assert!(out.contains("llm_first_token_timeout = \"2m\""), "{out}");
    assert!(out.contains("llm_idle_timeout = \"45s\""), "{out}");
    assert!(out.contains("llm_total_timeout = \"15m\""), "{out}");
}
