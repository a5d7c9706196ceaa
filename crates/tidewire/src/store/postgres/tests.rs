//! Tests of what only the PostgreSQL store has: nodes sharing a database, schemas,
//! connecting. Its behaviour as a [`Store`] is tested by the shared suite.
//!
//! They need a PostgreSQL server: `TIDEWIRE_TEST_POSTGRES_URL`, by default the
//! `test` database of a local one. Each test works in a schema of its own,
//! `tw_test_<random hex>`, dropped at its end, so tests run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sqlx::Connection;

use super::*;
use crate::store::contract_tests::Backend;
use crate::store::{ApiKeys, LOCAL_USER};

/// The database the tests use.
pub(crate) fn test_url() -> String {
    std::env::var("TIDEWIRE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema of one test, dropped (best effort) when this is, even when the test
/// panicked. Drop it after the runtime of the test, so no connection still holds a
/// lock in it: see [`in_schema`].
pub(crate) struct TestSchema {
    pub(crate) url: String,
    pub(crate) name: String,
}

impl TestSchema {
    pub(crate) fn new() -> Self {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).unwrap();
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        Self {
            url: test_url(),
            name: format!("tw_test_{hex}"),
        }
    }

    /// A store (a node) on this schema.
    pub(crate) async fn connect(&self) -> PostgresStore {
        PostgresStore::connect(&self.url, Some(&self.name))
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "cannot connect to the test database {} \
                     (set TIDEWIRE_TEST_POSTGRES_URL): {error}",
                    self.url
                )
            })
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop may run inside the test's runtime, which cannot be blocked on: the
        // schema goes on a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&url).await?;
                sqlx::query("SET lock_timeout = '5s'")
                    .execute(&mut conn)
                    .await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop the test schema {}: {error}", self.name);
        }
    }
}

/// Runs `test` on a multi-threaded runtime with a new schema, which is dropped
/// after the runtime.
fn in_schema(test: impl AsyncFnOnce(&TestSchema)) {
    let schema = TestSchema::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(test(&schema));
    drop(runtime);
    drop(schema);
}

impl Backend for PostgresStore {
    type Place = TestSchema;

    fn place() -> Self::Place {
        TestSchema::new()
    }

    async fn open(place: &Self::Place) -> (Self, ApiKeys) {
        let store = place.connect().await;
        let keys = ApiKeys::connect_postgres(&place.url, Some(&place.name))
            .await
            .unwrap();
        (store, keys)
    }

