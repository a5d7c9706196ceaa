//! Follow-up questions: from the model in one short extra call when there is one,
//! else derived from the sources (the other topics the retrieved documents cover).

use std::collections::HashSet;

use crate::retrieval::Hit;
use crate::text;

/// How many follow-up questions an answer gets, at most.
pub const MAX_FOLLOW_UPS: usize = 3;

/// The instructions of the model call that suggests follow-ups.
pub const PROMPT: &str = "Suggest three short follow-up questions the user could ask next about \
     this topic. Answer with the questions only, one per line, no numbering.";

/// Questions about the headings and documents of `hits` that the question does not
/// already ask about, best hit first.
pub fn from_sources(question: &str, hits: &[Hit]) -> Vec<String> {
    let asked: HashSet<String> = text::content_words(question).collect();
    let mut seen = HashSet::new();
    let mut questions = Vec::new();
    for hit in hits {
        let topic = hit.heading_path.last().cloned().unwrap_or_default();
        let key = format!("{}\u{0}{topic}", hit.document_name);
        if !seen.insert(key) {
            continue;
        }
        let words: HashSet<String> = text::content_words(&topic).collect();
        if !words.is_empty() && words.is_subset(&asked) {
            continue;
        }
        questions.push(if topic.is_empty() {
            format!("What else does {} cover?", hit.document_name)
        } else {
            format!("What does {} say about {}?", hit.document_name, topic)
        });
        if questions.len() == MAX_FOLLOW_UPS {
            break;
        }
    }
    questions
}

/// The questions of a model's reply: one per line, list markers removed.
pub fn parse_reply(reply: &str) -> Vec<String> {
    reply
        .lines()
        .map(|line| {
            line.trim()
                .trim_start_matches(|c: char| {
                    c.is_ascii_digit() || matches!(c, '-' | '*' | '.' | ')' | '•')
                })
                .trim()
                .to_owned()
        })
        .filter(|line| line.len() > 3)
        .take(MAX_FOLLOW_UPS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(document: &str, heading: &[&str]) -> Hit {
        Hit {
            chunk_id: format!("{document}:0"),
            document_id: document.into(),
            document_name: document.into(),
            heading_path: heading.iter().map(|h| (*h).to_owned()).collect(),
            text: String::new(),
            score: 1.0,
        }
    }

    #[test]
    fn other_topics_of_the_sources_become_questions() {
        let hits = [
            hit("tides.md", &["Tides", "Causes"]),
            hit("tides.md", &["Tides", "Causes"]),
            hit("tides.md", &["Tides", "Spring tides"]),
            hit("moon.md", &[]),
        ];
        assert_eq!(
            from_sources("What causes tides?", &hits),
            [
                "What does tides.md say about Spring tides?",
                "What else does moon.md cover?"
            ]
        );
    }

    #[test]
    fn a_model_reply_is_read_line_by_line() {
        let reply = "1. Why is the sea salty?\n- How deep is it?\n\n* Who named it?\nok";
        assert_eq!(
            parse_reply(reply),
            ["Why is the sea salty?", "How deep is it?", "Who named it?"]
        );
    }
}
