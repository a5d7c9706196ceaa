//! The prompt of a question: the system prompt, the end of the conversation so far
//! (bounded in messages and characters), then the question.

use tidewire_protocol::MessageStatus;
use tidewire_protocol::api::{Message, Role};

use crate::llm::{PromptMessage, PromptRole};

/// How much of the conversation goes with a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// At most this many earlier messages.
    pub messages: usize,
    /// At most this many characters of them, in all.
    pub chars: usize,
}

/// The messages to send: `system` first, then the most recent of `history` that fit
/// the limits (oldest dropped first), then `question`. Answers still being written
/// (by another run) and empty ones are left out.
pub fn build_prompt(
    system: Option<&str>,
    history: &[Message],
    question: &str,
    limits: HistoryLimits,
) -> Vec<PromptMessage> {
    let mut earlier = Vec::new();
    let mut chars = 0;
    for message in history.iter().rev() {
        if earlier.len() >= limits.messages {
            break;
        }
        if message.content.trim().is_empty() || message.status == MessageStatus::Streaming {
            continue;
        }
        chars += message.content.chars().count();
        if chars > limits.chars {
            break;
        }
        earlier.push(PromptMessage {
            role: match message.role {
                Role::User => PromptRole::User,
                Role::Assistant => PromptRole::Assistant,
            },
            content: message.content.clone(),
        });
    }
    let mut prompt = Vec::with_capacity(earlier.len() + 2);
    if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
        prompt.push(PromptMessage {
            role: PromptRole::System,
            content: system.to_owned(),
        });
    }
    prompt.extend(earlier.into_iter().rev());
    prompt.push(PromptMessage {
        role: PromptRole::User,
        content: question.to_owned(),
    });
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: Role, content: &str, status: MessageStatus) -> Message {
        Message {
            id: String::new(),
            conversation_id: String::new(),
            role,
            content: content.into(),
            status,
            run_id: None,
            usage: None,
            model: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn the_most_recent_history_that_fits_goes_between_system_and_question() {
        let history = vec![
            message(Role::User, "one", MessageStatus::Complete),
            message(Role::Assistant, "answer one", MessageStatus::Complete),
            message(Role::User, "two", MessageStatus::Complete),
            message(Role::Assistant, "", MessageStatus::Failed),
            message(Role::User, "three", MessageStatus::Complete),
            message(Role::Assistant, "partial", MessageStatus::Cancelled),
        ];
        let limits = HistoryLimits {
            messages: 3,
            chars: 1000,
        };
        let prompt = build_prompt(Some("Be brief."), &history, "four", limits);
        let texts: Vec<(&PromptRole, &str)> = prompt
            .iter()
            .map(|m| (&m.role, m.content.as_str()))
            .collect();
        assert_eq!(
            texts,
            [
                (&PromptRole::System, "Be brief."),
                (&PromptRole::User, "two"),
                (&PromptRole::User, "three"),
                (&PromptRole::Assistant, "partial"),
                (&PromptRole::User, "four"),
            ]
        );
        let tight = build_prompt(
            None,
            &history,
            "four",
            HistoryLimits {
                messages: 10,
                chars: 12,
            },
        );
        assert_eq!(
            tight.len(),
            3,
            "only 'three' and 'partial' fit in 12 characters"
        );
    }
}
