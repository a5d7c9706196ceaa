//! The behaviour of a [`Store`], one suite run against each implementation: what
//! the hub and the API may rely on, whichever database holds the data. Each test is
//! a function generic over the [`Backend`]; [`suite!`] makes it a test once per
//! backend (`store::contract_tests::sqlite::...` and `...::postgres::...`). Tests of
//! one implementation's machinery (SQLite's data directory lock and batching,
//! PostgreSQL's nodes and schemas) stay with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use futures_util::future::join_all;
use tidewire_protocol::api::Role;
use tidewire_protocol::{MessageStatus, ToolCallRecord, Usage};

use super::{
    ApiKeys, DocumentKey, DocumentRecord, FinishedMessage, LOCAL_USER, NewTurn, PartialAnswer,
    Store, StoreError, Timestamp, new_id,
};

/// A store under test, with what the suite needs to see below its trait.
pub(crate) trait Backend: Store + Sized {
    /// Where a store under test keeps its data; removed when dropped.
    type Place;
    /// A new, empty place.
    fn place() -> Self::Place;
    /// A store on `place`, with the API keys of its database.
    async fn open(place: &Self::Place) -> (Self, ApiKeys);
    /// How many pieces of answers are stored, not yet folded into a text.
    async fn pieces(&self) -> i64;
    /// A message's stored text, without its pieces.
    async fn bare_content(&self, message_id: &str) -> String;
}

/// Makes each named test of this module a test of one backend. The place is
/// removed after the runtime has stopped, so no connection can still hold it, even
/// when the test failed.
macro_rules! suite {
    ($backend:ty: $($test:ident),+ $(,)?) => {$(
        #[test]
        fn $test() {
            let place = <$backend as super::Backend>::place();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (store, keys) = <$backend as super::Backend>::open(&place).await;
                super::$test(&store, &keys).await;
            });
            drop(runtime);
            drop(place);
        }
    )+};
}

macro_rules! all_tests {
    ($backend:ty) => {
        suite!($backend:
            concurrent_turns_continue_create_or_miss_their_conversations,
            a_flush_and_a_finish_of_one_answer_end_with_the_finish,
            an_answer_of_a_deleted_conversation_is_gone,
            streaming_answers_become_interrupted_keeping_their_text,
            interrupt_runs_marks_only_the_streaming_answers_of_those_runs,
            messages_keep_their_order,
            conversations_are_their_users_own,
            a_client_can_name_the_conversation_it_creates,
            conversations_are_listed_by_their_last_turn,
            documents_are_found_by_source_or_by_upload_name,
            api_keys_are_made_listed_revoked_and_found_by_hash,
        );
    };
}

mod sqlite {
    all_tests!(crate::store::SqliteStore);
}

mod postgres {
    all_tests!(crate::store::PostgresStore);
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

fn finished(message_id: &str, content: &str) -> FinishedMessage {
    FinishedMessage {
        message_id: message_id.to_owned(),
        content: content.to_owned(),
        status: MessageStatus::Complete,
        model: None,
        usage: None,
        error: None,
        sources: Vec::new(),
        quality_score: None,
        follow_up_questions: Vec::new(),
        tool_calls: Vec::new(),
    }
}

fn piece(message_id: &str, position: usize, text: &str) -> PartialAnswer {
    PartialAnswer {
        message_id: message_id.to_owned(),
        position,
        text: text.to_owned(),
    }
}

async fn concurrent_turns_continue_create_or_miss_their_conversations<S: Backend>(
    store: &S,
    _: &ApiKeys,
) {
    store.ping().await.unwrap();
    let first = store.start_turn(turn(None, "first")).await.unwrap();
    // New conversations, continued ones and ones naming a conversation that does
    // not exist, all at once.
    let results = join_all((0..60).map(|i| {
        let conversation = match i % 3 {
            0 => None,
            1 => Some(first.conversation_id.clone()),
            _ => Some(format!("missing-{i}")),
        };
        async move {
            store
                .start_turn(turn(conversation.as_deref(), &format!("q{i}")))
                .await
        }
    }))
    .await;
    for (i, result) in results.iter().enumerate() {
        match i % 3 {
            2 => assert!(
                matches!(result, Err(StoreError::ConversationNotFound(id)) if *id == format!("missing-{i}")),
                "{i}: {result:?}"
            ),
            1 => assert_eq!(
                result.as_ref().unwrap().conversation_id,
                first.conversation_id
            ),
            _ => assert_ne!(
                result.as_ref().unwrap().conversation_id,
                first.conversation_id
            ),
        }
    }
    let messages = store
        .list_messages(&first.conversation_id, LOCAL_USER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(messages.len(), 2 + 2 * 20);
    let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=42).collect::<Vec<_>>());
    for pair in messages.chunks(2) {
        assert_eq!(pair[0].role, Role::User);
        assert_eq!(pair[0].status, MessageStatus::Complete);
        assert_eq!(pair[1].role, Role::Assistant);
        assert_eq!(pair[1].status, MessageStatus::Streaming);
        assert_eq!(pair[1].content, "");
    }
    let conversations = store.list_conversations(LOCAL_USER, 500).await.unwrap();
    assert_eq!(conversations.len(), 1 + 20);
    let titles: HashSet<&str> = conversations.iter().map(|c| c.title.as_str()).collect();
    assert!(titles.contains("first") && titles.contains("q0") && titles.contains("q57"));
    assert!(
        !titles.contains("q1"),
        "a continued conversation keeps its title"
    );
}