    async fn pieces(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM answer_parts")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    async fn bare_content(&self, message_id: &str) -> String {
        sqlx::query_scalar("SELECT content FROM messages WHERE id = $1")
            .bind(message_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

fn turn(conversation_id: Option<&str>, message: &str) -> NewTurn {
    NewTurn {
        conversation_id: conversation_id.map(str::to_owned),
        create_missing: false,
        message: message.to_owned(),
        run_id: new_id(),
        user_id: LOCAL_USER.into(),
    }
}

#[test]
fn two_nodes_starting_turns_of_one_conversation_give_every_message_its_own_place() {
    in_schema(async |schema| {
        let (one, two) = tokio::join!(schema.connect(), schema.connect());
        let first = one.start_turn(turn(None, "first")).await.unwrap();
        let id = first.conversation_id.clone();
        let node = |store: PostgresStore, name: &'static str| {
            let id = id.clone();
            tokio::spawn(async move {
                join_all((0..20).map(|i| store.start_turn(turn(Some(&id), &format!("{name} {i}")))))
                    .await
            })
        };
        let (from_one, from_two) = tokio::join!(node(one.clone(), "one"), node(two.clone(), "two"));
        let started: Vec<Turn> = from_one
            .unwrap()
            .into_iter()
            .chain(from_two.unwrap())
            .map(Result::unwrap)
            .collect();
        assert_eq!(started.len(), 40);

        let messages = two.list_messages(&id, LOCAL_USER).await.unwrap().unwrap();
        assert_eq!(messages.len(), 2 + 2 * 40, "no turn is lost");
        let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
        assert_eq!(
            seqs,
            (1..=82).collect::<Vec<_>>(),
            "every place is taken once"
        );
        for turn in &started {
            let at = messages
                .iter()
                .position(|m| m.id == turn.user_message_id)
                .unwrap();
            assert_eq!(messages[at + 1].id, turn.assistant_message_id);
        }
        for name in ["one", "two"] {
            let mine = messages
                .iter()
                .filter(|m| m.content.starts_with(name))
                .count();
            assert_eq!(mine, 20);
        }

        // Both nodes creating the same named conversation at once: created once.
        let named = |message: &str| NewTurn {
            create_missing: true,
            ..turn(Some("named-by-client"), message)
        };
        let (a, b) = tokio::join!(
            one.start_turn(named("from one")),
            two.start_turn(named("from two"))
        );
        assert_eq!(a.unwrap().conversation_id, "named-by-client");
        assert_eq!(b.unwrap().conversation_id, "named-by-client");
        let both = one
            .list_messages("named-by-client", LOCAL_USER)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(both.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    });
}

#[test]
fn flushes_racing_interrupts_and_finishes_lose_no_piece_and_leave_none_behind() {
    in_schema(async |schema| {
        let (one, two) = tokio::join!(schema.connect(), schema.connect());
        let runs: Vec<NewTurn> = (0..12).map(|i| turn(None, &format!("q{i}"))).collect();
        let mut answers = Vec::new();
        for run in &runs {
            answers.push(
                one.start_turn(run.clone())
                    .await
                    .unwrap()
                    .assistant_message_id,
            );
        }
        // One node flushes every answer, piece after piece; the other interrupts
        // or finishes them meanwhile, a few at a time.
        let flusher = tokio::spawn({
            let (one, answers) = (one.clone(), answers.clone());
            async move {
                for k in 0..40_usize {
                    let pieces = answers
                        .iter()
                        .map(|id| PartialAnswer {
                            message_id: id.clone(),
                            position: 2 * k,
                            text: format!("{k:02}"),
                        })
                        .collect();
                    one.flush_partial(pieces).await.unwrap();
                }
            }
        });
        let ender = tokio::spawn({
            let (two, runs, answers) = (two.clone(), runs.clone(), answers.clone());
            async move {
                for (i, (run, answer)) in runs.iter().zip(&answers).enumerate() {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    if i % 3 == 2 {
                        let whole = FinishedMessage {
                            message_id: answer.clone(),
                            content: "final".into(),
                            status: crate::store::MessageStatus::Complete,
                            model: None,
                            usage: None,
                            error: None,
                            sources: Vec::new(),
                            quality_score: None,
                            follow_up_questions: Vec::new(),
                            tool_calls: Vec::new(),
                        };
                        assert!(two.finish_message(whole).await.unwrap());
                    } else {
                        assert_eq!(
                            two.interrupt_runs(vec![run.run_id.clone()]).await.unwrap(),
                            1
                        );
                    }
                }
            }
        });
        let (flushed, ended) = tokio::join!(flusher, ender);
        flushed.unwrap();
        ended.unwrap();
        assert_eq!(one.pieces().await, 0, "no piece is left beside a text");
        let all: String = (0..40).map(|k| format!("{k:02}")).collect();
        for (i, run) in runs.iter().enumerate() {
            let message = two
                .message_by_run(&run.run_id, LOCAL_USER)
                .await
                .unwrap()
                .unwrap();
            if i % 3 == 2 {
                assert_eq!(message.content, "final");
            } else {
                assert_eq!(message.status, crate::store::MessageStatus::Interrupted);
                // The pieces flushed before the interrupt, all of them, in order.
                assert!(
                    all.starts_with(&message.content),
                    "{i}: {}",
                    message.content
                );
                assert_eq!(one.bare_content(&message.id).await, message.content);
            }
        }
    });
}

#[test]
fn nodes_connecting_together_to_a_new_schema_create_and_migrate_it_once() {
    in_schema(async |schema| {
        let nodes = join_all((0..4).map(|_| schema.connect())).await;
        let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&nodes[0].pool)
            .await
            .unwrap();
        assert_eq!(migrations, 1);
        // The tables are in the schema, and every connection of the pool finds them.
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 \
         ORDER BY table_name",
        )
        .bind(&schema.name)
        .fetch_all(&nodes[1].pool)
        .await
        .unwrap();
        assert_eq!(
            tables,
            [
                "_sqlx_migrations",
                "answer_parts",
                "api_keys",
                "conversations",
                "documents",
                "messages"
            ]
        );
        let pings = join_all((0..20).map(|i| nodes[i % 4].ping())).await;
        assert!(pings.iter().all(Result::is_ok));
        // Connecting again finds everything done.
        schema.connect().await.ping().await.unwrap();
    });
}

#[tokio::test]
async fn a_schema_name_is_checked_before_anything_is_sent() {
    let unreachable = "postgres://postgres@127.0.0.1:1/test";
    let too_long = "a".repeat(64);
    for bad in [
        "",
        "Public",
        "a-b",
        "a b",
        "x\"; DROP TABLE y; --",
        "é",
        too_long.as_str(),
    ] {
        let error = PostgresStore::connect(unreachable, Some(bad))
            .await
            .unwrap_err();
        assert!(
            matches!(&error, StoreError::InvalidSchema(name) if name == bad),
            "{bad}: {error}"
        );
        assert!(error.to_string().contains("schema name"), "{error}");
    }
    let error = ApiKeys::connect_postgres(unreachable, Some("No"))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::InvalidSchema(_)), "{error}");
    assert!(valid_schema(&"a".repeat(63)).is_ok());
    assert!(valid_schema("0_tw_9").is_ok());
}

