//! PDF, through lopdf: the text of each page, and nothing else (a PDF has no
//! reliable structure; its page breaks and blank lines become paragraph breaks).
//!
//! lopdf bounds how far each page's content may inflate, so a small compressed
//! stream cannot take the server's memory. A page that cannot be read is skipped
//! (logged); a document none of whose pages can be read is an error.

use std::panic::{AssertUnwindSafe, catch_unwind};

use lopdf::Document;

use super::{Block, Format, ParseError, text};

/// Most bytes one page's content may inflate to.
const MAX_PAGE_CONTENT: usize = 64 * 1024 * 1024;

/// The paragraphs of a PDF.
pub(super) fn parse(bytes: &[u8]) -> Result<Vec<Block>, ParseError> {
    // lopdf walks untrusted structure; should it panic on some input, that input
    // is an unreadable file, not a dead server thread.
    catch_unwind(AssertUnwindSafe(|| read(bytes))).unwrap_or(Err(ParseError::Failed(Format::Pdf)))
}

fn read(bytes: &[u8]) -> Result<Vec<Block>, ParseError> {
    let document = Document::load_mem(bytes).map_err(|error| ParseError::Pdf(error.to_string()))?;
    if document.is_encrypted() {
        return Err(ParseError::Encrypted);
    }
    let pages = document.get_pages();
    if pages.is_empty() {
        return Err(ParseError::Pdf("it has no pages".into()));
    }
    let mut blocks = Vec::new();
    let mut unreadable = 0usize;
    for &number in pages.keys() {
        match document.extract_text_with_limit(&[number], MAX_PAGE_CONTENT) {
            Ok(page) => blocks.extend(text::parse(&page)),
            Err(error) => {
                unreadable += 1;
                tracing::debug!(page = number, %error, "PDF page skipped");
            }
        }
    }
    if unreadable == pages.len() {
        return Err(ParseError::Pdf("none of its pages could be read".into()));
    }
    if unreadable > 0 {
        tracing::warn!(
            unreadable,
            pages = pages.len(),
            "some pages of a PDF could not be read"
        );
    }
    Ok(blocks)
}
