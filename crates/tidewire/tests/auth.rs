//! Users: API keys and JWTs, each user's conversations and runs kept from the
//! others on every route, the events_url token, and the per-user limits, against
//! the server on port 0 with API keys made in its data directory as
//! `tidewire keys` makes them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::{TestApp, read_stream, spawn_app_with};
use tidewire::auth::new_key;
use tidewire::config::Secret;
use tidewire::store::{ApiKeys, Timestamp};

const SECRET: &str = "a shared secret of the identity provider";

async fn app_with_auth(adjust: impl FnOnce(&mut tidewire::config::AuthConfig)) -> TestApp {
    spawn_app_with(|config| {
        config.auth.api_keys = true;
        config.auth.jwt_secret = Some(Secret::from(SECRET.to_owned()));
        config.auth.jwt_issuer = Some("https://id.example".into());
        config.auth.jwt_audience = Some("tidewire".into());
        config.default_tokens_per_second = 0.0;
        adjust(&mut config.auth);
    })
    .await
}

/// A key for `user`, made in the running server's data directory.
async fn key_for(app: &TestApp, user: &str, expires_at: Option<Timestamp>) -> (String, String) {
    let keys = ApiKeys::open(app.data_dir.path()).await.unwrap();
    let made = new_key().unwrap();
    let record = keys
        .create(user, "test", &made.hash, &made.prefix, expires_at)
        .await
        .unwrap();
    (made.key, record.id)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn good_claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600, "iss": "https://id.example", "aud": "tidewire"})
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Asks `question` as the holder of `token`; the stream's run event.
async fn ask(app: &TestApp, token: &str, body: Value) -> Value {
    let response = send(
        app,
        reqwest::Method::POST,
        "/api/chat",
        Some(token),
        Some(body),
    )
    .await;
    assert_eq!(response.status(), 200);
    let stream = read_stream(response).await;
    stream.events[0].data.clone()
}

