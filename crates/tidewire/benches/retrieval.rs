//! The retrieval benchmark: what the documents and the pipeline cost and what
//! they find.
//!
//! 1. Ingest throughput and search latency on a generated corpus at 10k and 100k
//!    chunks (Zipf-distributed words, Markdown sections), through the library
//!    the server uses (parse, chunk, index, store record), in batches of 32
//!    documents as `tidewire ingest` sends them.
//! 2. The time the pipeline adds before the first token: two servers side by
//!    side, one answering with every stage over the 100k-chunk corpus, one with
//!    generation alone; requests alternate between them over real HTTP.
//! 3. Retrieval quality: hit@3 and MRR@3 on the labelled questions of
//!    `bench/retrieval-questions.tsv` over tidewire's own documentation, beside a
//!    plain BM25 reference (tantivy's default tokenizer, one field, no stemming,
//!    no stop words, no heading boost) over the very same chunks.
//!
//! `cargo bench -p tidewire --bench retrieval`; `TIDEWIRE_BENCH_CHUNKS=10000`
//! for a quick run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::{STORED, Schema, TEXT, Value};
use tantivy::{Index, TantivyDocument};
use tidewire::Config;
use tidewire::config::{DocumentsConfig, PipelineConfig};
use tidewire::retrieval::chunk::chunk;
use tidewire::retrieval::parse::{Format, parse};
use tidewire::retrieval::{Library, LibrarySettings, Retriever, Scope, Upload};
use tidewire::store::{SqliteStore, Store};

const BATCH: usize = 32;
const QUERIES: usize = 2000;
const TOP_K: usize = 5;
const FIRST_TOKEN_REQUESTS: usize = 300;

#[tokio::main]
async fn main() {
    let targets: Vec<u64> = std::env::var("TIDEWIRE_BENCH_CHUNKS")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("TIDEWIRE_BENCH_CHUNKS: numbers"))
        .collect();
    let root = tempfile::tempdir().unwrap();
    let corpus_dir = root.path().join("corpus");
    println!("## Retrieval benchmark\n");
    scale(&corpus_dir, &targets).await;
    first_token(&corpus_dir, &root.path().join("plain")).await;
    quality(&root.path().join("quality")).await;
}

/// Part 1: ingest the generated corpus up to each target, and search it there.
async fn scale(data_dir: &Path, targets: &[u64]) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(data_dir).await.unwrap());
    let settings = LibrarySettings {
        seed_docs: false,
        ..LibrarySettings::from(&DocumentsConfig::default())
    };
    let library = Library::open(data_dir, Arc::clone(&store), settings)
        .await
        .unwrap();
    let words = Vocabulary::new(30_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut chunks, mut bytes, mut documents, mut busy) = (0u64, 0u64, 0usize, Duration::ZERO);
    println!("| chunks | documents | text | ingest | search p50 | p99 | max |");
    println!("|---|---|---|---|---|---|---|");
    for &target in targets {
        while chunks < target {
            let batch: Vec<Upload> = (0..BATCH)
                .map(|_| {
                    documents += 1;
                    Upload {
                        name: format!("doc-{documents}.md"),
                        source: Some(format!("/bench/doc-{documents}.md")),
                        bytes: words.document(&mut rng).into_bytes(),
                        format: Format::Markdown,
                        collection: "default".into(),
                    }
                })
                .collect();
            bytes += batch.iter().map(|u| u.bytes.len() as u64).sum::<u64>();
            let at = Instant::now();
            let outcomes = library.ingest_many(batch).await.unwrap();
            busy += at.elapsed();
            chunks += outcomes.iter().map(|o| o.chunks).sum::<u64>();
        }
        let queries: Vec<String> = (0..QUERIES).map(|_| words.query(&mut rng)).collect();
        let scope = Scope::collection("default");
        let mut took = Vec::with_capacity(QUERIES);
        let mut found = 0usize;
        for query in &queries {
            let at = Instant::now();
            found += library.search(query, &scope, TOP_K).await.unwrap().len();
            took.push(at.elapsed());
        }
        assert!(
            found > 0,
            "the searches found nothing: the corpus is broken"
        );
        took.sort();
        println!(
            "| {chunks} | {documents} | {:.1} MB | {:.1} MB/s | {} | {} | {} |",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / busy.as_secs_f64(),
            ms(percentile(&took, 0.50)),
            ms(percentile(&took, 0.99)),
            ms(*took.last().unwrap()),
        );
    }
    println!(
        "\nSearches: {QUERIES} per size, one at a time, top {TOP_K}, questions of 3 to 6 \
         words drawn like the text."
    );
    library.close().await;
}

