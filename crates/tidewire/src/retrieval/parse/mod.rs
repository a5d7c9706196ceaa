//! Parsing: the bytes of a document into a sequence of [`Block`]s (headings with
//! their level, paragraphs of text), whatever its format.
//!
//! Every parser is total: a file that cannot be read is a [`ParseError`] for that
//! file, never a panic. The PDF reader, the one parser that walks untrusted binary
//! structure, also runs under `catch_unwind`, so a bug in it is an error too.

mod html;
mod markdown;
mod pdf;
mod text;

use std::fmt;

/// The formats a document can be read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// CommonMark with tables (`.md`, `.markdown`).
    Markdown,
    /// Plain text (`.txt`): paragraphs separated by blank lines.
    Text,
    /// HTML (`.html`, `.htm`): `h1`–`h6` are the structure.
    Html,
    /// PDF: its text only.
    Pdf,
}

impl Format {
    /// Every format.
    pub const ALL: [Self; 4] = [Self::Markdown, Self::Text, Self::Html, Self::Pdf];

    /// Its name: `markdown`, `text`, `html` or `pdf`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Markdown => "markdown",
            Self::Text => "text",
            Self::Html => "html",
            Self::Pdf => "pdf",
        }
    }

    /// The format of a name as [`Format::as_str`] writes it (or a common alias).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "markdown" | "md" => Some(Self::Markdown),
            "text" | "txt" | "plain" => Some(Self::Text),
            "html" | "htm" => Some(Self::Html),
            "pdf" => Some(Self::Pdf),
            _ => None,
        }
    }

    /// The format of a file, by its extension.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let (_, extension) = name.rsplit_once('.')?;
        match extension.to_ascii_lowercase().as_str() {
            "md" | "markdown" => Some(Self::Markdown),
            "txt" => Some(Self::Text),
            "html" | "htm" => Some(Self::Html),
            "pdf" => Some(Self::Pdf),
            _ => None,
        }
    }

    /// The format of a media type (`text/markdown`, `application/pdf`, ...).
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let essence = media_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/markdown" | "text/x-markdown" => Some(Self::Markdown),
            "text/plain" => Some(Self::Text),
            "text/html" | "application/xhtml+xml" => Some(Self::Html),
            "application/pdf" => Some(Self::Pdf),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A piece of a document's structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A heading, level 1 (outermost) to 6.
    Heading {
        /// 1 to 6.
        level: u8,
        /// Its text, on one line.
        text: String,
    },
    /// A paragraph (or list item, table row, code block): text, never empty.
    Paragraph(String),
}

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A text format whose bytes are binary.
    #[error("the file is binary, not {0} text")]
    Binary(Format),
    /// The PDF could not be read.
    #[error("not a readable PDF: {0}")]
    Pdf(String),
    /// The PDF is encrypted.
    #[error("the PDF is encrypted")]
    Encrypted,
    /// The document nests deeper than its parser can take in reasonable time.
    #[error("the {0} nests too deeply")]
    TooDeep(Format),
    /// Nothing in the document is text.
    #[error("the document contains no text")]
    NoText,
    /// The parser failed on this file (a bug in it, caught).
    #[error("the {0} parser failed on this file")]
    Failed(Format),
}

/// The blocks of `bytes` read as `format`.
pub fn parse(bytes: &[u8], format: Format) -> Result<Vec<Block>, ParseError> {
    let blocks = match format {
        Format::Pdf => pdf::parse(bytes)?,
        Format::Markdown => markdown::parse(&decode(bytes, format)?),
        Format::Text => text::parse(&decode(bytes, format)?),
        Format::Html => html::parse(&decode(bytes, format)?)?,
    };
    if blocks
        .iter()
        .all(|block| matches!(block, Block::Heading { .. }))
    {
        return Err(ParseError::NoText);
    }
    Ok(blocks)
}

/// Text from bytes: UTF-8 without its byte order mark, invalid sequences replaced.
/// A NUL byte near the start means a binary file (a picture renamed `.txt`, say),
/// which would only fill the index with noise.
fn decode(bytes: &[u8], format: Format) -> Result<String, ParseError> {
    const SNIFF: usize = 8192;
    if bytes[..bytes.len().min(SNIFF)].contains(&0) {
        return Err(ParseError::Binary(format));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// Gathers text into blocks: text is pushed as it comes, and each boundary of the
/// source (end of a paragraph, start of a heading) flushes it.
#[derive(Debug, Default)]
struct Builder {
    blocks: Vec<Block>,
    current: String,
}

impl Builder {
    fn push(&mut self, text: &str) {
        self.current.push_str(text);
    }

    /// Ends the current paragraph, its whitespace collapsed (source line breaks
    /// are layout, not content).
    fn paragraph(&mut self) {
        let text = collapse_whitespace(&self.current);
        self.current.clear();
        if !text.is_empty() {
            self.blocks.push(Block::Paragraph(text));
        }
    }

    /// Ends the current paragraph keeping its lines (code).
    fn preformatted(&mut self) {
        let text = self.current.trim_matches('\n').trim_end().to_owned();
        self.current.clear();
        if !text.trim().is_empty() {
            self.blocks.push(Block::Paragraph(text));
        }
    }

    /// The text gathered since the last flush becomes a heading.
    fn heading(&mut self, level: u8) {
        let text = collapse_whitespace(&self.current);
        self.current.clear();
        if !text.is_empty() {
            self.blocks.push(Block::Heading {
                level: level.clamp(1, 6),
                text,
            });
        }
    }

    fn finish(mut self) -> Vec<Block> {
        self.paragraph();
        self.blocks
    }
}

/// `text` on one line, runs of whitespace as one space.
fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests;