#[tokio::test]
async fn a_server_that_refuses_connections_fails_the_start_at_once() {
    let started = Instant::now();
    let error = PostgresStore::connect("postgres://postgres@127.0.0.1:1/test", None)
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Database(_)), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(error.to_string().contains("refused"), "{error}");
}

#[tokio::test]
async fn a_server_that_never_answers_fails_the_start_after_the_timeout() {
    // Accepts connections (the kernel does, from the backlog) and says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let error = PostgresStore::connect(&format!("postgres://postgres@127.0.0.1:{port}/test"), None)
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed >= CONNECT_TIMEOUT && elapsed < CONNECT_TIMEOUT + Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(error.to_string().contains("no answer"), "{error}");
    drop(silent);
}

#[test]
fn nul_characters_are_stored_as_replacement_characters() {
    in_schema(async |schema| {
        let store = schema.connect().await;
        let started = store.start_turn(turn(None, "a\0b")).await.unwrap();
        store
            .flush_partial(vec![PartialAnswer {
                message_id: started.assistant_message_id.clone(),
                position: 0,
                text: "c\0".into(),
            }])
            .await
            .unwrap();
        let messages = store
            .list_messages(&started.conversation_id, LOCAL_USER)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(messages[0].content, "a\u{FFFD}b");
        assert_eq!(messages[1].content, "c\u{FFFD}");
        let listed = store.list_conversations(LOCAL_USER, 1).await.unwrap();
        assert_eq!(listed[0].title, "a\u{FFFD}b");
        // Looking up a key with a NUL in it finds nothing, and fails nothing.
        assert!(!store.conversation_exists("x\0", LOCAL_USER).await.unwrap());
        assert!(store.get_document("x\0").await.unwrap().is_none());
        let missing = store.start_turn(turn(Some("x\0"), "hi")).await;
        assert!(matches!(missing, Err(StoreError::ConversationNotFound(id)) if id == "x\0"));
    });
}
