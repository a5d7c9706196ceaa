//! Chunking: a document's blocks into the pieces the index holds, following its
//! structure.
//!
//! - A chunk never crosses a heading: each section (the blocks under one heading,
//!   down to the next heading of any level) is chunked on its own, and its chunks
//!   carry the path of headings above them, outermost first.
//! - Within a section, paragraphs are packed into chunks of at most
//!   [`ChunkSettings::chars`] characters. Each chunk after the first of a section
//!   starts with the end of the one before (up to [`ChunkSettings::overlap`]
//!   characters, whole sentences if any fit, else whole words), so a passage cut
//!   in two is still found whole in one of them.
//! - A paragraph longer than the limit is cut at sentence boundaries, a sentence
//!   longer than that at word boundaries, and a word longer than that (a hash, a
//!   base64 blob) between characters. Its pieces leave room for the overlap.
//!
//! Sizes are counted in characters (not bytes), so a limit means the same text
//! length in every script. Sentences are found by Unicode's rules (UAX #29).

use unicode_segmentation::UnicodeSegmentation;

use super::parse::Block;

/// How documents are cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSettings {
    /// Longest chunk, in characters.
    pub chars: usize,
    /// How much of the end of a chunk the next one of its section repeats, in
    /// characters.
    pub overlap: usize,
}

impl Default for ChunkSettings {
    fn default() -> Self {
        Self {
            chars: 1200,
            overlap: 200,
        }
    }
}

/// One piece of a document, as indexed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// `{document_id}:{position}`: stable for as long as the document is unchanged.
    pub id: String,
    /// The document.
    pub document_id: String,
    /// Its place in the document: 0, 1, 2, ...
    pub position: u32,
    /// The headings above it, outermost first.
    pub heading_path: Vec<String>,
    /// Its text.
    pub text: String,
}

/// The chunks of a document's blocks.
pub fn chunk(document_id: &str, blocks: &[Block], settings: &ChunkSettings) -> Vec<Chunk> {
    let limit = settings.chars.max(1);
    // Pieces of a long paragraph leave room for the overlap in front of them.
    let piece_limit = limit.saturating_sub(settings.overlap).max(limit / 2).max(1);
    let mut chunks = Vec::new();
    let mut path: Vec<(u8, String)> = Vec::new();
    let mut section: Vec<Piece> = Vec::new();
    for block in blocks {
        match block {
            Block::Heading { level, text } => {
                pack(
                    &path,
                    &section,
                    limit,
                    settings.overlap,
                    &mut |path, text| {
                        push(&mut chunks, document_id, path, text);
                    },
                );
                section.clear();
                while path.last().is_some_and(|(above, _)| above >= level) {
                    path.pop();
                }
                path.push((*level, text.clone()));
            }
            Block::Paragraph(text) if char_len(text) <= limit => section.push(Piece {
                text: text.clone(),
                starts_paragraph: true,
            }),
            Block::Paragraph(text) => {
                let pieces = split(text, piece_limit);
                section.extend(pieces.into_iter().enumerate().map(|(i, text)| Piece {
                    text,
                    starts_paragraph: i == 0,
                }));
            }
        }
    }
    pack(
        &path,
        &section,
        limit,
        settings.overlap,
        &mut |path, text| {
            push(&mut chunks, document_id, path, text);
        },
    );
    chunks
}

/// Text of at most the limit, and whether a paragraph starts with it.
#[derive(Debug)]
struct Piece {
    text: String,
    starts_paragraph: bool,
}

fn push(chunks: &mut Vec<Chunk>, document_id: &str, path: Vec<String>, text: String) {
    let position = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
    chunks.push(Chunk {
        id: format!("{document_id}:{position}"),
        document_id: document_id.to_owned(),
        position,
        heading_path: path,
        text,
    });
}

