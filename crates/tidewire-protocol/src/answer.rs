//! [`Answer`]: the answer so far, folded from a run's events.
//!
//! One reducer for everyone who needs the state of an answer (the hub, a
//! `stream: false` reply, the store, a client), so the fields of an answer are
//! derived in one place.

use crate::event::{
    ChatEvent, ClientToolCall, ErrorEvent, MessageStatus, Source, ToolCallRecord, Usage,
};

/// What a run has produced so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `streaming` until `done`, then how the run ended.
    pub status: MessageStatus,
    /// The text: every `token`, in order.
    pub content: String,
    /// The latest `sources`.
    pub sources: Vec<Source>,
    /// The `quality_score`, if scored.
    pub quality_score: Option<f64>,
    /// The latest `follow_up_questions`.
    pub follow_up_questions: Vec<String>,
    /// Every tool call, in the order they started, with its result once finished.
    pub tool_calls: Vec<ToolCallRecord>,
    /// The calls of the client's own tools, for the client to run, as the model
    /// wrote them.
    pub client_tool_calls: Vec<ClientToolCall>,
    /// Token counts from `metadata`.
    pub usage: Option<Usage>,
    /// The model that answered, from `metadata`.
    pub model: Option<String>,
    /// Why the model stopped (`stop`, `length`...), from `metadata`, when it said.
    pub finish_reason: Option<String>,
    /// The `error` that ended the run, if any.
    pub error: Option<ErrorEvent>,
}

impl Default for Answer {
    fn default() -> Self {
        Self {
            status: MessageStatus::Streaming,
            content: String::new(),
            sources: Vec::new(),
            quality_score: None,
            follow_up_questions: Vec::new(),
            tool_calls: Vec::new(),
            client_tool_calls: Vec::new(),
            usage: None,
            model: None,
            finish_reason: None,
            error: None,
        }
    }
}

impl Answer {
    /// Folds one event into the answer.
    pub fn apply(&mut self, event: &ChatEvent) {
        match event {
            ChatEvent::Token(token) => self.content.push_str(&token.token),
            ChatEvent::Sources(sources) => self.sources.clone_from(&sources.sources),
            ChatEvent::QualityScore(score) => self.quality_score = Some(score.quality_score),
            ChatEvent::FollowUpQuestions(questions) => {
                self.follow_up_questions
                    .clone_from(&questions.follow_up_questions);
            }
            ChatEvent::Metadata(metadata) => {
                self.usage = Some(metadata.usage);
                self.model = Some(metadata.model.clone());
                self.finish_reason.clone_from(&metadata.finish_reason);
            }
            ChatEvent::ToolStarted(call) => self.tool_calls.push(ToolCallRecord {
                tool_call_id: call.tool_call_id.clone(),
                tool_name: call.tool_name.clone(),
                arguments: call.arguments.clone(),
                result: None,
                duration_ms: None,
                is_error: false,
            }),
            ChatEvent::ToolFinished(finished) => {
                if let Some(call) = self
                    .tool_calls
                    .iter_mut()
                    .rev()
                    .find(|call| call.tool_call_id == finished.tool_call_id)
                {
                    call.result = Some(finished.result.clone());
                    call.duration_ms = Some(finished.duration_ms);
                    call.is_error = finished.is_error;
                }
            }
            // A call for the client to run: recorded without a result.
            ChatEvent::ToolCall(call) => {
                self.tool_calls.push(ToolCallRecord {
                    tool_call_id: call.tool_call_id.clone(),
                    tool_name: call.tool_name.clone(),
                    arguments: serde_json::from_str(&call.arguments)
                        .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone())),
                    result: None,
                    duration_ms: None,
                    is_error: false,
                });
                self.client_tool_calls.push((**call).clone());
            }
            ChatEvent::Error(error) => self.error = Some((**error).clone()),
            ChatEvent::Done(done) => self.status = done.status,
            ChatEvent::Run(_) | ChatEvent::Stage(_) => {}
        }
    }

    /// The answer of a whole sequence of events.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a ChatEvent>) -> Self {
        let mut answer = Self::default();
        for event in events {
            answer.apply(event);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FollowUpQuestions, Metadata, QualityScore, Sources, Timing};

    #[test]
    fn every_field_comes_from_its_event() {
        let events = [
            ChatEvent::stage("generation"),
            ChatEvent::Sources(Sources {
                sources: vec![Source {
                    chunk_id: "c1".into(),
                    document_name: "d".into(),
                    text: "t".into(),
                    score: 0.9,
                }],
            }),
            ChatEvent::token("Hel"),
            ChatEvent::token("lo"),
            ChatEvent::QualityScore(QualityScore { quality_score: 0.5 }),
            ChatEvent::FollowUpQuestions(FollowUpQuestions {
                follow_up_questions: vec!["why?".into()],
            }),
            ChatEvent::Metadata(Box::new(Metadata {
                message_id: "m".into(),
                model: "synthetic".into(),
                usage: Usage::new(2, 2),
                timing: Timing::default(),
                finish_reason: None,
                usage_estimated: false,
                stages: Default::default(),
            })),
            ChatEvent::error("boom", "it broke", false),
            ChatEvent::done(MessageStatus::Failed),
        ];
        let answer = Answer::from_events(&events);
        assert_eq!(answer.content, "Hello");
        assert_eq!(answer.sources.len(), 1);
        assert_eq!(answer.quality_score, Some(0.5));
        assert_eq!(answer.follow_up_questions, ["why?"]);
        assert_eq!(answer.usage, Some(Usage::new(2, 2)));
        assert_eq!(answer.model.as_deref(), Some("synthetic"));
        assert_eq!(answer.error.map(|e| e.code), Some("boom".to_owned()));
        assert_eq!(answer.status, MessageStatus::Failed);
        assert_eq!(Answer::default().status, MessageStatus::Streaming);
    }
}