async fn a_flush_and_a_finish_of_one_answer_end_with_the_finish<S: Backend>(
    store: &S,
    _: &ApiKeys,
) {
    let started = store.start_turn(turn(None, "question")).await.unwrap();
    let answer = started.assistant_message_id.clone();
    let tool_call = ToolCallRecord {
        tool_call_id: "call_1".into(),
        tool_name: "lookup".into(),
        arguments: serde_json::json!({"q": "x"}),
        result: Some(serde_json::json!({"found": 1})),
        duration_ms: Some(4),
        is_error: false,
    };
    let whole = FinishedMessage {
        model: Some("synthetic".into()),
        usage: Some(Usage::new(2, 3)),
        quality_score: Some(0.5),
        follow_up_questions: vec!["why?".into()],
        tool_calls: vec![tool_call],
        ..finished(&answer, "whole answer")
    };
    // Whatever their order, the finish wins.
    let (flushed, finished_now) = tokio::join!(
        store.flush_partial(vec![piece(&answer, 0, "part")]),
        store.finish_message(whole.clone())
    );
    flushed.unwrap();
    assert!(finished_now.unwrap());
    // A flush that comes late adds nothing to a finished answer.
    store
        .flush_partial(vec![piece(&answer, 4, "stale")])
        .await
        .unwrap();
    let run_id = store
        .list_messages(&started.conversation_id, LOCAL_USER)
        .await
        .unwrap()
        .unwrap()[1]
        .run_id
        .clone()
        .unwrap();
    let stored = store
        .message_by_run(&run_id, LOCAL_USER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.id, answer);
    assert_eq!(stored.content, "whole answer");
    assert_eq!(stored.status, MessageStatus::Complete);
    assert_eq!(stored.model.as_deref(), Some("synthetic"));
    assert_eq!(stored.usage, Some(Usage::new(2, 3)));
    assert_eq!(stored.quality_score, Some(0.5));
    assert_eq!(stored.follow_up_questions, ["why?"]);
    assert_eq!(stored.tool_calls[0].tool_name, "lookup");
    assert_eq!(
        stored.tool_calls[0].result,
        Some(serde_json::json!({"found": 1}))
    );
    assert!(stored.sources.is_empty());
    assert_eq!(stored.error, None);
    assert_eq!(store.pieces().await, 0);

    // Writing it twice changes nothing.
    assert!(store.finish_message(whole).await.unwrap());
    let again = store
        .message_by_run(&run_id, LOCAL_USER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.content.as_str(), again.status, again.usage),
        (
            "whole answer",
            MessageStatus::Complete,
            Some(Usage::new(2, 3))
        )
    );

    // A failed answer keeps its partial text and its error.
    let failing = store.start_turn(turn(None, "fail")).await.unwrap();
    store
        .flush_partial(vec![piece(&failing.assistant_message_id, 0, "hal")])
        .await
        .unwrap();
    let failed = FinishedMessage {
        status: MessageStatus::Failed,
        error: Some(("upstream_error".into(), "the model went away".into())),
        ..finished(&failing.assistant_message_id, "hal")
    };
    assert!(store.finish_message(failed).await.unwrap());
    let messages = store
        .list_messages(&failing.conversation_id, LOCAL_USER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(messages[1].content, "hal");
    assert_eq!(messages[1].status, MessageStatus::Failed);
    assert_eq!(
        messages[1].error,
        Some(("upstream_error".into(), "the model went away".into()))
    );
    assert_eq!(store.pieces().await, 0);
}

