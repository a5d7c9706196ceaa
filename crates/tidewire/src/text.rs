//! Plain-text helpers shared by the offline answerer and the pipeline's scoring:
//! sentences, and the words that carry meaning, stemmed (Snowball's English
//! stemmer, so `causes`, `caused` and `cause` are one word).

use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};

static ENGLISH: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// Short, frequent English words that say nothing about a topic.
const STOPWORDS: &[&str] = &[
    "about", "above", "after", "again", "all", "also", "and", "any", "are", "because", "been",
    "before", "being", "below", "between", "both", "but", "can", "could", "did", "does", "doing",
    "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having",
    "her", "here", "hers", "him", "his", "how", "into", "its", "itself", "just", "more", "most",
    "not", "now", "off", "once", "only", "other", "our", "ours", "out", "over", "own", "same",
    "she", "should", "some", "such", "than", "that", "the", "their", "them", "then", "there",
    "these", "they", "this", "those", "through", "too", "under", "until", "very", "was", "were",
    "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would",
    "you", "your", "yours", "tell", "please", "explain", "describe",
];

/// The stems of the lowercase words of `text` of three letters or more that are
/// not stopwords.
pub fn content_words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|word| !STOPWORDS.contains(&word.as_str()))
        .map(|word| ENGLISH.stem(&word).into_owned())
}

/// The sentences of `text`: its paragraphs (split at blank lines, their lines
/// joined, as hard-wrapped Markdown wants), each split after `.`, `!` or `?`
/// followed by white space; empty ones left out.
pub fn sentences(text: &str) -> Vec<String> {
    let mut sentences = Vec::new();
    for paragraph in text.split("\n\n") {
        let paragraph = paragraph.split_whitespace().collect::<Vec<_>>().join(" ");
        let bytes = paragraph.as_bytes();
        let mut start = 0;
        for (index, byte) in bytes.iter().enumerate() {
            let ends = matches!(byte, b'.' | b'!' | b'?')
                && bytes.get(index + 1).is_some_and(u8::is_ascii_whitespace);
            if ends {
                sentences.push(paragraph[start..=index].trim().to_owned());
                start = index + 1;
            }
        }
        sentences.push(paragraph[start..].trim().to_owned());
    }
    sentences.retain(|sentence| sentence.chars().any(char::is_alphanumeric));
    sentences
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_words_leave_out_short_and_common_words() {
        let words: Vec<String> = content_words("What causes the tides, and why?").collect();
        assert_eq!(words, ["caus", "tide"]);
        let caused: Vec<String> = content_words("caused cause tide").collect();
        assert_eq!(caused, ["caus", "caus", "tide"]);
    }

    #[test]
    fn sentences_split_at_their_ends_and_paragraphs_join_their_lines() {
        let text = "One. Two! Three? 3.5 stays.\n\nA line\nwrapped.\n\n";
        assert_eq!(
            sentences(text),
            ["One.", "Two!", "Three?", "3.5 stays.", "A line wrapped."]
        );
    }
}
