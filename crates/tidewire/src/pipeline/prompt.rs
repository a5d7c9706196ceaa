//! The prompt of a question: the system prompt, the end of the conversation so far
//! (bounded in messages and characters), then the question.

use crate::llm::{Passage, PromptMessage, PromptRole};

/// How the model is told to use the sources.
const GROUNDING: &str = "Answer the question from the numbered sources below, and cite the \
     sources you use as [1], [2]. If they do not hold the answer, say so.";

/// The system message: the configured instructions, then, when there are passages,
/// how to use them and the passages themselves, numbered from 1.
pub fn system_with_sources(system: Option<&str>, passages: &[Passage]) -> Option<String> {
    let system = system.filter(|s| !s.trim().is_empty());
    if passages.is_empty() {
        return system.map(str::to_owned);
    }
    let mut text = String::new();
    if let Some(system) = system {
        text.push_str(system);
        text.push_str("\n\n");
    }
    text.push_str(GROUNDING);
    for (n, passage) in passages.iter().enumerate() {
        text.push_str(&format!(
            "\n\n[{}] {}\n{}",
            n + 1,
            passage.title,
            passage.text.trim()
        ));
    }
    Some(text)
}

/// How much of the conversation goes with a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// At most this many earlier messages.
    pub messages: usize,
    /// At most this many characters of them, in all.
    pub chars: usize,
}

/// The messages to send: `system` first (the configured instructions and the
/// sources), then the history's own system messages (as an OpenAI client sends
/// them), then the most recent of the rest of `history` that fit the limits (oldest
/// dropped first), then `question`. Empty messages are left out.
pub fn build_prompt(
    system: Option<&str>,
    history: &[PromptMessage],
    question: &str,
    limits: HistoryLimits,
) -> Vec<PromptMessage> {
    let given_system: Vec<&PromptMessage> = history
        .iter()
        .filter(|m| m.role == PromptRole::System && !m.content.trim().is_empty())
        .collect();
    let mut earlier = Vec::new();
    let mut chars = 0;
    for message in history.iter().rev() {
        if earlier.len() >= limits.messages {
            break;
        }
        let empty = message.content.trim().is_empty() && message.tool_calls.is_empty();
        if message.role == PromptRole::System || empty {
            continue;
        }
        chars += message.content.chars().count()
            + message
                .tool_calls
                .iter()
                .map(|t| t.call.arguments.len() + t.result.len())
                .sum::<usize>();
        if chars > limits.chars {
            break;
        }
        earlier.push(message.clone());
    }
    let mut prompt = Vec::with_capacity(earlier.len() + given_system.len() + 2);
    if let Some(system) = system.filter(|s| !s.trim().is_empty()) {
        prompt.push(PromptMessage::new(PromptRole::System, system.to_owned()));
    }
    prompt.extend(given_system.into_iter().cloned());
    prompt.extend(earlier.into_iter().rev());
    prompt.push(PromptMessage::new(PromptRole::User, question.to_owned()));
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: PromptRole, content: &str) -> PromptMessage {
        PromptMessage::new(role, content)
    }

    #[test]
    fn the_most_recent_history_that_fits_goes_between_system_and_question() {
        let history = vec![
            message(PromptRole::User, "one"),
            message(PromptRole::Assistant, "answer one"),
            message(PromptRole::User, "two"),
            message(PromptRole::Assistant, ""),
            message(PromptRole::User, "three"),
            message(PromptRole::Assistant, "partial"),
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

    #[test]
    fn sources_are_numbered_after_the_instructions() {
        let passages = [
            Passage {
                title: "tides.md › Causes".into(),
                text: "The Moon pulls.".into(),
            },
            Passage {
                title: "sun.md".into(),
                text: "The Sun too. ".into(),
            },
        ];
        let system = system_with_sources(Some("Be brief."), &passages).unwrap();
        assert!(system.starts_with("Be brief.\n\nAnswer the question from the numbered sources"));
        assert!(
            system.ends_with("[1] tides.md › Causes\nThe Moon pulls.\n\n[2] sun.md\nThe Sun too.")
        );
        assert_eq!(system_with_sources(None, &[]), None);
        assert_eq!(system_with_sources(Some("x"), &[]).as_deref(), Some("x"));
    }

    #[test]
    fn a_system_message_in_the_history_follows_the_configured_one() {
        let history = vec![
            message(PromptRole::System, "Answer in French."),
            message(PromptRole::User, "hi"),
        ];
        let limits = HistoryLimits {
            messages: 10,
            chars: 1000,
        };
        let prompt = build_prompt(Some("Be brief."), &history, "and now?", limits);
        assert_eq!(prompt[0], message(PromptRole::System, "Be brief."));
        assert_eq!(prompt[1], message(PromptRole::System, "Answer in French."));
        assert_eq!(prompt.len(), 4);
    }
}
