//! Plain text: paragraphs separated by blank lines, no headings.

use super::{Block, collapse_whitespace};

/// The paragraphs of a plain text.
pub(super) fn parse(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            push(&mut blocks, &mut current);
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    push(&mut blocks, &mut current);
    blocks
}

fn push(blocks: &mut Vec<Block>, current: &mut String) {
    let text = collapse_whitespace(current);
    current.clear();
    if !text.is_empty() {
        blocks.push(Block::Paragraph(text));
    }
}
