//! The extractive answerer: tidewire's offline default, with no model at all.
//!
//! It answers from the retrieved passages only: it picks the sentences that share
//! the most words with the question (rarer words weigh more), keeps them in the
//! order of their passages, cites each as `[n]` (the passage's number in the
//! prompt), and streams the result word by word. When no sentence shares a word
//! with the question, or nothing was found, it says so plainly, and how to add
//! documents. Deterministic: the same question and passages give the same answer.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tidewire_protocol::Usage;

use super::{Backend, Chunk, Generation, GenerationRequest, LlmError, TokenStream};
use crate::text;

/// At most this many sentences make an answer.
const MAX_SENTENCES: usize = 3;

/// What it says when the passages (if any) hold nothing about the question.
pub const NOTHING_FOUND: &str = "I could not find anything about that in the documents I \
     have. Add documents with `tidewire ingest PATH`, or configure a language model.";

/// The extractive answerer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extractive;

#[async_trait]
impl Backend for Extractive {
    fn model(&self) -> &str {
        "extractive"
    }

    fn is_language_model(&self) -> bool {
        false
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, LlmError> {
        let answer = compose(request.question(), &request.context);
        let words = words_with_spaces(&answer);
        // The answer is a few sentences; only a limit the client asked for cuts it.
        let limit = request
            .max_tokens
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(usize::MAX);
        let finish = if words.len() > limit {
            "length"
        } else {
            "stop"
        };
        let words: Vec<String> = words.into_iter().take(limit).collect();
        let usage = Usage::new(request.prompt_words(), words.len() as u64);
        let interval = (request.tokens_per_second > 0.0)
            .then(|| Duration::try_from_secs_f64(1.0 / request.tokens_per_second).ok())
            .flatten();
        let texts = futures_util::stream::iter(words.into_iter().enumerate()).then(
            move |(n, word)| async move {
                // The first word at once, then one per interval.
                if let (Some(interval), true) = (interval, n > 0) {
                    tokio::time::sleep(interval).await;
                } else if n % 32 == 31 {
                    tokio::task::yield_now().await;
                }
                Ok(Chunk::Text(word))
            },
        );
        let tail = futures_util::stream::iter([
            Ok(Chunk::Usage(usage)),
            Ok(Chunk::Finish(finish.to_owned())),
        ]);
        let stream: TokenStream = Box::pin(texts.chain(tail));
        Ok(Generation {
            model: self.model().to_owned(),
            stream,
        })
    }
}

/// The answer to `question` from `passages`.
pub fn compose(question: &str, passages: &[super::Passage]) -> String {
    if passages.is_empty() {
        return NOTHING_FOUND.to_owned();
    }
    let asked: HashSet<String> = text::content_words(question).collect();
    // Every sentence of prose of every passage, with its passage number.
    let sentences: Vec<(usize, String)> = passages
        .iter()
        .enumerate()
        .flat_map(|(n, passage)| {
            text::sentences(&passage.text)
                .into_iter()
                .map(move |s| (n, s))
        })
        .filter(|(_, sentence)| is_prose(sentence))
        .collect();
    // How many sentences hold each word: rare words tell more.
    let mut holding: HashMap<String, usize> = HashMap::new();
    let words_of: Vec<HashSet<String>> = sentences
        .iter()
        .map(|(_, sentence)| text::content_words(sentence).collect())
        .collect();
    for words in &words_of {
        for word in words {
            *holding.entry(word.clone()).or_default() += 1;
        }
    }
    let total = sentences.len() as f64;
    let mut scored: Vec<(f64, usize)> = words_of
        .iter()
        .enumerate()
        .filter_map(|(index, words)| {
            let score: f64 = words
                .intersection(&asked)
                .map(|word| {
                    let n = holding.get(word).copied().unwrap_or(1) as f64;
                    (1.0 + total / n).ln()
                })
                .sum();
            (score > 0.0).then_some((score, index))
        })
        .collect();
    if scored.is_empty() {
        return NOTHING_FOUND.to_owned();
    }
    // Best first; ties keep the passages' order.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut chosen: Vec<usize> = scored.iter().take(MAX_SENTENCES).map(|(_, i)| *i).collect();
    chosen.sort_unstable();
    chosen.dedup();
    chosen
        .iter()
        .map(|&index| {
            let (passage, sentence) = &sentences[index];
            format!("{} [{}]", sentence.trim(), passage + 1)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a sentence reads as prose: a few words, mostly letters, and not a table
/// row, a heading, a list of settings or a line of code.
fn is_prose(sentence: &str) -> bool {
    let words = sentence.split_whitespace().count();
    let letters = sentence.chars().filter(|c| c.is_alphabetic()).count();
    let symbols = sentence
        .chars()
        .filter(|c| matches!(c, '|' | '=' | '{' | '}' | '<' | '>' | '`' | '#' | '$'))
        .count();
    let code =
        sentence.starts_with(['#', '$', '`', '-', '*', '>']) || sentence.contains(['|', '=', '`']);
    words >= 4 && letters * 2 >= sentence.chars().count() && symbols <= 2 && !code
}

/// The words of `text`, each with the space before it (the first without), so they
/// join back into the text.
fn words_with_spaces(text: &str) -> Vec<String> {
    text.split_whitespace()
        .enumerate()
        .map(|(n, word)| {
            if n == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Passage;

    fn passage(title: &str, text: &str) -> Passage {
        Passage {
            title: title.into(),
            text: text.into(),
        }
    }

    #[test]
    fn the_most_relevant_sentences_are_cited_in_order() {
        let passages = [
            passage(
                "tides.md",
                "Tides are caused by the Moon's gravity. Sailors watch them.",
            ),
            passage(
                "moon.md",
                "The Moon orbits the Earth every 27 days. Its gravity pulls the oceans.",
            ),
        ];
        let answer = compose("What causes tides?", &passages);
        assert!(
            answer.starts_with("Tides are caused by the Moon's gravity. [1]"),
            "{answer}"
        );
        assert!(!answer.contains("Sailors"), "{answer}");
    }

    #[test]
    fn nothing_relevant_and_no_documents_are_said_plainly() {
        let passages = [passage("cats.md", "Cats sleep a lot.")];
        assert_eq!(compose("How do volcanoes erupt?", &passages), NOTHING_FOUND);
        assert_eq!(compose("anything", &[]), NOTHING_FOUND);
    }

    #[test]
    fn tables_headings_and_code_are_not_answers() {
        assert!(is_prose("Tides are caused by the Moon's gravity."));
        assert!(!is_prose("crates/tidewire-client | the async client"));
        assert!(!is_prose(
            "cancel_on_disconnect = \"3s\" # \"off\" lets runs finish"
        ));
        assert!(!is_prose("Tides"));
    }

    #[test]
    fn words_join_back_into_the_answer() {
        let words = words_with_spaces("One two  three [1]");
        assert_eq!(words.concat(), "One two three [1]");
    }
}