/// Packs a section's pieces into chunks of at most `limit` characters, each
/// starting with the overlap of the one before.
fn pack(
    path: &[(u8, String)],
    pieces: &[Piece],
    limit: usize,
    overlap: usize,
    emit: &mut dyn FnMut(Vec<String>, String),
) {
    let heading_path = || path.iter().map(|(_, text)| text.clone()).collect();
    let mut current = String::new();
    let mut current_chars = 0usize;
    for piece in pieces {
        let separator = if piece.starts_paragraph { "\n\n" } else { " " };
        let piece_chars = char_len(&piece.text);
        if current.is_empty() {
            current.clone_from(&piece.text);
            current_chars = piece_chars;
            continue;
        }
        if current_chars + separator.len() + piece_chars <= limit {
            current.push_str(separator);
            current.push_str(&piece.text);
            current_chars += separator.len() + piece_chars;
            continue;
        }
        let budget = overlap.min(limit.saturating_sub(piece_chars + separator.len()));
        let carried = tail(&current, budget).to_owned();
        emit(heading_path(), std::mem::take(&mut current));
        if !carried.is_empty() {
            current.push_str(&carried);
            current.push_str(separator);
        }
        current.push_str(&piece.text);
        current_chars = char_len(&current);
    }
    if !current.is_empty() {
        emit(heading_path(), current);
    }
}

/// The longest end of `text` of at most `budget` characters made of whole
/// sentences, or else of whole words; empty if not even a word fits.
fn tail(text: &str, budget: usize) -> &str {
    if budget == 0 {
        return "";
    }
    let sentence_starts = text.split_sentence_bound_indices().map(|(at, _)| at);
    if let Some(found) = longest_suffix(text, sentence_starts, budget) {
        return found;
    }
    let word_starts = text
        .char_indices()
        .zip(text.chars().skip(1))
        .filter(|((_, c), next)| c.is_whitespace() && !next.is_whitespace())
        .map(|((at, c), _)| at + c.len_utf8());
    longest_suffix(text, word_starts, budget).unwrap_or("")
}

/// Of the suffixes of `text` starting at `starts` (ascending), the longest whose
/// trimmed text has at most `budget` characters.
fn longest_suffix(text: &str, starts: impl Iterator<Item = usize>, budget: usize) -> Option<&str> {
    let starts: Vec<usize> = starts.filter(|&at| at > 0).collect();
    let mut best = None;
    for &at in starts.iter().rev() {
        let candidate = text[at..].trim();
        if char_len(candidate) > budget {
            break;
        }
        if !candidate.is_empty() {
            best = Some(candidate);
        }
    }
    best
}

/// A long paragraph in pieces of at most `max` characters: whole sentences where
/// they fit, else whole words, else characters.
fn split(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Pieces {
        max,
        done: Vec::new(),
        current: String::new(),
        chars: 0,
    };
    for sentence in text.split_sentence_bounds() {
        let sentence = sentence.trim();
        if sentence.is_empty() {
            continue;
        }
        if char_len(sentence) > max {
            for word in sentence.split_whitespace() {
                if char_len(word) > max {
                    for part in by_chars(word, max) {
                        pieces.append(part);
                    }
                } else {
                    pieces.append(word);
                }
            }
        } else {
            pieces.append(sentence);
        }
    }
    if !pieces.current.is_empty() {
        pieces.done.push(pieces.current);
    }
    pieces.done
}

/// Pieces being built, with the length of the last one kept (counting it again
/// for every word would be quadratic).
struct Pieces {
    max: usize,
    done: Vec<String>,
    current: String,
    chars: usize,
}

impl Pieces {
    /// Adds `text`, starting a new piece when the current one would grow past
    /// the limit.
    fn append(&mut self, text: &str) {
        let chars = char_len(text);
        if !self.current.is_empty() && self.chars + 1 + chars > self.max {
            self.done.push(std::mem::take(&mut self.current));
            self.chars = 0;
        }
        if !self.current.is_empty() {
            self.current.push(' ');
            self.chars += 1;
        }
        self.current.push_str(text);
        self.chars += chars;
    }
}

/// `word` in parts of `max` characters.
fn by_chars(word: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (count, (at, _)) in word.char_indices().enumerate() {
        if count > 0 && count % max == 0 {
            parts.push(&word[start..at]);
            start = at;
        }
    }
    parts.push(&word[start..]);
    parts
}

fn char_len(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests;