async fn an_answer_of_a_deleted_conversation_is_gone<S: Backend>(store: &S, _: &ApiKeys) {
    let started = store.start_turn(turn(None, "soon gone")).await.unwrap();
    let answer = started.assistant_message_id.clone();
    store
        .flush_partial(vec![piece(&answer, 0, "some")])
        .await
        .unwrap();
    assert!(
        store
            .delete_conversation(&started.conversation_id, LOCAL_USER)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_conversation(&started.conversation_id, LOCAL_USER)
            .await
            .unwrap()
    );
    assert_eq!(store.pieces().await, 0, "pieces go with their answer");
    // Late writes of its run are harmless.
    store
        .flush_partial(vec![piece(&answer, 4, " more")])
        .await
        .unwrap();
    assert!(
        !store
            .finish_message(finished(&answer, "some more"))
            .await
            .unwrap()
    );
    assert!(
        store
            .list_messages(&started.conversation_id, LOCAL_USER)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !store
            .conversation_exists(&started.conversation_id, LOCAL_USER)
            .await
            .unwrap()
    );
    let after = store
        .start_turn(turn(Some(&started.conversation_id), "too late"))
        .await;
    assert!(
        matches!(after, Err(StoreError::ConversationNotFound(_))),
        "{after:?}"
    );
    assert!(store.streaming_runs().await.unwrap().is_empty());
}

