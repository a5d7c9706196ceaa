//! `tidewire chat`: ask from the terminal. Streams the answer as it arrives, with
//! the stage, sources and follow-ups around it; on a pipe, only the answer text.
//! A failed answer prints its error on stderr and exits 1. Interactive questions
//! are read with line editing and history (rustyline).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use tidewire_client::{ChatEvent, ChatOptions, ChatRequest, ChatStream, Client, MessageStatus};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

/// Options of `tidewire chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The question. Without it, an interactive loop reads one question per line.
    question: Option<String>,
    /// The tidewire server.
    #[arg(long, env = "TIDEWIRE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key or a JWT, for a server with authentication on.
    #[arg(long, env = "TIDEWIRE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Continue this conversation.
    #[arg(long)]
    conversation: Option<String>,
    /// The longest answer, in tokens.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Print every event as a JSON line (`{"id","event","data"}`), for scripts.
    #[arg(long)]
    json: bool,
    /// Follow an existing run instead of asking.
    #[arg(long, conflicts_with = "question")]
    attach: Option<String>,
    /// With --attach: resume after this event.
    #[arg(long)]
    last_event_id: Option<u64>,
}

/// What interactive mode says first.
const BANNER: &str = "Ask anything. /new starts a new conversation, /help lists the commands, \
/exit quits; Ctrl-C stops an answer.";

/// `/help`.
const HELP: &str = "/new    start a new conversation\n/exit   quit (also /quit, Ctrl-D)\n/help   this list\n\
Anything else is a question. Ctrl-C stops the answer being written; twice quits.";

/// How the output looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A person at a terminal: stages, sources, follow-ups, status.
    Terminal,
    /// A pipe or file: the answer text only.
    Plain,
    /// Every event as a JSON line.
    Json,
}

/// How one answer ended for the loop.
enum Answered {
    Done {
        conversation_id: Option<String>,
        failed: bool,
    },
    Interrupted,
    Exit,
}

impl Answered {
    /// The exit code of a one-shot `tidewire chat`.
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Done { failed: false, .. } => ExitCode::SUCCESS,
            Self::Done { failed: true, .. } => ExitCode::FAILURE,
            Self::Interrupted | Self::Exit => ExitCode::from(130),
        }
    }
}

/// Runs `tidewire chat`.
pub fn chat(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(run(args));
    // A read of stdin may still be blocked in its thread; do not wait for it.
    runtime.shutdown_background();
    result
}

async fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    if args.last_event_id.is_some() && args.attach.is_none() {
        eprintln!(
            "tidewire chat: --last-event-id resumes a run followed with --attach RUN_ID; \
             give --attach too"
        );
        return Ok(ExitCode::from(2));
    }
    let client = Client::builder(&args.url)
        .token(args.token.clone())
        .build()?;
    let mode = if args.json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Terminal
    } else {
        Mode::Plain
    };
    warn_if_unreachable(&args.url).await;
    let mut interrupts = interrupts();

    if let Some(run_id) = &args.attach {
        let stream = client.attach(run_id, args.last_event_id.unwrap_or(0));
        return Ok(show(stream, mode, &mut interrupts).await?.exit_code());
    }
    let mut conversation = args.conversation.clone();
    if let Some(question) = &args.question {
        let stream = client.chat(request(question, conversation, args.max_tokens));
        return Ok(show(stream, mode, &mut interrupts).await?.exit_code());
    }

    let mut lines = Lines::new(mode == Mode::Terminal);
    if mode == Mode::Terminal {
        eprintln!("\x1b[2m{BANNER}\x1b[0m");
    }
    loop {
        let line = tokio::select! {
            line = lines.next() => line?,
            Some(()) = interrupts.recv() => {
                if mode == Mode::Terminal {
                    println!();
                }
                return Ok(ExitCode::from(130));
            }
        };
        let question = match line {
            Line::Text(text) => text,
            Line::End => return Ok(ExitCode::SUCCESS),
            Line::Interrupted => return Ok(ExitCode::from(130)),
        };
        let question = question.trim();
        match question {
            "" => continue,
            "/exit" | "/quit" => return Ok(ExitCode::SUCCESS),
            "/help" => {
                eprintln!("{HELP}");
                continue;
            }
            "/new" => {
                conversation = None;
                if mode == Mode::Terminal {
                    eprintln!("\x1b[2m(a new conversation)\x1b[0m");
                } else {
                    eprintln!("(a new conversation)");
                }
                continue;
            }
            command if command.starts_with('/') && !command.contains(' ') => {
                eprintln!("unknown command {command}; /help lists the commands");
                continue;
            }
            _ => {}
        }
        let stream = client.chat(request(question, conversation.clone(), args.max_tokens));
        match show(stream, mode, &mut interrupts).await {
            Ok(Answered::Done {
                conversation_id, ..
            }) => {
                conversation = conversation_id.or(conversation);
            }
            Ok(Answered::Interrupted) => {}
            Ok(Answered::Exit) => return Ok(ExitCode::from(130)),
            Err(error) => eprintln!("tidewire chat: {}", super::describe(&error)),
        }
    }
}

