//! The quality score: how well an answer is supported by its sources.
//!
//! Deterministic and explainable: for each sentence of the answer (citations like
//! `[2]` removed), the share of its content words (see [`crate::text`]) that appear
//! in the sources; the score is the mean over the sentences that have content words,
//! rounded to three decimals. An answer with no sources, or none of whose words the
//! sources hold, scores 0; an answer made of the sources' own sentences scores 1.

use std::collections::HashSet;

use crate::text;

/// The support of `answer` by `sources`, from 0.0 to 1.0.
pub fn quality_score<'a>(answer: &str, sources: impl IntoIterator<Item = &'a str>) -> f64 {
    let known: HashSet<String> = sources.into_iter().flat_map(text::content_words).collect();
    if known.is_empty() {
        return 0.0;
    }
    let mut total = 0.0;
    let mut counted = 0u32;
    for sentence in text::sentences(answer) {
        let words: HashSet<String> = text::content_words(&strip_citations(&sentence)).collect();
        if words.is_empty() {
            continue;
        }
        let supported = words.iter().filter(|word| known.contains(*word)).count();
        total += supported as f64 / words.len() as f64;
        counted += 1;
    }
    if counted == 0 {
        return 0.0;
    }
    (total / f64::from(counted) * 1000.0).round() / 1000.0
}

/// `text` without citation marks like `[1]` or `[2, 3]`.
fn strip_citations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('[') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        match after.find(']') {
            Some(close)
                if after[1..close]
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == ',' || c == ' ') =>
            {
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str =
        "Tides are caused by the gravity of the Moon. The Sun adds a smaller pull.";

    #[test]
    fn an_answer_from_the_sources_scores_one_and_an_unsupported_one_low() {
        assert_eq!(
            quality_score("Tides are caused by the gravity of the Moon. [1]", [SOURCE]),
            1.0
        );
        assert_eq!(
            quality_score("Volcanoes erupt when magma rises.", [SOURCE]),
            0.0
        );
        let half = quality_score(
            "Tides follow the Moon. Volcanoes erupt violently.",
            [SOURCE],
        );
        assert!(half > 0.2 && half < 0.6, "{half}");
        assert_eq!(quality_score("Anything at all.", []), 0.0);
    }

    #[test]
    fn citations_are_not_words() {
        assert_eq!(strip_citations("A [1] b [2, 3] c [x]"), "A  b  c [x]");
    }
}