async fn streaming_answers_become_interrupted_keeping_their_text<S: Backend>(
    store: &S,
    _: &ApiKeys,
) {
    let started = store.start_turn(turn(None, "crash")).await.unwrap();
    let answer = started.assistant_message_id.clone();
    store
        .flush_partial(vec![piece(&answer, 0, "ha")])
        .await
        .unwrap();
    // A retried piece changes nothing; the next piece follows it.
    store
        .flush_partial(vec![piece(&answer, 0, "ha")])
        .await
        .unwrap();
    store
        .flush_partial(vec![piece(&answer, 2, "lf")])
        .await
        .unwrap();
    let running = store
        .list_messages(&started.conversation_id, LOCAL_USER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(running[1].content, "half");
    assert_eq!(running[1].status, MessageStatus::Streaming);
    assert_eq!(store.pieces().await, 2);
    assert_eq!(store.interrupt_streaming().await.unwrap(), 1);
    let messages = store
        .list_messages(&started.conversation_id, LOCAL_USER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(messages[1].status, MessageStatus::Interrupted);
    assert_eq!(messages[1].content, "half");
    // The pieces are folded into the text, not left beside it.
    assert_eq!(store.pieces().await, 0);
    assert_eq!(store.bare_content(&answer).await, "half");
    assert_eq!(store.interrupt_streaming().await.unwrap(), 0);
}

async fn interrupt_runs_marks_only_the_streaming_answers_of_those_runs<S: Backend>(
    store: &S,
    _: &ApiKeys,
) {
    let runs: Vec<NewTurn> = (0..3).map(|i| turn(None, &format!("q{i}"))).collect();
    let mut turns = Vec::new();
    for new in &runs {
        turns.push(store.start_turn(new.clone()).await.unwrap());
    }
    let (a, b, c) = (&turns[0], &turns[1], &turns[2]);
    let (run_a, run_b, run_c) = (&runs[0].run_id, &runs[1].run_id, &runs[2].run_id);
    store
        .flush_partial(vec![
            piece(&a.assistant_message_id, 0, "a1"),
            piece(&b.assistant_message_id, 0, "b1"),
        ])
        .await
        .unwrap();
    store
        .flush_partial(vec![piece(&a.assistant_message_id, 2, "a2")])
        .await
        .unwrap();
    assert!(
        store
            .finish_message(finished(&c.assistant_message_id, "c done"))
            .await
            .unwrap()
    );

    let streaming = store.streaming_runs().await.unwrap();
    let ids: HashSet<&str> = streaming.iter().map(|(run, _)| run.as_str()).collect();
    assert_eq!(ids, HashSet::from([run_a.as_str(), run_b.as_str()]));
    assert!(
        streaming.windows(2).all(|w| w[0].1 <= w[1].1),
        "oldest first"
    );
    let started_at = store
        .list_conversations(LOCAL_USER, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|conversation| conversation.id == a.conversation_id)
        .unwrap()
        .updated_at;
    let a_at = streaming.iter().find(|(run, _)| run == run_a).unwrap().1;
    assert_eq!(a_at, started_at, "flushes leave updated_at alone");
    assert!(a_at <= Timestamp::now());

    // A finished run and an unknown one are left alone.
    let marked = store
        .interrupt_runs(vec![run_a.clone(), run_c.clone(), "no-such-run".into()])
        .await
        .unwrap();
    assert_eq!(marked, 1);
    let only_b: Vec<String> = store
        .streaming_runs()
        .await
        .unwrap()
        .into_iter()
        .map(|(run, _)| run)
        .collect();
    assert_eq!(only_b, std::slice::from_ref(run_b));
    let interrupted = store
        .message_by_run(run_a, LOCAL_USER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(interrupted.status, MessageStatus::Interrupted);
    assert_eq!(interrupted.content, "a1a2");
    assert_eq!(store.bare_content(&a.assistant_message_id).await, "a1a2");
    let running = store
        .message_by_run(run_b, LOCAL_USER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (running.status, running.content.as_str()),
        (MessageStatus::Streaming, "b1")
    );
    let done = store
        .message_by_run(run_c, LOCAL_USER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (done.status, done.content.as_str()),
        (MessageStatus::Complete, "c done")
    );
    assert_eq!(store.pieces().await, 1, "b's piece stays a piece");

    assert_eq!(store.interrupt_runs(vec![run_a.clone()]).await.unwrap(), 0);
    assert_eq!(store.interrupt_runs(Vec::new()).await.unwrap(), 0);
    // A flush after the interrupt adds nothing.
    store
        .flush_partial(vec![piece(&a.assistant_message_id, 4, "a3")])
        .await
        .unwrap();
    let interrupted = store
        .message_by_run(run_a, LOCAL_USER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(interrupted.content, "a1a2");
    assert_eq!(store.interrupt_runs(vec![run_b.clone()]).await.unwrap(), 1);
    assert!(store.streaming_runs().await.unwrap().is_empty());
    assert_eq!(store.pieces().await, 0);
}

async fn messages_keep_their_order<S: Backend>(store: &S, _: &ApiKeys) {
    let first = store.start_turn(turn(None, "one")).await.unwrap();
    let id = first.conversation_id.clone();
    let second = store.start_turn(turn(Some(&id), "two")).await.unwrap();
    // Turns of one conversation at once get places of their own, each answer right
    // after its question.
    let later: Vec<_> =
        join_all((0..5).map(|i| store.start_turn(turn(Some(&id), &format!("q{i}")))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let messages = store.list_messages(&id, LOCAL_USER).await.unwrap().unwrap();
    let seqs: Vec<i64> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=14).collect::<Vec<_>>());
    assert_eq!(messages[0].content, "one");
    assert_eq!(messages[0].id, first.user_message_id);
    assert_eq!(messages[1].id, first.assistant_message_id);
    assert_eq!(messages[2].content, "two");
    assert_eq!(messages[3].id, second.assistant_message_id);
    for started in &later {
        let at = messages
            .iter()
            .position(|m| m.id == started.user_message_id)
            .unwrap();
        assert_eq!(messages[at + 1].id, started.assistant_message_id);
        assert_eq!(messages[at].conversation_id, id);
    }
    assert!(messages.iter().all(|m| m.created_at <= m.updated_at));
}

async fn conversations_are_their_users_own<S: Backend>(store: &S, _: &ApiKeys) {
    let alice = |conversation: Option<&str>, message: &str| NewTurn {
        user_id: "alice".into(),
        ..turn(conversation, message)
    };
    let bob = |conversation: Option<&str>, message: &str| NewTurn {
        user_id: "bob".into(),
        ..turn(conversation, message)
    };
    let run = alice(None, "secret");
    let started = store.start_turn(run.clone()).await.unwrap();
    let id = started.conversation_id.clone();

    assert!(store.conversation_exists(&id, "alice").await.unwrap());
    assert!(!store.conversation_exists(&id, "bob").await.unwrap());
    assert!(store.list_messages(&id, "bob").await.unwrap().is_none());
    assert!(
        store
            .message_by_run(&run.run_id, "bob")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .list_conversations("bob", 10)
            .await
            .unwrap()
            .is_empty()
    );
    for create_missing in [false, true] {
        let intrusion = store
            .start_turn(NewTurn {
                create_missing,
                ..bob(Some(&id), "mine now")
            })
            .await;
        assert!(
            matches!(&intrusion, Err(StoreError::ConversationNotFound(missing)) if *missing == id),
            "{intrusion:?}"
        );
    }
    assert!(!store.delete_conversation(&id, "bob").await.unwrap());

    let messages = store.list_messages(&id, "alice").await.unwrap().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        store
            .message_by_run(&run.run_id, "alice")
            .await
            .unwrap()
            .unwrap()
            .id,
        started.assistant_message_id
    );
    let listed = store.list_conversations("alice", 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].title.as_str()),
        (id.as_str(), "secret")
    );
    assert!(store.delete_conversation(&id, "alice").await.unwrap());
}

async fn a_client_can_name_the_conversation_it_creates<S: Backend>(store: &S, _: &ApiKeys) {
    let named = |message: &str| NewTurn {
        create_missing: true,
        ..turn(Some("chosen-by-client"), message)
    };
    // Created once, even when several turns name it at once.
    let started: Vec<_> =
        join_all((0..4).map(|i| store.start_turn(named(&format!("  hello\n {i} ")))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    assert!(
        started
            .iter()
            .all(|turn| turn.conversation_id == "chosen-by-client")
    );
    let listed = store.list_conversations(LOCAL_USER, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].title.starts_with("hello "), "{}", listed[0].title);
    let messages = store
        .list_messages("chosen-by-client", LOCAL_USER)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (1..=8).collect::<Vec<_>>()
    );
    // Without create_missing, a missing one is not found.
    let missing = store.start_turn(turn(Some("not-chosen"), "hi")).await;
    assert!(matches!(missing, Err(StoreError::ConversationNotFound(_))));
    assert!(
        !store
            .conversation_exists("not-chosen", LOCAL_USER)
            .await
            .unwrap()
    );
}

async fn conversations_are_listed_by_their_last_turn<S: Backend>(store: &S, _: &ApiKeys) {
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            store
                .start_turn(turn(None, &format!("c{i}")))
                .await
                .unwrap()
                .conversation_id,
        );
        // Distinct times.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let listed: Vec<String> = store
        .list_conversations(LOCAL_USER, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, [ids[2].clone(), ids[1].clone(), ids[0].clone()]);
    // A new turn brings a conversation to the top; the limit cuts the list.
    store
        .start_turn(turn(Some(&ids[0]), "again"))
        .await
        .unwrap();
    let listed = store.list_conversations(LOCAL_USER, 2).await.unwrap();
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [ids[0].as_str(), ids[2].as_str()]
    );
    assert_eq!(listed[0].title, "c0");
    assert!(listed[0].updated_at > listed[0].created_at);
    assert!(
        store
            .list_conversations(LOCAL_USER, 0)
            .await
            .unwrap()
            .is_empty()
    );
}

