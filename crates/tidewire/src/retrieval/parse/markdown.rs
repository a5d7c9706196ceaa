//! Markdown, through pulldown-cmark: headings are the structure; paragraphs, list
//! items, table rows and code blocks are the text. Front matter and raw HTML are
//! left out (metadata and markup, not prose).

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

use super::{Block, Builder};

/// The blocks of a Markdown document.
pub(super) fn parse(text: &str) -> Vec<Block> {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS;
    let mut out = Builder::default();
    let mut in_metadata = false;
    let mut in_code = false;
    for event in Parser::new_ext(text, options) {
        match event {
            Event::Start(Tag::Heading { .. }) => out.paragraph(),
            Event::End(TagEnd::Heading(level)) => out.heading(level as u8),
            Event::Start(Tag::MetadataBlock(_)) => in_metadata = true,
            Event::End(TagEnd::MetadataBlock(_)) => {
                in_metadata = false;
                out.current.clear();
            }
            Event::Start(Tag::CodeBlock(_)) => {
                out.paragraph();
                in_code = true;
            }
            Event::End(TagEnd::CodeBlock) => {
                out.preformatted();
                in_code = false;
            }
            Event::Start(
                Tag::Paragraph
                | Tag::Item
                | Tag::List(_)
                | Tag::BlockQuote(_)
                | Tag::Table(_)
                | Tag::TableHead
                | Tag::TableRow
                | Tag::FootnoteDefinition(_)
                | Tag::DefinitionList
                | Tag::DefinitionListTitle
                | Tag::DefinitionListDefinition,
            )
            | Event::End(
                TagEnd::Paragraph
                | TagEnd::Item
                | TagEnd::List(_)
                | TagEnd::BlockQuote(_)
                | TagEnd::Table
                | TagEnd::TableHead
                | TagEnd::TableRow
                | TagEnd::FootnoteDefinition
                | TagEnd::DefinitionList
                | TagEnd::DefinitionListTitle
                | TagEnd::DefinitionListDefinition,
            )
            | Event::Rule => out.paragraph(),
            // Cells of a row stay on one line, apart.
            Event::End(TagEnd::TableCell) => out.push(" | "),
            Event::Text(text) | Event::Code(text) | Event::InlineMath(text) if !in_metadata => {
                out.push(&text);
            }
            Event::DisplayMath(text) => {
                out.push(" ");
                out.push(&text);
                out.push(" ");
            }
            Event::SoftBreak if in_code => out.push("\n"),
            Event::SoftBreak => out.push(" "),
            Event::HardBreak => out.push("\n"),
            _ => {}
        }
    }
    let mut blocks = out.finish();
    // A table row ends with its cell separator; drop the trailing one.
    for block in &mut blocks {
        if let Block::Paragraph(text) = block
            && let Some(row) = text.strip_suffix(" |")
        {
            *text = row.to_owned();
        }
    }
    blocks
}