/// Says at once when the server does not answer (the client then keeps trying
/// for a while, silently).
async fn warn_if_unreachable(url: &str) {
    let health = format!("{}/healthz", url.trim_end_matches('/'));
    let probe = reqwest::Client::new()
        .get(&health)
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await;
    if let Err(error) = probe {
        let why = if error.is_connect() {
            "nothing is listening there".to_owned()
        } else {
            error.to_string()
        };
        eprintln!(
            "tidewire chat: cannot connect to {url} ({why}); still trying. Is `tidewire serve` \
             running? (--url or TIDEWIRE_URL name another server)"
        );
    }
}

/// One line of input.
enum Line {
    Text(String),
    End,
    Interrupted,
}

/// Questions, one per line: edited with history at a terminal, read plainly from
/// a pipe.
enum Lines {
    Editor(Option<Box<rustyline::DefaultEditor>>),
    Plain(tokio::io::Lines<BufReader<tokio::io::Stdin>>),
}

impl Lines {
    fn new(terminal: bool) -> Self {
        if terminal && std::io::stdin().is_terminal() {
            match rustyline::DefaultEditor::new() {
                Ok(editor) => return Self::Editor(Some(Box::new(editor))),
                Err(error) => eprintln!("tidewire chat: no line editing ({error})"),
            }
        }
        Self::Plain(BufReader::new(tokio::io::stdin()).lines())
    }

    async fn next(&mut self) -> anyhow::Result<Line> {
        match self {
            Self::Plain(lines) => Ok(match lines.next_line().await.context("reading stdin")? {
                Some(line) => Line::Text(line),
                None => Line::End,
            }),
            Self::Editor(slot) => {
                let mut editor = slot.take().context("the line editor is gone")?;
                // rustyline blocks: it reads in a thread of its own.
                let (editor, read) = tokio::task::spawn_blocking(move || {
                    let read = editor.readline("\x1b[1m› \x1b[0m");
                    if let Ok(line) = &read
                        && !line.trim().is_empty()
                    {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    (editor, read)
                })
                .await
                .context("reading a line")?;
                *slot = Some(editor);
                match read {
                    Ok(line) => Ok(Line::Text(line)),
                    Err(rustyline::error::ReadlineError::Eof) => Ok(Line::End),
                    Err(rustyline::error::ReadlineError::Interrupted) => Ok(Line::Interrupted),
                    Err(error) => Err(error).context("reading a line"),
                }
            }
        }
    }
}

fn request(
    question: &str,
    conversation_id: Option<String>,
    max_tokens: Option<u32>,
) -> ChatRequest {
    ChatRequest {
        message: question.to_owned(),
        conversation_id,
        stream: None,
        options: max_tokens.map(|max_tokens| ChatOptions {
            max_tokens: Some(max_tokens),
            ..ChatOptions::default()
        }),
    }
}

/// Ctrl-C presses, as a channel: the first one during an answer cancels it.
fn interrupts() -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Prints one answer as it streams. A first Ctrl-C stops the run on the server and
/// waits for its end; a second exits.
async fn show(
    mut stream: ChatStream,
    mode: Mode,
    interrupts: &mut mpsc::Receiver<()>,
) -> anyhow::Result<Answered> {
    let mut out = std::io::stdout().lock();
    let mut view = View::new(mode);
    let mut cancelling = false;
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            Some(()) = interrupts.recv() => {
                if cancelling {
                    view.finish_line(&mut out)?;
                    return Ok(Answered::Exit);
                }
                cancelling = true;
                if mode == Mode::Terminal {
                    eprint!("\n\x1b[2m(stopping; Ctrl-C again to quit)\x1b[0m");
                }
                stream.cancel().await?;
                continue;
            }
        };
        let Some(event) = event else {
            view.finish_line(&mut out)?;
            return Ok(if cancelling {
                Answered::Interrupted
            } else {
                Answered::Done {
                    conversation_id: view.conversation_id,
                    failed: view.failed,
                }
            });
        };
        let event = event?;
        view.show(&mut out, &event, stream.last_event_id())?;
        if let ChatEvent::Done(done) = &event {
            return Ok(if cancelling && done.status == MessageStatus::Cancelled {
                Answered::Interrupted
            } else {
                Answered::Done {
                    conversation_id: view.conversation_id,
                    failed: matches!(
                        done.status,
                        MessageStatus::Failed | MessageStatus::Interrupted
                    ),
                }
            });
        }
    }
}

