//! Tests of the parsers.
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

#[test]
fn markdown_keeps_headings_and_paragraphs() {
    let source = "---\ntitle: front matter\n---\n\n# Tides\n\nThe sea *rises*\nand falls.\n\n\
                  ## Causes\n\n- the `moon`\n- the sun\n\n```\nfn main() {\n    tide();\n}\n```\n\n\
                  | body | pull |\n|---|---|\n| moon | strong |\n\n<div>raw html</div>\n\n### Deep\nText.\n";
    let blocks = parse(source.as_bytes(), Format::Markdown).unwrap();
    assert_eq!(
        blocks,
        vec![
            heading(1, "Tides"),
            paragraph("The sea rises and falls."),
            heading(2, "Causes"),
            paragraph("the moon"),
            paragraph("the sun"),
            paragraph("fn main() {\n    tide();\n}"),
            paragraph("body | pull"),
            paragraph("moon | strong"),
            heading(3, "Deep"),
            paragraph("Text."),
        ]
    );
}

#[test]
fn html_keeps_headings_and_drops_what_nobody_reads() {
    let page = "<!doctype html><html><head><title>T</title><style>p{}</style></head><body>\
                <nav><h2>Menu</h2><a href=/>Home</a></nav>\
                <h1>Harbours</h1><p>Boats <b>wait</b> for\n the tide.</p>\
                <script>var secret = 1;</script>\
                <h2>Locks</h2><ul><li>one</li><li>two</li></ul>\
                <pre>a  b\nc</pre><table><tr><td>x</td><td>y</td></tr></table>\
                <div>loose text<br>next line</div></body></html>";
    let blocks = parse(page.as_bytes(), Format::Html).unwrap();
    assert_eq!(
        blocks,
        vec![
            heading(1, "Harbours"),
            paragraph("Boats wait for the tide."),
            heading(2, "Locks"),
            paragraph("one"),
            paragraph("two"),
            paragraph("a  b\nc"),
            paragraph("x y"),
            paragraph("loose text next line"),
        ]
    );
}

#[test]
fn html_nested_too_deeply_is_refused_at_once() {
    let nested = |depth: usize| {
        format!(
            "{}<p>deep</p>{}",
            "<div><span>".repeat(depth / 2),
            "</span></div>".repeat(depth / 2)
        )
    };
    let started = std::time::Instant::now();
    assert_eq!(
        parse(nested(100_000).as_bytes(), Format::Html),
        Err(ParseError::TooDeep(Format::Html))
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let blocks = parse(nested(html::MAX_DEPTH - 10).as_bytes(), Format::Html).unwrap();
    assert_eq!(blocks, vec![paragraph("deep")]);
    // Lists without end tags, void elements, SVG and scripts do not count as depth.
    let flat = format!(
        "<ul>{}</ul><p>{}</p><svg>{}</svg><script>{}</script><p>flat</p>",
        "<li>item".repeat(5000),
        "<br><img src=x>".repeat(5000),
        "<path d='M0'/>".repeat(5000),
        "if (a<b) { x = '<div>'; }".repeat(5000)
    );
    assert!(parse(flat.as_bytes(), Format::Html).is_ok());
}

#[test]
fn plain_text_is_paragraphs_between_blank_lines() {
    let text = "\u{feff}First line\nsame paragraph.\n\n  \nSecond one.\n";
    let blocks = parse(text.as_bytes(), Format::Text).unwrap();
    assert_eq!(
        blocks,
        vec![
            paragraph("First line same paragraph."),
            paragraph("Second one.")
        ]
    );
}

#[test]
fn binary_empty_and_heading_only_documents_are_errors() {
    assert_eq!(
        parse(b"PNG\0\0\x01", Format::Text),
        Err(ParseError::Binary(Format::Text))
    );
    assert_eq!(parse(b"", Format::Markdown), Err(ParseError::NoText));
    assert_eq!(
        parse(b"# Only\n## Headings\n", Format::Markdown),
        Err(ParseError::NoText)
    );
    assert_eq!(
        parse(b"<script>x()</script>", Format::Html),
        Err(ParseError::NoText)
    );
}

/// A one-page PDF written by lopdf, with one text line per entry of `lines`.
fn pdf(lines: &[&str]) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};

    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
    });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let mut operations = vec![
        Operation::new("BT", vec![]),
        Operation::new("Tf", vec!["F1".into(), 12.into()]),
        Operation::new("TL", vec![14.into()]),
        Operation::new("Td", vec![72.into(), 720.into()]),
    ];
    for line in lines {
        operations.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
        operations.push(Operation::new("T*", vec![]));
    }
    operations.push(Operation::new("ET", vec![]));
    let content = Content { operations };
    let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
    let page_id = doc.add_object(dictionary! {
        "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
        "Resources" => resources_id, "MediaBox" => vec![0.into(), 0.into(), 612.into(), 792.into()],
    });
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => vec![page_id.into()], "Count" => 1,
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut bytes = Vec::new();
    doc.save_to(&mut bytes).unwrap();
    bytes
}

#[test]
fn pdf_text_is_read() {
    let bytes = pdf(&["Lighthouses guide ships", "along rocky coasts."]);
    let blocks = parse(&bytes, Format::Pdf).unwrap();
    assert_eq!(
        blocks,
        vec![paragraph("Lighthouses guide ships along rocky coasts.")]
    );
}

#[test]
fn broken_pdfs_are_errors_not_panics() {
    for bytes in [
        &b"not a pdf at all"[..],
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF",
        b"",
    ] {
        assert!(
            matches!(
                parse(bytes, Format::Pdf),
                Err(ParseError::Pdf(_) | ParseError::Failed(_))
            ),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    let mut truncated = pdf(&["cut short"]);
    truncated.truncate(truncated.len() / 2);
    assert!(parse(&truncated, Format::Pdf).is_err());
}

#[test]
fn formats_are_known_by_name_extension_and_media_type() {
    assert_eq!(Format::from_file_name("a.MD"), Some(Format::Markdown));
    assert_eq!(
        Format::from_file_name("notes.markdown"),
        Some(Format::Markdown)
    );
    assert_eq!(Format::from_file_name("page.htm"), Some(Format::Html));
    assert_eq!(Format::from_file_name("paper.pdf"), Some(Format::Pdf));
    assert_eq!(Format::from_file_name("a.txt"), Some(Format::Text));
    assert_eq!(Format::from_file_name("image.png"), None);
    assert_eq!(Format::from_file_name("README"), None);
    assert_eq!(
        Format::from_media_type("text/html; charset=utf-8"),
        Some(Format::Html)
    );
    assert_eq!(Format::from_media_type("application/octet-stream"), None);
    for format in Format::ALL {
        assert_eq!(Format::from_name(format.as_str()), Some(format));
    }
}