fn record(id: &str, collection: &str, name: &str, source: &str) -> DocumentRecord {
    DocumentRecord {
        id: id.into(),
        collection: collection.into(),
        name: name.into(),
        source: source.into(),
        format: "markdown".into(),
        content_hash: "00".repeat(32),
        bytes: 10,
        chunks: 2,
        created_at: Timestamp(1_000),
        updated_at: Timestamp(1_000),
    }
}

async fn documents_are_found_by_source_or_by_upload_name<S: Backend>(store: &S, _: &ApiKeys) {
    store
        .put_document(record("a", "c", "a.md", "/x/a.md"))
        .await
        .unwrap();
    store
        .put_document(record("b", "c", "a.md", "upload"))
        .await
        .unwrap();
    store
        .put_document(record("d", "other", "a.md", "/x/a.md"))
        .await
        .unwrap();
    // Byte order, as SQLite sorts: upper case before lower case.
    store
        .put_document(record("g", "c", "B.md", "/x/B.md"))
        .await
        .unwrap();

    let by_source = DocumentKey::new("c", Some("/x/a.md"), "renamed.md");
    assert_eq!(
        store.find_document(&by_source).await.unwrap().unwrap().id,
        "a"
    );
    let uploaded = DocumentKey::new("c", None, "a.md");
    assert_eq!(
        store.find_document(&uploaded).await.unwrap().unwrap().id,
        "b"
    );
    assert!(
        store
            .find_document(&DocumentKey::new("c", None, "z.md"))
            .await
            .unwrap()
            .is_none()
    );

    // One file per collection and source; one upload per collection and name.
    let error = store
        .put_document(record("e", "c", "other.md", "/x/a.md"))
        .await;
    assert!(
        matches!(error, Err(StoreError::Database(_) | StoreError::Sqlite(_))),
        "{error:?}"
    );
    let error = store.put_document(record("f", "c", "a.md", "upload")).await;
    assert!(
        matches!(error, Err(StoreError::Database(_) | StoreError::Sqlite(_))),
        "{error:?}"
    );

    // Replacing keeps the creation time.
    let mut changed = record("a", "c", "a.md", "/x/a.md");
    changed.chunks = 7;
    changed.created_at = Timestamp::now();
    store.put_document(changed).await.unwrap();
    let stored = store.get_document("a").await.unwrap().unwrap();
    assert_eq!((stored.chunks, stored.created_at), (7, Timestamp(1_000)));
    assert!(stored.updated_at > Timestamp(1_000));
    assert_eq!(stored.bytes, 10);
    assert_eq!(stored.source, "/x/a.md");

    let listed: Vec<String> = store
        .list_documents(Some("c"))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(listed, ["g", "a", "b"]);
    assert_eq!(store.list_documents(None).await.unwrap().len(), 4);
    assert!(store.list_documents(Some("none")).await.unwrap().is_empty());

    let ids = vec!["a".to_owned(), "d".to_owned(), "missing".to_owned()];
    assert_eq!(store.delete_documents(ids).await.unwrap(), 2);
    assert_eq!(store.delete_documents(Vec::new()).await.unwrap(), 0);
    assert!(store.get_document("a").await.unwrap().is_none());
    assert_eq!(store.list_documents(None).await.unwrap().len(), 2);
}

