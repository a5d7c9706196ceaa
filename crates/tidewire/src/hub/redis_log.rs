//! The shared run log: every run's events in a Redis stream, so any node can replay
//! and follow a run another node produces.
//!
//! The in-process [`Run`](super::Run) stays the log its own node reads (nothing
//! about local streaming changes, nor its speed); the node that produces a run copies
//! its events here, in order, and other nodes follow the stream into a local mirror
//! of the run. This module only speaks Redis; when to copy, follow, renew or reap is
//! the business of [`cluster`](super::cluster).
//!
//! Keys, under a prefix of the configuration's choosing:
//! - `run:{id}`: a stream per run. Event `seq` is the entry `0-seq`, with its native
//!   name (`e`) and JSON (`d`); the first entry also carries the run's identity
//!   (`i`). Expires `retention` after its last write.
//! - `live`: a sorted set of the runs being produced, scored by the end of their
//!   lease (Unix milliseconds); a node renews its runs' leases while it lives.
//! - `cancel` (a pub/sub channel) and `cancel:{id}` (a flag, for a node that missed
//!   the message): requests to stop a run, for whichever node produces it.
//! - `key:{idempotency key}`: the fingerprint of the request that used it and its run.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use serde::{Deserialize, Serialize};
use tidewire_protocol::ChatEvent;

use super::format::RunIdentity;

/// The prefix of a message on the cancel channel that asks every node to forget
/// a run, not only to stop it.
pub const FORGET: &str = "forget:";

/// How long a follower's read waits for new entries before it looks around (is the
/// run still live? does anyone still follow it?).
pub const FOLLOW_BLOCK: Duration = Duration::from_millis(1000);

/// Most entries one read or one append carries.
const BATCH: usize = 512;

/// Appends events `first..` to a run's stream, skipping those already there, and
/// answers the stream's last sequence number. A stream that lacks events before
/// `first` (Redis lost it: a restart without persistence) gets nothing, and the
/// answer tells the sender where to resend from. A run deleted with its
/// conversation (its tombstone, `KEYS[2]`, exists) gets nothing either: -1.
const APPEND: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then
  return -1
end
local last = 0
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then
  last = tonumber(string.match(top[1][1], '%-(%d+)$'))
end
local first = tonumber(ARGV[1])
if first > last + 1 then
  return last
end
for i = 4, #ARGV, 2 do
  local seq = first + math.floor((i - 4) / 2)
  if seq > last then
    if seq == 1 and ARGV[3] ~= '' then
      redis.call('XADD', KEYS[1], '0-1', 'e', ARGV[i], 'd', ARGV[i + 1], 'i', ARGV[3])
    else
      redis.call('XADD', KEYS[1], '0-' .. seq, 'e', ARGV[i], 'd', ARGV[i + 1])
    end
    last = seq
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return last
";

/// What went wrong with the shared log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// An entry of a run's stream is not one tidewire wrote.
    #[error("run {run_id}: unreadable log entry {entry}: {reason}")]
    BadEntry {
        /// The run.
        run_id: String,
        /// The entry id.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A run's identity as the first entry of its stream carries it.
#[derive(Serialize, Deserialize)]
struct IdentityEntry {
    run_id: String,
    conversation_id: String,
    message_id: String,
    created: u64,
    attributes: Option<serde_json::Value>,
    user_id: String,
}

impl From<&RunIdentity> for IdentityEntry {
    fn from(identity: &RunIdentity) -> Self {
        Self {
            run_id: identity.run_id.clone(),
            conversation_id: identity.conversation_id.clone(),
            message_id: identity.message_id.clone(),
            created: identity.created,
            attributes: identity.attributes.as_deref().cloned(),
            user_id: identity.user_id.clone(),
        }
    }
}

impl From<IdentityEntry> for RunIdentity {
    fn from(entry: IdentityEntry) -> Self {
        Self {
            run_id: entry.run_id,
            conversation_id: entry.conversation_id,
            message_id: entry.message_id,
            created: entry.created,
            attributes: entry.attributes.map(std::sync::Arc::new),
            user_id: entry.user_id,
        }
    }
}

/// Who used an idempotency key first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// This request: start the run.
    Claimed,
    /// An earlier request, with this fingerprint (hex), for this run.
    Taken {
        /// The earlier request's fingerprint, in hex.
        fingerprint: String,
        /// The run it started.
        run_id: String,
    },
}

