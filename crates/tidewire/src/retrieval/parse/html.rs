//! HTML, through scraper (html5ever, the browsers' parsing algorithm, so any page
//! parses as a browser would show it): `h1`–`h6` are the structure, block elements
//! end paragraphs, and what a reader does not read (scripts, styles, navigation,
//! the `head`) is dropped.
//!
//! The tree is walked with `traverse`, an iteration rather than a recursion. A
//! page nested deeper than [`MAX_DEPTH`] is refused before html5ever sees it: its
//! tree builder checks the stack of open elements at each tag, so its time grows
//! with the square of the depth (100,000 nested `div`s take minutes). Browsers cap
//! the depth too (Chromium at 512).

use ego_tree::iter::Edge;
use scraper::{Html, Node};

use super::{Block, Builder, Format, ParseError};

/// The deepest nesting of elements a page may have.
pub(super) const MAX_DEPTH: usize = 1000;

/// Elements with no end tag.
const VOID: &[&str] = &[
    "area", "base", "basefont", "bgsound", "br", "col", "embed", "frame", "hr", "img", "input",
    "keygen", "link", "meta", "param", "source", "track", "wbr",
];

/// Elements whose end tag may be left out: they do not nest without bound.
const OPTIONAL_END: &[&str] = &[
    "html", "head", "body", "li", "dt", "dd", "p", "rt", "rp", "optgroup", "option", "colgroup",
    "caption", "thead", "tbody", "tfoot", "tr", "td", "th",
];

/// Elements whose content is text up to their end tag, not markup.
const RAW_TEXT: &[&str] = &[
    "script",
    "style",
    "textarea",
    "title",
    "xmp",
    "iframe",
    "noembed",
    "noframes",
    "plaintext",
];

/// Elements whose content is not text for a reader.
const DROPPED: &[&str] = &[
    "script", "style", "nav", "noscript", "template", "head", "svg", "iframe", "object", "canvas",
    "math", "select", "button",
];

/// Elements that start and end a paragraph.
const BLOCKS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "body",
    "caption",
    "dd",
    "details",
    "dialog",
    "div",
    "dl",
    "dt",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "header",
    "hgroup",
    "hr",
    "html",
    "legend",
    "li",
    "main",
    "ol",
    "p",
    "section",
    "summary",
    "table",
    "tbody",
    "tfoot",
    "thead",
    "tr",
    "ul",
];

/// The blocks of an HTML page.
pub(super) fn parse(text: &str) -> Result<Vec<Block>, ParseError> {
    if depth(text) > MAX_DEPTH {
        return Err(ParseError::TooDeep(Format::Html));
    }
    let page = Html::parse_document(text);
    let mut out = Builder::default();
    // Depth inside a dropped element (0: outside every one).
    let mut dropped = 0usize;
    let mut preformatted = 0usize;
    for edge in page.tree.root().traverse() {
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(element) => {
                    let name = element.name();
                    if dropped > 0 || DROPPED.contains(&name) {
                        dropped += 1;
                    } else if name == "pre" {
                        out.paragraph();
                        preformatted += 1;
                    } else if heading_level(name).is_some() || BLOCKS.contains(&name) {
                        out.paragraph();
                    } else if name == "br" {
                        out.push("\n");
                    }
                }
                Node::Text(text) if dropped == 0 => out.push(text),
                _ => {}
            },
            Edge::Close(node) => {
                let Node::Element(element) = node.value() else {
                    continue;
                };
                let name = element.name();
                if dropped > 0 {
                    dropped -= 1;
                } else if name == "pre" {
                    preformatted = preformatted.saturating_sub(1);
                    out.preformatted();
                } else if let Some(level) = heading_level(name) {
                    out.heading(level);
                } else if BLOCKS.contains(&name) {
                    if preformatted == 0 {
                        out.paragraph();
                    }
                } else if matches!(name, "td" | "th") {
                    // Cells of a row stay on one line, apart.
                    out.push(" ");
                }
            }
        }
    }
    Ok(out.finish())
}

/// How deep the elements of `text` nest, as its tags say (a cheap upper bound of
/// what the parser will build: elements left open count as open).
fn depth(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut deepest = 0usize;
    let mut depth = 0usize;
    let mut at = 0usize;
    while let Some(found) = memchr::memchr(b'<', &bytes[at..]) {
        at += found + 1;
        let closing = bytes.get(at) == Some(&b'/');
        let start = if closing { at + 1 } else { at };
        let name_len = bytes[start.min(bytes.len())..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if name_len == 0 || !bytes[start].is_ascii_alphabetic() {
            continue;
        }
        let name = text[start..start + name_len].to_ascii_lowercase();
        let end = memchr::memchr(b'>', &bytes[start..]).map_or(bytes.len(), |i| start + i);
        at = end.min(bytes.len());
        if VOID.contains(&name.as_str()) || OPTIONAL_END.contains(&name.as_str()) {
            continue;
        }
        if closing {
            depth = depth.saturating_sub(1);
            continue;
        }
        if end > 0 && bytes.get(end - 1) == Some(&b'/') {
            // `<path/>` in SVG: opened and closed.
            continue;
        }
        if RAW_TEXT.contains(&name.as_str()) {
            // Skip to its end tag: `a<b` in a script is not a tag.
            let close = format!("</{name}");
            match find_ignoring_case(&text[at..], &close) {
                Some(i) => at += i,
                None => break,
            }
            continue;
        }
        depth += 1;
        deepest = deepest.max(depth);
    }
    deepest
}

/// Where `needle` (lowercase ASCII) is in `haystack`, ignoring ASCII case.
fn find_ignoring_case(haystack: &str, needle: &str) -> Option<usize> {
    let needle = needle.as_bytes();
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle))
}

/// The level of `h1` to `h6`.
fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}