#[tokio::test]
async fn each_user_sees_only_their_own_on_every_route() {
    let app = app_with_auth(|_| {}).await;
    let (alice, _) = key_for(&app, "alice", None).await;
    let bob = jwt(good_claims("bob"));
    let run = ask(
        &app,
        &alice,
        json!({"message": "alice asks", "options": {"max_tokens": 3}}),
    )
    .await;
    let conversation = run["conversation_id"].as_str().unwrap();
    let run_id = run["run_id"].as_str().unwrap();
    ask(
        &app,
        &bob,
        json!({"message": "bob asks", "options": {"max_tokens": 3}}),
    )
    .await;

    use reqwest::Method as M;
    // Alice reaches her own.
    for (method, path) in [
        (
            M::GET,
            format!("/api/conversations/{conversation}/messages"),
        ),
        (M::GET, format!("/api/runs/{run_id}")),
        (M::GET, format!("/api/runs/{run_id}/events")),
        (M::POST, format!("/api/runs/{run_id}/cancel")),
    ] {
        let status = send(&app, method.clone(), &path, Some(&alice), None)
            .await
            .status();
        assert!(status.is_success(), "alice {method} {path}: {status}");
    }
    // Bob gets 404 on each of them, exactly as for what does not exist.
    for (method, path) in [
        (
            M::GET,
            format!("/api/conversations/{conversation}/messages"),
        ),
        (M::DELETE, format!("/api/conversations/{conversation}")),
        (M::GET, format!("/api/runs/{run_id}")),
        (M::GET, format!("/api/runs/{run_id}/events")),
        (M::POST, format!("/api/runs/{run_id}/cancel")),
        (M::GET, format!("/v1/responses/resp_{run_id}")),
        (M::POST, format!("/v1/responses/resp_{run_id}/cancel")),
    ] {
        let response = send(&app, method.clone(), &path, Some(&bob), None).await;
        assert_eq!(response.status(), 404, "bob {method} {path}");
    }
    // Continuing her conversation, on the native route or a dialect's, is not found.
    let response = send(
        &app,
        M::POST,
        "/api/chat",
        Some(&bob),
        Some(json!({"message": "mine now", "conversation_id": conversation})),
    )
    .await;
    assert_eq!(response.status(), 404);
    let response = send(
        &app,
        M::POST,
        "/api/v1/chat/send",
        Some(&bob),
        Some(json!({"conversation_id": conversation, "text": "mine now"})),
    )
    .await;
    assert_eq!(response.status(), 404);
    // Every other route that names a conversation: not found for him either.
    for (path, body) in [
        (
            "/api/chat/stream",
            json!({"message": "mine now", "session_id": conversation}),
        ),
        (
            "/api/chat/stream",
            json!({"user_message": "mine now", "conversation_id": conversation,
                   "context_node_ids": [], "project_id": "p", "chat_node_id": "n"}),
        ),
        (
            "/api/v1/chat/",
            json!({"message": "mine now", "conversation_id": conversation}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "synthetic", "conversation_id": conversation,
                   "messages": [{"role": "user", "content": "mine now"}]}),
        ),
        (
            "/api/ui/chat",
            json!({"id": conversation, "trigger": "submit-message",
                   "messages": [{"id": "u", "role": "user", "parts": [{"type": "text", "text": "mine now"}]}]}),
        ),
    ] {
        let response = send(&app, M::POST, path, Some(&bob), Some(body.clone())).await;
        assert_eq!(response.status(), 404, "bob on {path} with {body}");
    }
    // A reconnect of useChat to her chat finds nothing running.
    let response = send(
        &app,
        M::GET,
        &format!("/api/ui/chat/{conversation}/stream"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(response.status(), 204);
    // Lists show each their own.
    for (token, mine) in [(&alice, "alice asks"), (&bob, "bob asks")] {
        let list: Value = send(&app, M::GET, "/api/conversations", Some(token), None)
            .await
            .json()
            .await
            .unwrap();
        let titles: Vec<&str> = list["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["title"].as_str().unwrap())
            .collect();
        assert_eq!(titles, [mine]);
    }
    // Her conversation is still whole.
    let messages = send(
        &app,
        M::GET,
        &format!("/api/conversations/{conversation}/messages"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(messages.status(), 200);
    let messages: Value = messages.json().await.unwrap();
    assert_eq!(
        messages["messages"].as_array().unwrap().len(),
        2,
        "nothing of his went into it"
    );
}

#[tokio::test]
async fn bad_credentials_are_401_with_a_reason_a_client_can_act_on() {
    let app = app_with_auth(|_| {}).await;
    let (revoked, revoked_id) = key_for(&app, "carol", None).await;
    let (expired, _) = key_for(&app, "carol", Some(Timestamp(Timestamp::now().0 - 1000))).await;
    ApiKeys::open(app.data_dir.path())
        .await
        .unwrap()
        .revoke(&revoked_id)
        .await
        .unwrap();
    let mut claims = good_claims("dave");
    let expired_jwt = jwt({
        claims["exp"] = json!(now() - 3600);
        claims.clone()
    });
    let mut claims = good_claims("dave");
    let early_jwt = jwt({
        claims["nbf"] = json!(now() + 3600);
        claims.clone()
    });
    let mut claims = good_claims("dave");
    let audience_jwt = jwt({
        claims["aud"] = json!("someone-else");
        claims.clone()
    });
    let mut claims = good_claims("dave");
    let issuer_jwt = jwt({
        claims["iss"] = json!("https://evil.example");
        claims.clone()
    });
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &good_claims("dave"),
        &EncodingKey::from_secret(b"not the secret"),
    )
    .unwrap();
    let b64 =
        |value: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    let none_alg = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(good_claims("dave"))
    );
    let other_alg = encode(
        &Header::new(Algorithm::HS384),
        &good_claims("dave"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    for (token, why) in [
        (None, "Authorization"),
        (Some("tw_not-a-key"), "unknown API key"),
        (Some(revoked.as_str()), "revoked"),
        (Some(expired.as_str()), "expired"),
        (Some(expired_jwt.as_str()), "expired"),
        (Some(early_jwt.as_str()), "not valid yet"),
        (Some(audience_jwt.as_str()), "audience"),
        (Some(issuer_jwt.as_str()), "issuer"),
        (Some(forged.as_str()), "signature"),
        (Some(none_alg.as_str()), ""),
        (Some(other_alg.as_str()), "algorithm"),
    ] {
        for (method, path) in [
            (reqwest::Method::POST, "/api/chat"),
            (reqwest::Method::GET, "/api/conversations"),
            (reqwest::Method::POST, "/v1/chat/completions"),
            (reqwest::Method::POST, "/api/ask/stream"),
        ] {
            let response = send(&app, method, path, token, Some(json!({"message": "x"}))).await;
            assert_eq!(response.status(), 401, "{path} with {token:?}");
            let challenge = response.headers()["www-authenticate"].to_str().unwrap();
            assert!(
                challenge.starts_with("Bearer error=\"invalid_token\""),
                "{challenge}"
            );
            let body: Value = response.json().await.unwrap();
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(why), "{token:?}: {message}");
            assert_eq!(body["message"], body["error"]["message"]);
            assert_eq!(body["detail"], body["error"]["message"]);
        }
    }
    let (_, health) = app.get_json("/healthz").await;
    assert_eq!(health["status"], "ok", "the health check stays open");
}

#[tokio::test]
async fn the_events_url_token_opens_its_run_and_nothing_else() {
    let app = app_with_auth(|_| {}).await;
    let (alice, _) = key_for(&app, "alice", None).await;
    let first = ask(
        &app,
        &alice,
        json!({"message": "one", "options": {"max_tokens": 3}}),
    )
    .await;
    let second = ask(
        &app,
        &alice,
        json!({"message": "two", "options": {"max_tokens": 3}}),
    )
    .await;
    let url = first["events_url"].as_str().unwrap();
    assert!(url.contains("?access_token="), "{url}");
    // No header: the token alone opens the run, as an EventSource would.
    let response = app.client.get(app.url(url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let replay = read_stream(response).await;
    assert_eq!(replay.events.last().unwrap().name, "done");
    // The same token on the other run, or altered: refused.
    let token = url.split("access_token=").nth(1).unwrap();
    let other = format!(
        "/api/runs/{}/events?access_token={token}",
        second["run_id"].as_str().unwrap()
    );
    assert_eq!(
        app.client
            .get(app.url(&other))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let altered = url.replace("access_token=", "access_token=9");
    assert_eq!(
        app.client
            .get(app.url(&altered))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Without the token nor a header: 401.
    let bare = format!("/api/runs/{}/events", first["run_id"].as_str().unwrap());
    assert_eq!(
        app.client
            .get(app.url(&bare))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn an_events_url_token_stops_working_when_it_expires() {
    let app = app_with_auth(|auth| auth.stream_token_ttl = Duration::ZERO).await;
    let (alice, _) = key_for(&app, "alice", None).await;
    let run = ask(
        &app,
        &alice,
        json!({"message": "one", "options": {"max_tokens": 3}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let url = run["events_url"].as_str().unwrap();
    assert_eq!(
        app.client.get(app.url(url)).send().await.unwrap().status(),
        401
    );
}

#[tokio::test]
async fn past_the_request_limit_a_user_gets_429_then_may_go_on_after_the_wait() {
    let app = app_with_auth(|auth| auth.requests_per_minute = 60).await;
    let (alice, _) = key_for(&app, "alice", None).await;
    let (bob, _) = key_for(&app, "bob", None).await;
    let body = json!({"message": "quick", "stream": false, "options": {"max_tokens": 1}});
    for _ in 0..60 {
        let response = send(
            &app,
            reqwest::Method::POST,
            "/api/chat",
            Some(&alice),
            Some(body.clone()),
        )
        .await;
        assert_eq!(response.status(), 200);
    }
    let response = send(
        &app,
        reqwest::Method::POST,
        "/api/chat",
        Some(&alice),
        Some(body.clone()),
    )
    .await;
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "rate_limited");
    // Another user is not held back by her limit.
    let response = send(
        &app,
        reqwest::Method::POST,
        "/api/chat",
        Some(&bob),
        Some(body.clone()),
    )
    .await;
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let response = send(
        &app,
        reqwest::Method::POST,
        "/api/chat",
        Some(&alice),
        Some(body),
    )
    .await;
    assert_eq!(
        response.status(),
        200,
        "after Retry-After, the next request goes through"
    );
}

#[tokio::test]
async fn past_the_concurrent_run_limit_a_user_gets_429_until_one_ends() {
    let app = app_with_auth(|auth| auth.concurrent_runs = 1).await;
    let (alice, _) = key_for(&app, "alice", None).await;
    let slow = json!({"message": "slow", "options": {"max_tokens": 500, "tokens_per_second": 20}});
    let response = send(
        &app,
        reqwest::Method::POST,
        "/api/chat",
        Some(&alice),
        Some(slow.clone()),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let first = support::read_events(&mut body, 1).await;
    let run_id = first[0].data["run_id"].as_str().unwrap().to_owned();
    let response = send(
        &app,
        reqwest::Method::POST,
        "/api/chat",
        Some(&alice),
        Some(slow.clone()),
    )
    .await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let cancelled = send(
        &app,
        reqwest::Method::POST,
        &format!("/api/runs/{run_id}/cancel"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(cancelled.status(), 200);
    let response = send(
        &app,
        reqwest::Method::POST,
        "/api/chat",
        Some(&alice),
        Some(slow),
    )
    .await;
    assert_eq!(response.status(), 200);
}

/// A P-256 key pair made for these tests (never used anywhere else).
const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgu8CqBxub+scbn/Cc
HLYqZIRSmRgts87AfENCalmFxvmhRANCAASeWE0Vc796cS6uGUkupBZcQq/6e8Uv
6/yYnEvcZvb60tInSEfzWXfQxqck3o8uzuDXeWJ6UojOCwBJ//A55iRY
-----END PRIVATE KEY-----
";
const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEnlhNFXO/enEurhlJLqQWXEKv+nvF
L+v8mJxL3Gb2+tLSJ0hH81l30ManJN6PLs7g13lielKIzgsASf/wOeYkWA==
-----END PUBLIC KEY-----
";

fn es256(claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        claims,
        &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
    )
    .unwrap()
}

async fn status_with(app: &TestApp, token: &str) -> u16 {
    send(
        app,
        reqwest::Method::GET,
        "/api/conversations",
        Some(token),
        None,
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn es256_tokens_verify_with_a_public_key_file_or_a_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("idp.pem");
    std::fs::write(&pem, EC_PUBLIC).unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
            "x": "nlhNFXO_enEurhlJLqQWXEKv-nvFL-v8mJxL3Gb2-tI",
            "y": "0idIR_NZd9DGpyTejy7O4Nd5YnpSiM4LAEn_8DnmJFg"}]})
        .to_string(),
    )
    .unwrap();
    let claims = json!({"sub": "erin", "exp": now() + 600});

    let with_pem = {
        let pem = pem.clone();
        spawn_app_with(move |config| config.auth.jwt_public_key = Some(pem)).await
    };
    assert_eq!(status_with(&with_pem, &es256(&claims, None)).await, 200);
    // HS256 signed with the public key's text: the classic key-confusion forgery.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(EC_PUBLIC.as_bytes()),
    )
    .unwrap();
    assert_eq!(status_with(&with_pem, &confused).await, 401);

    let with_jwks = spawn_app_with(move |config| config.auth.jwt_jwks = Some(jwks)).await;
    assert_eq!(
        status_with(&with_jwks, &es256(&claims, Some("k1"))).await,
        200
    );
    assert_eq!(status_with(&with_jwks, &confused).await, 401);
}

#[tokio::test]
async fn the_chatbot_front_end_gets_its_refusals_as_the_one_event_stream_it_reads() {
    let app = app_with_auth(|auth| auth.requests_per_minute = 1).await;
    let response = send(
        &app,
        reqwest::Method::POST,
        "/api/v1/chat/",
        None,
        Some(json!({"message": "hi"})),
    )
    .await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.text().await.unwrap();
    let event: Value = serde_json::from_str(body.trim().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(event["type"], "error");
    assert!(event["error"].as_str().unwrap().contains("Authorization"));

    let (key, _) = key_for(&app, "frank", None).await;
    let ask = || {
        send(
            &app,
            reqwest::Method::POST,
            "/api/v1/chat/",
            Some(&key),
            Some(json!({"message": "hi", "stream": false})),
        )
    };
    assert_eq!(ask().await.status(), 200);
    let limited = ask().await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let body = limited.text().await.unwrap();
    assert!(
        body.starts_with("data: ") && body.contains("rate limit"),
        "{body}"
    );
}