/// One `--json` line: the event's id first, as on the wire.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    id: u64,
    event: &'a str,
    data: serde_json::Value,
}

/// The rendering of one answer.
struct View {
    mode: Mode,
    conversation_id: Option<String>,
    /// Text printed and not yet ended with a newline.
    in_text: bool,
    /// Lines to show after the answer text, so they never break it.
    notes: Vec<String>,
    /// An `error` event arrived.
    failed: bool,
}

impl View {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            conversation_id: None,
            in_text: false,
            notes: Vec::new(),
            failed: false,
        }
    }

    fn show(&mut self, out: &mut impl Write, event: &ChatEvent, id: u64) -> std::io::Result<()> {
        if let ChatEvent::Run(run) = event {
            self.conversation_id = Some(run.conversation_id.clone());
        }
        if let ChatEvent::Error(error) = event {
            self.failed = true;
            // On stderr whatever stdout is, so a script sees why.
            if self.mode != Mode::Json {
                self.finish_line(out)?;
                eprintln!("tidewire chat: error: {} ({})", error.error, error.code);
            }
        }
        match self.mode {
            Mode::Json => {
                let data = serde_json::from_str::<serde_json::Value>(&event.data_json())
                    .unwrap_or_default();
                let line = JsonLine {
                    id,
                    event: event.name(),
                    data,
                };
                writeln!(out, "{}", serde_json::to_string(&line).unwrap_or_default())?;
            }
            Mode::Plain => match event {
                ChatEvent::Token(token) => {
                    write!(out, "{}", token.token)?;
                    self.in_text = true;
                }
                ChatEvent::Done(_) => self.finish_line(out)?,
                _ => {}
            },
            Mode::Terminal => self.show_terminal(out, event)?,
        }
        out.flush()
    }

    fn show_terminal(&mut self, out: &mut impl Write, event: &ChatEvent) -> std::io::Result<()> {
        const DIM: &str = "\x1b[2m";
        const RESET: &str = "\x1b[0m";
        match event {
            ChatEvent::Stage(stage) => self.note(out, format!("{DIM}⋯ {}{RESET}", stage.stage))?,
            ChatEvent::Token(token) => {
                write!(out, "{}", token.token)?;
                self.in_text = true;
            }
            ChatEvent::Sources(sources) => {
                let mut lines = vec![format!("{DIM}Sources:{RESET}")];
                for (n, source) in sources.sources.iter().enumerate() {
                    lines.push(format!(
                        "  {}. {} ({:.2})",
                        n + 1,
                        source.document_name,
                        source.score
                    ));
                }
                self.note(out, lines.join("\n"))?;
            }
            ChatEvent::ToolStarted(tool) => {
                self.note(out, format!("{DIM}⚙ {}…{RESET}", tool.tool_name))?
            }
            ChatEvent::ToolFinished(tool) => {
                self.note(
                    out,
                    format!("{DIM}⚙ {} ({} ms){RESET}", tool.tool_name, tool.duration_ms),
                )?;
            }
            ChatEvent::QualityScore(score) => self.note(
                out,
                format!("{DIM}quality {:.2}{RESET}", score.quality_score),
            )?,
            ChatEvent::FollowUpQuestions(questions) => {
                let mut lines = vec![format!("{DIM}Follow-up questions:{RESET}")];
                lines.extend(
                    questions
                        .follow_up_questions
                        .iter()
                        .map(|q| format!("  - {q}")),
                );
                self.note(out, lines.join("\n"))?;
            }
            // Calls of a client's own tools exist only on the OpenAI routes.
            ChatEvent::Error(_) | ChatEvent::ToolCall(_) => {}
            ChatEvent::Metadata(metadata) => self.note(
                out,
                format!(
                    "{DIM}{} · {} tokens · {:.1}s · conversation {}{RESET}",
                    metadata.model,
                    metadata.usage.completion_tokens,
                    metadata.timing.total_ms as f64 / 1000.0,
                    self.conversation_id.as_deref().unwrap_or("?")
                ),
            )?,
            ChatEvent::Done(done) => {
                self.finish_line(out)?;
                for note in self.notes.drain(..) {
                    writeln!(out, "{note}")?;
                }
                if done.status != MessageStatus::Complete {
                    writeln!(out, "{DIM}[{}]{RESET}", done.status)?;
                }
            }
            ChatEvent::Run(_) => {}
        }
        Ok(())
    }

    /// Shows a line now if the answer text has not started, else after it.
    fn note(&mut self, out: &mut impl Write, note: String) -> std::io::Result<()> {
        if self.in_text {
            self.notes.push(note);
            Ok(())
        } else {
            writeln!(out, "{note}")
        }
    }

    fn finish_line(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.in_text {
            writeln!(out)?;
            self.in_text = false;
        }
        out.flush()
    }
}
