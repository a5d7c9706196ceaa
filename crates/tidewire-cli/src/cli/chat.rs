//! `tidewire chat`: ask from the terminal. Streams the answer as it arrives, with
//! the stage, sources and follow-ups around it; on a pipe, only the answer text.

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
    #[arg(long, requires = "attach", default_value_t = 0)]
    last_event_id: u64,
}

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
    Done { conversation_id: Option<String> },
    Interrupted,
    Exit,
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
    let client = Client::new(&args.url)?;
    let mode = if args.json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Terminal
    } else {
        Mode::Plain
    };
    let mut interrupts = interrupts();

    if let Some(run_id) = &args.attach {
        let stream = client.attach(run_id, args.last_event_id);
        return Ok(match show(stream, mode, &mut interrupts).await? {
            Answered::Done { .. } => ExitCode::SUCCESS,
            Answered::Interrupted | Answered::Exit => ExitCode::from(130),
        });
    }
    let mut conversation = args.conversation.clone();
    if let Some(question) = &args.question {
        let stream = client.chat(request(question, conversation, args.max_tokens));
        return Ok(match show(stream, mode, &mut interrupts).await? {
            Answered::Done { .. } => ExitCode::SUCCESS,
            Answered::Interrupted | Answered::Exit => ExitCode::from(130),
        });
    }

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        if mode == Mode::Terminal {
            print!("\x1b[1m› \x1b[0m");
            std::io::stdout().flush()?;
        }
        let line = tokio::select! {
            line = lines.next_line() => line.context("reading stdin")?,
            Some(()) = interrupts.recv() => {
                if mode == Mode::Terminal {
                    println!();
                }
                return Ok(ExitCode::from(130));
            }
        };
        let Some(line) = line else {
            return Ok(ExitCode::SUCCESS);
        };
        let question = line.trim();
        if question.is_empty() {
            continue;
        }
        if question == "/exit" || question == "/quit" {
            return Ok(ExitCode::SUCCESS);
        }
        let stream = client.chat(request(question, conversation.clone(), args.max_tokens));
        match show(stream, mode, &mut interrupts).await {
            Ok(Answered::Done { conversation_id }) => {
                conversation = conversation_id.or(conversation);
            }
            Ok(Answered::Interrupted) => {}
            Ok(Answered::Exit) => return Ok(ExitCode::from(130)),
            Err(error) => eprintln!("tidewire chat: {error:#}"),
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
}

impl View {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            conversation_id: None,
            in_text: false,
            notes: Vec::new(),
        }
    }

    fn show(&mut self, out: &mut impl Write, event: &ChatEvent, id: u64) -> std::io::Result<()> {
        if let ChatEvent::Run(run) = event {
            self.conversation_id = Some(run.conversation_id.clone());
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
            ChatEvent::Error(error) => self.note(
                out,
                format!("\x1b[31merror: {} ({}){RESET}", error.error, error.code),
            )?,
            ChatEvent::Metadata(metadata) => self.note(
                out,
                format!(
                    "{DIM}{} · {} tokens · {:.1}s{RESET}",
                    metadata.model,
                    metadata.usage.completion_tokens,
                    metadata.timing.total_ms as f64 / 1000.0
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
        if self.in_text || self.mode == Mode::Plain {
            writeln!(out)?;
            self.in_text = false;
        }
        out.flush()
    }
}
