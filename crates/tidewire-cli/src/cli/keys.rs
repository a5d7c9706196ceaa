//! `tidewire keys`: API keys of a data directory, or of a PostgreSQL database, made,
//! listed and revoked next to a running server (it reads them at every request).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use tidewire::auth::new_key;
use tidewire::store::{ApiKeys, Timestamp};

/// `tidewire keys ...`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The server's data directory.
    #[arg(
        long,
        env = "TIDEWIRE_DATA_DIR",
        default_value = "tidewire-data",
        global = true
    )]
    data_dir: PathBuf,
    /// The server's PostgreSQL database (`postgres://user:password@host/db`): the
    /// keys are kept there instead of in the data directory.
    #[arg(
        long,
        env = "TIDEWIRE_POSTGRES_URL",
        hide_env_values = true,
        global = true
    )]
    postgres_url: Option<String>,
    /// The PostgreSQL schema of the server's tables, if it has one of its own.
    #[arg(
        long,
        env = "TIDEWIRE_POSTGRES_SCHEMA",
        global = true,
        requires = "postgres_url"
    )]
    postgres_schema: Option<String>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Makes a key for a user and prints it, once: only its hash is kept.
    Create {
        /// The user the key authenticates.
        #[arg(long)]
        user: String,
        /// A name to recognise it by.
        #[arg(long, default_value = "")]
        name: String,
        /// It stops working after this long (`30d`, `12h`); never by default.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<std::time::Duration>,
    },
    /// Lists the keys (of one user with --user), newest first; never the keys.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
    /// Revokes a key by its id (from `list`): it stops working at once.
    Revoke {
        /// The key's id.
        id: String,
    },
}

/// Runs `tidewire keys`.
pub fn keys(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let keys = match &args.postgres_url {
        // The URL may hold a password: it is not repeated in the error.
        Some(url) => ApiKeys::connect_postgres(url, args.postgres_schema.as_deref())
            .await
            .context("connecting to the PostgreSQL database of --postgres-url")?,
        None => ApiKeys::open(&args.data_dir)
            .await
            .with_context(|| format!("opening the data directory {}", args.data_dir.display()))?,
    };
    match args.command {
        KeysCommand::Create {
            user,
            name,
            expires,
        } => {
            if user.trim().is_empty() {
                anyhow::bail!("--user must not be empty");
            }
            let made = new_key().context("no randomness to make a key")?;
            let expires_at = expires.map(|after| {
                let millis = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
                Timestamp(Timestamp::now().0.saturating_add(millis))
            });
            let record = keys
                .create(&user, &name, &made.hash, &made.prefix, expires_at)
                .await?;
            println!("{}", made.key);
            eprintln!(
                "key {} for user {user}{}: shown once, keep it; the server must run with \
                 [auth] api_keys = true",
                record.id,
                expires_at.map_or(String::new(), |at| format!(", until {}", at.rfc3339()))
            );
        }
        KeysCommand::List { user } => {
            for key in keys.list(user.as_deref()).await? {
                let state = match (key.revoked_at, key.expires_at) {
                    (Some(at), _) => format!("revoked {}", at.rfc3339()),
                    (None, Some(at)) if at.0 <= Timestamp::now().0 => {
                        format!("expired {}", at.rfc3339())
                    }
                    (None, Some(at)) => format!("until {}", at.rfc3339()),
                    (None, None) => "active".to_owned(),
                };
                println!(
                    "{}\t{}\t{}…\t{}\t{}\t{state}",
                    key.id,
                    key.user_id,
                    key.prefix,
                    key.name,
                    key.created_at.rfc3339()
                );
            }
        }
        KeysCommand::Revoke { id } => {
            if !keys.revoke(&id).await? {
                eprintln!("tidewire keys: no active key {id}");
                return Ok(ExitCode::FAILURE);
            }
            eprintln!("key {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
