//! Tests of the chunker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn heading(level: u8, text: &str) -> Block {
    Block::Heading {
        level,
        text: text.to_owned(),
    }
}

fn paragraph(text: &str) -> Block {
    Block::Paragraph(text.to_owned())
}

fn settings(chars: usize, overlap: usize) -> ChunkSettings {
    ChunkSettings { chars, overlap }
}

/// `count` distinct sentences of about 60 characters.
fn sentences(tag: &str, count: usize) -> String {
    (0..count)
        .map(|i| format!("Sentence {i} of {tag} talks about tides, harbours and boats."))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn small_sections_are_one_chunk_each_with_their_heading_path() {
    let blocks = [
        paragraph("Before any heading."),
        heading(1, "Sea"),
        paragraph("Salt water."),
        paragraph("Waves."),
        heading(2, "Tides"),
        paragraph("Moon and sun."),
        heading(3, "Spring tides"),
        paragraph("Bigger."),
        heading(2, "Currents"),
        paragraph("Rivers in the sea."),
        heading(1, "Land"),
        paragraph("Rocks."),
    ];
    let chunks = chunk("doc", &blocks, &ChunkSettings::default());
    let seen: Vec<(Vec<&str>, &str)> = chunks
        .iter()
        .map(|c| {
            (
                c.heading_path.iter().map(String::as_str).collect(),
                c.text.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (vec![], "Before any heading."),
            (vec!["Sea"], "Salt water.\n\nWaves."),
            (vec!["Sea", "Tides"], "Moon and sun."),
            (vec!["Sea", "Tides", "Spring tides"], "Bigger."),
            (vec!["Sea", "Currents"], "Rivers in the sea."),
            (vec!["Land"], "Rocks."),
        ]
    );
    for (position, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk.position as usize, position);
        assert_eq!(chunk.id, format!("doc:{position}"));
        assert_eq!(chunk.document_id, "doc");
    }
}

#[test]
fn chunks_never_cross_a_heading_and_carry_no_overlap_over_it() {
    let blocks = [
        heading(1, "A"),
        paragraph(&sentences("alpha", 30)),
        heading(1, "B"),
        paragraph(&sentences("beta", 30)),
    ];
    let chunks = chunk("d", &blocks, &settings(500, 100));
    assert!(chunks.len() > 4);
    for chunk in &chunks {
        let tag = if chunk.heading_path == ["A"] {
            "alpha"
        } else {
            "beta"
        };
        let other = if tag == "alpha" { "beta" } else { "alpha" };
        assert!(chunk.text.contains(tag), "{chunk:?}");
        assert!(!chunk.text.contains(other), "{chunk:?}");
    }
    let first_of_b = chunks.iter().find(|c| c.heading_path == ["B"]).unwrap();
    assert!(first_of_b.text.starts_with("Sentence 0 of beta"));
}

#[test]
fn consecutive_chunks_overlap_by_whole_sentences_within_the_limit() {
    let paragraphs: Vec<Block> = (0..12)
        .map(|i| paragraph(&sentences(&format!("p{i}"), 3)))
        .collect();
    let limit = 600;
    let overlap = 150;
    let chunks = chunk("d", &paragraphs, &settings(limit, overlap));
    assert!(chunks.len() >= 3, "{}", chunks.len());
    for pair in chunks.windows(2) {
        let (before, after) = (&pair[0].text, &pair[1].text);
        assert!(after.chars().count() <= limit);
        // The longest start of `after` that `before` ends with.
        let shared = (1..=after.len())
            .filter(|&n| after.is_char_boundary(n) && before.ends_with(&after[..n]))
            .max()
            .expect("the next chunk starts with the end of the one before");
        let carried = &after[..shared];
        assert!(carried.chars().count() <= overlap, "{carried:?}");
        // Whole sentences: it starts a sentence and ends one.
        assert!(carried.starts_with("Sentence"), "{carried:?}");
        assert!(carried.ends_with('.'), "{carried:?}");
    }
}

#[test]
fn a_long_paragraph_is_split_at_sentences_then_words() {
    let long = sentences("long", 50);
    let chunks = chunk("d", &[paragraph(&long)], &settings(400, 80));
    assert!(chunks.len() > 5);
    for chunk in &chunks {
        assert!(chunk.text.chars().count() <= 400, "{}", chunk.text.len());
        assert!(chunk.text.starts_with("Sentence"), "{:?}", chunk.text);
        assert!(chunk.text.ends_with('.'), "{:?}", chunk.text);
    }
    // Every sentence is in some chunk, whole.
    for i in 0..50 {
        let sentence = format!("Sentence {i} of long talks about tides, harbours and boats.");
        assert!(chunks.iter().any(|c| c.text.contains(&sentence)), "{i}");
    }

    // One sentence longer than the limit: cut between words, never inside one.
    let words: Vec<String> = (0..300).map(|i| format!("word{i}")).collect();
    let run_on = words.join(" ");
    let chunks = chunk("d", &[paragraph(&run_on)], &settings(200, 40));
    for chunk in &chunks {
        assert!(chunk.text.chars().count() <= 200);
        for word in chunk.text.split_whitespace() {
            assert!(words.iter().any(|w| w == word), "{word:?} was cut");
        }
    }
    for word in &words {
        assert!(
            chunks
                .iter()
                .any(|c| c.text.split_whitespace().any(|w| w == word))
        );
    }
}

#[test]
fn a_word_longer_than_the_limit_is_cut_between_characters() {
    let blob = "é".repeat(1000);
    let chunks = chunk("d", &[paragraph(&blob)], &settings(300, 0));
    assert!(chunks.len() >= 4);
    assert!(chunks.iter().all(|c| c.text.chars().count() <= 300));
    let total: usize = chunks.iter().map(|c| c.text.chars().count()).sum();
    assert_eq!(total, 1000);
}

#[test]
fn tails_are_whole_sentences_or_else_whole_words() {
    assert_eq!(tail("One two. Three four.", 12), "Three four.");
    assert_eq!(tail("One two. Three four.", 100), "Three four.");
    assert_eq!(tail("alpha beta gamma delta", 11), "gamma delta");
    assert_eq!(tail("alpha beta gamma delta", 3), "");
    assert_eq!(tail("anything", 0), "");
}