/// Part 2: time to the first token with every stage before generation and
/// without, on servers running side by side.
async fn first_token(corpus_dir: &Path, plain_dir: &Path) {
    let full = serve(corpus_dir, PipelineConfig::default()).await;
    let plain = serve(plain_dir, PipelineConfig::generation_only()).await;
    let client = reqwest::Client::new();
    let words = Vocabulary::new(30_000);
    let mut rng = Rng(42);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for n in 0..FIRST_TOKEN_REQUESTS * 2 {
        let question = words.query(&mut rng);
        let (server, times) = if n % 2 == 0 {
            (&full, &mut with)
        } else {
            (&plain, &mut without)
        };
        times.push(time_to_first_token(&client, server, &question).await);
    }
    with.sort();
    without.sort();
    println!("\n### Time to the first token, over HTTP\n");
    println!("| pipeline | p50 | p99 |\n|---|---|---|");
    println!(
        "| query analysis + retrieval (top {TOP_K} of the largest corpus) + generation | {} | {} |",
        ms(percentile(&with, 0.5)),
        ms(percentile(&with, 0.99))
    );
    println!(
        "| generation only | {} | {} |",
        ms(percentile(&without, 0.5)),
        ms(percentile(&without, 0.99))
    );
    println!(
        "\nAdded by the pipeline: {} at the median, {} at p99 ({FIRST_TOKEN_REQUESTS} \
         requests each, alternating; `synthetic` backend at full speed).",
        ms(percentile(&with, 0.5).saturating_sub(percentile(&without, 0.5))),
        ms(percentile(&with, 0.99).saturating_sub(percentile(&without, 0.99))),
    );
}

/// A server on port 0 over `data_dir`.
async fn serve(data_dir: &Path, pipeline: PipelineConfig) -> String {
    let mut config = Config {
        data_dir: data_dir.to_owned(),
        pipeline,
        default_tokens_per_second: 0.0,
        ..Config::default()
    };
    config.llm.default = "synthetic".into();
    config.documents.seed_docs = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tidewire::run(listener, config, std::future::pending()));
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return base;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the server at {base} did not start");
}

/// From sending a question to its first `token` event; the rest is read too.
async fn time_to_first_token(client: &reqwest::Client, base: &str, question: &str) -> Duration {
    let at = Instant::now();
    let response = client
        .post(format!("{base}/api/chat"))
        .json(&json!({"message": question, "options": {"max_tokens": 16}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut decoder = tidewire_sse::Decoder::new();
    let mut first = None;
    while let Some(piece) = body.next().await {
        decoder.push(&piece.unwrap());
        while let Some(event) = decoder.next_event() {
            if first.is_none() && event.unwrap().event == "token" {
                first = Some(at.elapsed());
            }
        }
    }
    first.expect("the answer had a token")
}

/// A labelled question: the passage that answers it holds `phrase`.
struct Labelled {
    document: String,
    phrase: String,
    question: String,
}

/// Part 3: hit@3 and MRR@3 of the library and of plain BM25, same chunks.
async fn quality(data_dir: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sources = [
        ("README.md", repo.join("README.md")),
        ("design-notes.md", repo.join("docs/design-notes.md")),
    ];
    let questions = labelled(&repo.join("bench/retrieval-questions.tsv"));

    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(data_dir).await.unwrap());
    let settings = LibrarySettings {
        seed_docs: false,
        ..LibrarySettings::from(&DocumentsConfig::default())
    };
    let library = Library::open(data_dir, store, settings).await.unwrap();
    let uploads = sources
        .iter()
        .map(|(name, path)| Upload {
            name: (*name).to_owned(),
            source: Some(path.display().to_string()),
            bytes: std::fs::read(path).unwrap(),
            format: Format::Markdown,
            collection: "default".into(),
        })
        .collect();
    library.ingest_many(uploads).await.unwrap();
    let reference = PlainBm25::build(&sources, settings);

    let scope = Scope::collection("default");
    let (mut ours, mut plain) = (Ranks::default(), Ranks::default());
    for question in &questions {
        let hits = library.search(&question.question, &scope, 3).await.unwrap();
        ours.add(hits.iter().position(|hit| {
            hit.document_name == question.document && hit.text.contains(&question.phrase)
        }));
        plain.add(reference.rank(question));
    }
    library.close().await;
    println!(
        "\n### Retrieval quality: {} labelled questions on tidewire's documentation\n",
        questions.len()
    );
    println!("| retrieval | hit@1 | hit@3 | MRR@3 |\n|---|---|---|---|");
    println!(
        "| tidewire (stemmed, stop words out, headings boosted) | {} |",
        ours.row()
    );
    println!("| plain BM25 reference | {} |", plain.row());
    let unanswerable = questions
        .iter()
        .filter(|q| {
            !reference
                .chunks
                .iter()
                .any(|(document, text)| *document == q.document && text.contains(&q.phrase))
        })
        .count();
    if unanswerable > 0 {
        println!("\n{unanswerable} labels name a phrase no single chunk holds: misses for both.");
    }
}

fn labelled(path: &Path) -> Vec<Labelled> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    text.lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut columns = line.split('\t');
            let mut next = || columns.next().expect("three columns").trim().to_owned();
            Labelled {
                document: next(),
                phrase: next(),
                question: next(),
            }
        })
        .collect()
}