async fn api_keys_are_made_listed_revoked_and_found_by_hash<S: Backend>(store: &S, keys: &ApiKeys) {
    let soon = Timestamp(Timestamp::now().0 + 60_000);
    let laptop = keys
        .create("alice", "laptop", "hash-1", "tw_abc", None)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let phone = keys
        .create("alice", "phone", "hash-2", "tw_def", Some(soon))
        .await
        .unwrap();
    let other = keys
        .create("bob", "", "hash-3", "tw_ghi", None)
        .await
        .unwrap();
    // A hash is one key.
    assert!(
        keys.create("carol", "", "hash-1", "tw_x", None)
            .await
            .is_err()
    );

    let found = store.find_api_key("hash-2").await.unwrap().unwrap();
    assert_eq!(found, phone);
    assert_eq!(found.expires_at, Some(soon));
    assert!(store.find_api_key("hash-9").await.unwrap().is_none());

    let mine: Vec<String> = keys
        .list(Some("alice"))
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    assert_eq!(mine, [phone.id.clone(), laptop.id.clone()], "newest first");
    assert_eq!(keys.list(None).await.unwrap().len(), 3);

    assert!(keys.revoke(&laptop.id).await.unwrap());
    assert!(!keys.revoke(&laptop.id).await.unwrap(), "revoked already");
    assert!(!keys.revoke("no-such-key").await.unwrap());
    let revoked = store.find_api_key("hash-1").await.unwrap().unwrap();
    assert!(revoked.revoked_at.is_some());
    assert_eq!(store.find_api_key("hash-3").await.unwrap().unwrap(), other);
}
