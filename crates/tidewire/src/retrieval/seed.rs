//! tidewire's own documentation, embedded in the binary, indexed into the
//! `default` collection the first time a data directory is opened (unless
//! `documents.seed_docs = false`), so a new user's first question finds real
//! sources.
//!
//! Seeding is done once per data directory: a marker file records it, so deleting
//! the seeded documents keeps them deleted. It runs in the background after the
//! server opens (the server answers at once), and re-running it after a stop in
//! the middle changes nothing that was already indexed.

use std::path::{Path, PathBuf};

use super::parse::Format;

/// The collection the documentation goes into.
pub const COLLECTION: &str = "default";

/// A document shipped in the binary.
#[derive(Debug, Clone, Copy)]
pub struct SeedDoc {
    /// Its name.
    pub name: &'static str,
    /// Its source: `tidewire:` and its path in the repository.
    pub source: &'static str,
    /// Its text.
    pub text: &'static str,
}

/// The documentation shipped in the binary.
pub const DOCS: [SeedDoc; 2] = [
    SeedDoc {
        name: "README.md",
        source: "tidewire:README.md",
        text: include_str!("../../../../README.md"),
    },
    SeedDoc {
        name: "design-notes.md",
        source: "tidewire:docs/design-notes.md",
        text: include_str!("../../../../docs/design-notes.md"),
    },
];

/// Their format.
pub const FORMAT: Format = Format::Markdown;

/// The marker file of a data directory whose documentation was seeded.
pub fn marker(data_dir: &Path) -> PathBuf {
    data_dir.join("documents.seeded")
}