/// Where in the top 3 the answer was found, per question.
#[derive(Default)]
struct Ranks(Vec<Option<usize>>);

impl Ranks {
    fn add(&mut self, rank: Option<usize>) {
        self.0.push(rank);
    }

    fn row(&self) -> String {
        let n = self.0.len() as f64;
        let within = |k: usize| self.0.iter().filter(|r| r.is_some_and(|r| r < k)).count();
        let reciprocal: f64 = self
            .0
            .iter()
            .flatten()
            .map(|r| 1.0 / (*r as f64 + 1.0))
            .sum();
        format!(
            "{}/{} | {}/{} ({:.0}%) | {:.2}",
            within(1),
            self.0.len(),
            within(3),
            self.0.len(),
            100.0 * within(3) as f64 / n,
            reciprocal / n
        )
    }
}

/// The reference: the library's chunks, their headings and text in one field of
/// tantivy's default analyzer, searched with its default query parser.
struct PlainBm25 {
    index: Index,
    parser: QueryParser,
    document: tantivy::schema::Field,
    text: tantivy::schema::Field,
    /// Every chunk's document and text.
    chunks: Vec<(String, String)>,
}

impl PlainBm25 {
    fn build(sources: &[(&str, PathBuf)], settings: LibrarySettings) -> Self {
        let mut schema = Schema::builder();
        let document = schema.add_text_field("document", STORED);
        let text = schema.add_text_field("text", TEXT | STORED);
        let index = Index::create_in_ram(schema.build());
        let mut writer = index.writer_with_num_threads(1, 32 * 1024 * 1024).unwrap();
        let mut chunks = Vec::new();
        for (name, path) in sources {
            let blocks = parse(&std::fs::read(path).unwrap(), Format::Markdown).unwrap();
            for piece in chunk(name, &blocks, &settings.chunks) {
                let body = format!("{}\n{}", piece.heading_path.join("\n"), piece.text);
                let mut doc = TantivyDocument::default();
                doc.add_text(document, name);
                doc.add_text(text, &body);
                writer.add_document(doc).unwrap();
                chunks.push(((*name).to_owned(), piece.text));
            }
        }
        writer.commit().unwrap();
        let parser = QueryParser::for_index(&index, vec![text]);
        Self {
            index,
            parser,
            document,
            text,
            chunks,
        }
    }

    /// The rank of the first chunk in the top 3 that answers `question`.
    fn rank(&self, question: &Labelled) -> Option<usize> {
        let (query, _) = self.parser.parse_query_lenient(&question.question);
        let searcher = self.index.reader().unwrap().searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(3).order_by_score())
            .unwrap();
        top.iter().position(|(_, address)| {
            let doc: TantivyDocument = searcher.doc(*address).unwrap();
            let field = |f| {
                doc.get_first(f)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned()
            };
            field(self.document) == question.document && field(self.text).contains(&question.phrase)
        })
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// xorshift64*: the corpus is the same on every run without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Made-up words whose frequencies follow Zipf's law, as a language's do.
struct Vocabulary {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Vocabulary {
    fn new(size: usize) -> Self {
        const ONSETS: [&str; 16] = [
            "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "st", "tr",
        ];
        const VOWELS: [&str; 6] = ["a", "e", "i", "o", "u", "ea"];
        let mut rng = Rng(7);
        let mut seen = std::collections::HashSet::new();
        let mut words = Vec::with_capacity(size);
        while words.len() < size {
            let syllables = 1 + rng.below(4);
            let word: String = (0..syllables)
                .map(|_| format!("{}{}", ONSETS[rng.below(16)], VOWELS[rng.below(6)]))
                .collect();
            if seen.insert(word.clone()) {
                words.push(word);
            }
        }
        let mut total = 0.0;
        let cumulative = (1..=size)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Self { words, cumulative }
    }

    fn word(&self, rng: &mut Rng) -> &str {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        let at = self.cumulative.partition_point(|&c| c < rng.unit() * total);
        &self.words[at.min(self.words.len() - 1)]
    }

    fn words(&self, rng: &mut Rng, count: usize) -> String {
        (0..count)
            .map(|_| self.word(rng))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A Markdown document of 8 sections of 2 paragraphs.
    fn document(&self, rng: &mut Rng) -> String {
        let mut text = format!("# {}\n\n", self.words(rng, 3));
        for _ in 0..8 {
            let count = 2 + rng.below(2);
            text.push_str(&format!("## {}\n\n", self.words(rng, count)));
            for _ in 0..2 {
                let count = 60 + rng.below(60);
                text.push_str(&format!("{}.\n\n", self.words(rng, count)));
            }
        }
        text
    }

    fn query(&self, rng: &mut Rng) -> String {
        let count = 3 + rng.below(4);
        format!("{}?", self.words(rng, count))
    }
}