/// The shared log in one Redis.
pub struct RedisLog {
    client: Client,
    conn: ConnectionManager,
    prefix: String,
    append: Script,
    retention: Duration,
}

impl std::fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLog")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisLog {
    /// Connects to the Redis at `url`, keeping keys under `prefix`; entries expire
    /// `retention` after a run's last write. The connection comes back by itself
    /// after Redis restarts or the network heals.
    pub async fn connect(url: &str, prefix: &str, retention: Duration) -> Result<Self, LogError> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(1));
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.to_owned(),
            append: Script::new(APPEND),
            retention,
        })
    }

    fn running_ttl(&self) -> Duration {
        self.retention.max(Duration::from_secs(60))
    }

    fn stream_key(&self, run_id: &str) -> String {
        format!("{}run:{run_id}", self.prefix)
    }

    fn live_key(&self) -> String {
        format!("{}live", self.prefix)
    }

    /// The pub/sub channel of cancel requests.
    pub fn cancel_channel(&self) -> String {
        format!("{}cancel", self.prefix)
    }

    fn tombstone(&self, run_id: &str) -> String {
        format!("{}gone:{run_id}", self.prefix)
    }

    fn cancel_flag(&self, run_id: &str) -> String {
        format!("{}cancel:{run_id}", self.prefix)
    }

    fn idempotency_key(&self, key: &str) -> String {
        format!("{}key:{key}", self.prefix)
    }

    /// The client, for connections of one's own (pub/sub, blocking reads).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether Redis answers.
    pub async fn ping(&self) -> Result<(), LogError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// Appends `events`, numbered from `first`, to the run's stream (with the run's
    /// identity when `first` is 1); answers the stream's last sequence number, which
    /// is below `first - 1` when Redis lost earlier events and they must be sent
    /// again, and `None` when the run was deleted.
    pub async fn append(
        &self,
        identity: &RunIdentity,
        first: u64,
        events: &[ChatEvent],
    ) -> Result<Option<u64>, LogError> {
        let mut invocation = self.append.key(self.stream_key(&identity.run_id));
        invocation.key(self.tombstone(&identity.run_id));
        // A finished run stays as long as the retention says, as in memory; a
        // running one at least a minute past its last write (its lease renewals
        // extend that).
        let finished = events
            .iter()
            .take(BATCH)
            .any(|event| matches!(event, ChatEvent::Done(_)));
        let ttl = if finished {
            self.retention
        } else {
            self.running_ttl()
        };
        invocation.arg(first).arg(millis(ttl).max(1));
        if first == 1 {
            // Plain data serializes; an empty identity would only make mirrors fail.
            let entry = serde_json::to_string(&IdentityEntry::from(identity)).unwrap_or_default();
            invocation.arg(entry);
        } else {
            invocation.arg("");
        }
        for event in events.iter().take(BATCH) {
            invocation.arg(event.name()).arg(event.data_json());
        }
        let mut conn = self.conn.clone();
        let last: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(u64::try_from(last).ok())
    }

    /// Renews the leases of runs produced here until `until` (Unix milliseconds),
    /// keeps their streams from expiring, and answers which of them were asked to
    /// stop (by a node whose pub/sub message may not have arrived).
    pub async fn renew(&self, run_ids: &[String], until: i64) -> Result<Vec<String>, LogError> {
        if run_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(self.live_key());
        for run_id in run_ids {
            zadd.arg(until).arg(run_id);
        }
        pipe.add_command(zadd).ignore();
        let ttl = millis(self.running_ttl());
        for run_id in run_ids {
            pipe.cmd("PEXPIRE")
                .arg(self.stream_key(run_id))
                .arg(ttl)
                .ignore();
        }
        let mut mget = redis::cmd("MGET");
        for run_id in run_ids {
            mget.arg(self.cancel_flag(run_id));
        }
        pipe.add_command(mget);
        let mut conn = self.conn.clone();
        let (flags,): (Vec<Option<String>>,) = pipe.query_async(&mut conn).await?;
        Ok(run_ids
            .iter()
            .zip(flags)
            .filter(|(_, flag)| flag.is_some())
            .map(|(run_id, _)| run_id.clone())
            .collect())
    }

    /// Takes a run out of the live set: it ended, and no one need reap it.
    pub async fn retire(&self, run_id: &str) -> Result<(), LogError> {
        let mut conn = self.conn.clone();
        redis::cmd("ZREM")
            .arg(self.live_key())
            .arg(run_id)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Runs whose lease ended before `now` (Unix milliseconds): their node stopped
    /// renewing them.
    pub async fn expired(&self, now: i64) -> Result<Vec<String>, LogError> {
        let mut conn = self.conn.clone();
        Ok(redis::cmd("ZRANGEBYSCORE")
            .arg(self.live_key())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(100)
            .query_async(&mut conn)
            .await?)
    }

    /// Whether the run's lease is held (its node renews it).
    pub async fn is_live(&self, run_id: &str) -> Result<bool, LogError> {
        let mut conn = self.conn.clone();
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.live_key())
            .arg(run_id)
            .query_async(&mut conn)
            .await?;
        Ok(score.is_some())
    }

    /// Takes the right to reap a run for `hold`, so one node does it.
    pub async fn claim_reap(
        &self,
        run_id: &str,
        node: &str,
        hold: Duration,
    ) -> Result<bool, LogError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}reap:{run_id}", self.prefix))
            .arg(node)
            .arg("NX")
            .arg("PX")
            .arg(millis(hold))
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// The run's identity, if its stream exists.
    pub async fn identity(&self, run_id: &str) -> Result<Option<RunIdentity>, LogError> {
        let mut conn = self.conn.clone();
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.stream_key(run_id))
            .arg("0-1")
            .arg("0-1")
            .query_async(&mut conn)
            .await?;
        let Some(first) = reply.ids.first() else {
            return Ok(None);
        };
        let Some(json) = first.get::<String>("i") else {
            return Err(self.bad_entry(run_id, first, "the first entry has no identity"));
        };
        let entry: IdentityEntry = serde_json::from_str(&json)
            .map_err(|error| self.bad_entry(run_id, first, &error.to_string()))?;
        Ok(Some(entry.into()))
    }

    /// Every event of the run's stream, in order (empty when there is none).
    pub async fn events(&self, run_id: &str) -> Result<Vec<ChatEvent>, LogError> {
        let mut conn = self.conn.clone();
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.stream_key(run_id))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await?;
        reply
            .ids
            .iter()
            .map(|entry| self.decode(run_id, entry).map(|(_, event)| event))
            .collect()
    }

    /// A connection for blocking reads: they hold their connection while they wait,
    /// so each follower has its own.
    pub async fn reader(&self) -> Result<MultiplexedConnection, LogError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(FOLLOW_BLOCK + Duration::from_secs(2)));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// The events after `after`, waiting up to [`FOLLOW_BLOCK`] for some; empty when
    /// none came.
    pub async fn read_after(
        &self,
        reader: &mut MultiplexedConnection,
        run_id: &str,
        after: u64,
    ) -> Result<Vec<(u64, ChatEvent)>, LogError> {
        let options = StreamReadOptions::default()
            .block(FOLLOW_BLOCK.as_millis() as usize)
            .count(BATCH);
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg(&options)
            .arg("STREAMS")
            .arg(self.stream_key(run_id))
            .arg(format!("0-{after}"))
            .query_async(reader)
            .await?;
        reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .map(|entry| self.decode(run_id, &entry))
            .collect()
    }

    /// Asks the node that produces the run to stop it: a message for a node that
    /// listens now, and a flag its next lease renewal finds.
    pub async fn request_cancel(&self, run_id: &str) -> Result<(), LogError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("SET")
            .arg(self.cancel_flag(run_id))
            .arg(1)
            .arg("PX")
            .arg(60_000)
            .ignore()
            .cmd("PUBLISH")
            .arg(self.cancel_channel())
            .arg(run_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Removes runs from the log (their conversation was deleted) and tells every
    /// node to forget them, stopping the one that produces any of them.
    pub async fn forget(&self, run_ids: &[String]) -> Result<(), LogError> {
        if run_ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let mut del = redis::cmd("DEL");
        for run_id in run_ids {
            del.arg(self.stream_key(run_id));
        }
        pipe.add_command(del).ignore();
        for run_id in run_ids {
            pipe.cmd("SET")
                .arg(self.tombstone(run_id))
                .arg(1)
                .arg("PX")
                .arg(millis(self.running_ttl()))
                .ignore()
                .cmd("SET")
                .arg(self.cancel_flag(run_id))
                .arg(1)
                .arg("PX")
                .arg(60_000)
                .ignore()
                .cmd("PUBLISH")
                .arg(self.cancel_channel())
                .arg(format!("{FORGET}{run_id}"))
                .ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The value of the cluster's secret `name`: `proposal` if no node set one
    /// before (a Redis that lost its data gets the first proposal again).
    pub async fn shared_secret(&self, name: &str, proposal: &str) -> Result<String, LogError> {
        let key = format!("{}secret:{name}", self.prefix);
        let mut conn = self.conn.clone();
        let (held,): (String,) = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(proposal)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await?;
        Ok(held)
    }

    /// Claims an idempotency key for `run_id` (a run about to start), or tells who
    /// has it. The claim lasts `ttl`.
    pub async fn claim_key(
        &self,
        key: &str,
        fingerprint: &str,
        run_id: &str,
        ttl: Duration,
    ) -> Result<KeyClaim, LogError> {
        let mut conn = self.conn.clone();
        let (set, value): (Option<String>, Option<String>) = redis::pipe()
            .cmd("SET")
            .arg(self.idempotency_key(key))
            .arg(format!("{fingerprint} {run_id}"))
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .cmd("GET")
            .arg(self.idempotency_key(key))
            .query_async(&mut conn)
            .await?;
        if set.is_some() {
            return Ok(KeyClaim::Claimed);
        }
        let value = value.unwrap_or_default();
        let (fingerprint, run_id) = value.split_once(' ').unwrap_or((&value, ""));
        Ok(KeyClaim::Taken {
            fingerprint: fingerprint.to_owned(),
            run_id: run_id.to_owned(),
        })
    }

    /// Gives an idempotency key up (its run could not start).
    pub async fn release_key(&self, key: &str) -> Result<(), LogError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.idempotency_key(key))
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    fn decode(&self, run_id: &str, entry: &StreamId) -> Result<(u64, ChatEvent), LogError> {
        let seq = entry
            .id
            .strip_prefix("0-")
            .and_then(|seq| seq.parse().ok())
            .ok_or_else(|| self.bad_entry(run_id, entry, "its id is not 0-<seq>"))?;
        let (Some(name), Some(data)) = (entry.get::<String>("e"), entry.get::<String>("d")) else {
            return Err(self.bad_entry(run_id, entry, "it lacks the event's name or data"));
        };
        let event = ChatEvent::from_wire(&name, &data)
            .map_err(|error| self.bad_entry(run_id, entry, &error.to_string()))?;
        Ok((seq, event))
    }

    fn bad_entry(&self, run_id: &str, entry: &StreamId, reason: &str) -> LogError {
        LogError::BadEntry {
            run_id: run_id.to_owned(),
            entry: entry.id.clone(),
            reason: reason.to_owned(),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    //! Against the Redis of the machine (127.0.0.1:6379, or `TIDEWIRE_TEST_REDIS_URL`),
    //! each test under a prefix of its own.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tidewire_protocol::MessageStatus;

    async fn log() -> RedisLog {
        let url = std::env::var("TIDEWIRE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("tw_test_{}:", uuid::Uuid::new_v4().simple());
        RedisLog::connect(&url, &prefix, Duration::from_secs(60))
            .await
            .unwrap()
    }

    fn identity(run_id: &str) -> RunIdentity {
        RunIdentity {
            run_id: run_id.into(),
            conversation_id: "c".into(),
            message_id: "m".into(),
            created: 42,
            attributes: Some(std::sync::Arc::new(serde_json::json!({"model": "x"}))),
            user_id: "u".into(),
        }
    }

    fn tokens(range: std::ops::Range<u32>) -> Vec<ChatEvent> {
        range.map(|n| ChatEvent::token(n.to_string())).collect()
    }

    #[tokio::test]
    async fn appends_are_ordered_idempotent_and_report_gaps() {
        let log = log().await;
        let run = identity("r1");
        assert_eq!(log.append(&run, 1, &tokens(0..3)).await.unwrap(), Some(3));
        // A retried batch overlapping what is there adds only what is new.
        assert_eq!(log.append(&run, 2, &tokens(1..5)).await.unwrap(), Some(5));
        // A batch after a gap adds nothing and says where the log ends.
        assert_eq!(log.append(&run, 9, &tokens(8..9)).await.unwrap(), Some(5));
        let events = log.events("r1").await.unwrap();
        assert_eq!(events, tokens(0..5));
        assert_eq!(log.identity("r1").await.unwrap(), Some(run));
        assert_eq!(log.identity("nope").await.unwrap(), None);

        let mut reader = log.reader().await.unwrap();
        let after_three = log.read_after(&mut reader, "r1", 3).await.unwrap();
        assert_eq!(
            after_three,
            vec![(4, ChatEvent::token("3")), (5, ChatEvent::token("4"))]
        );
        // A follower waiting at the end gets the next append.
        let waiting = log.read_after(&mut reader, "r1", 5);
        let appended = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            log.append(
                &identity("r1"),
                6,
                &[ChatEvent::done(MessageStatus::Complete)],
            )
            .await
            .unwrap()
        };
        let (read, last) = tokio::join!(waiting, appended);
        assert_eq!(last, Some(6));
        assert_eq!(
            read.unwrap(),
            vec![(6, ChatEvent::done(MessageStatus::Complete))]
        );
    }

    #[tokio::test]
    async fn a_lost_stream_is_resent_from_the_start() {
        let log = log().await;
        let run = identity("r2");
        log.append(&run, 1, &tokens(0..4)).await.unwrap();
        let mut conn = log.conn.clone();
        redis::cmd("DEL")
            .arg(log.stream_key("r2"))
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        // The producer's next batch learns the log is empty...
        assert_eq!(log.append(&run, 5, &tokens(4..6)).await.unwrap(), Some(0));
        // ...and sends everything again, identity first.
        assert_eq!(log.append(&run, 1, &tokens(0..6)).await.unwrap(), Some(6));
        assert_eq!(log.events("r2").await.unwrap(), tokens(0..6));
        assert_eq!(log.identity("r2").await.unwrap(), Some(run.clone()));
        // Deleted with its conversation: gone, and a late append does not bring it back.
        log.forget(&["r2".to_owned()]).await.unwrap();
        assert_eq!(log.identity("r2").await.unwrap(), None);
        assert_eq!(log.append(&run, 7, &tokens(6..7)).await.unwrap(), None);
        assert_eq!(log.append(&run, 1, &tokens(0..7)).await.unwrap(), None);
        assert_eq!(log.identity("r2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn leases_expire_unless_renewed_and_carry_cancel_flags() {
        let log = log().await;
        let ids = vec!["a".to_owned(), "b".to_owned()];
        let now = crate::store::now_millis();
        assert!(log.renew(&ids, now + 60_000).await.unwrap().is_empty());
        assert!(log.is_live("a").await.unwrap());
        assert!(log.expired(now).await.unwrap().is_empty());
        log.renew(&ids[1..], now - 1).await.unwrap();
        assert_eq!(log.expired(now).await.unwrap(), vec!["b".to_owned()]);
        log.retire("b").await.unwrap();
        assert!(!log.is_live("b").await.unwrap());
        log.request_cancel("a").await.unwrap();
        assert_eq!(
            log.renew(&ids[..1], now + 60_000).await.unwrap(),
            vec!["a".to_owned()]
        );
        assert!(
            log.claim_reap("b", "n1", Duration::from_secs(5))
                .await
                .unwrap()
        );
        assert!(
            !log.claim_reap("b", "n2", Duration::from_secs(5))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn an_idempotency_key_goes_to_the_first_claim() {
        let log = log().await;
        let ttl = Duration::from_secs(60);
        assert_eq!(
            log.claim_key("k", "f1", "run1", ttl).await.unwrap(),
            KeyClaim::Claimed
        );
        assert_eq!(
            log.claim_key("k", "f2", "run2", ttl).await.unwrap(),
            KeyClaim::Taken {
                fingerprint: "f1".into(),
                run_id: "run1".into()
            }
        );
        log.release_key("k").await.unwrap();
        assert_eq!(
            log.claim_key("k", "f2", "run2", ttl).await.unwrap(),
            KeyClaim::Claimed
        );
    }
}
