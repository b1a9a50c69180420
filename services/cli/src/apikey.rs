//! `airline apikey`: create, list and revoke the gateway's API keys.

use airline_gateway::auth::{self, KeyError, NewKey, Scope};
use airline_runtime::Refusal;
use airline_runtime::Runtime;
use clap::Subcommand;

/// `airline apikey ...`
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create a key and print it once, as the last line (it cannot be shown again).
    Create {
        /// A unique name (letters, digits, '-', '_', '.', '@').
        #[arg(long)]
        name: String,
        /// `client` (search, book, cancel, webhooks) or `admin` (also flights and
        /// /v1/admin).
        #[arg(long, default_value = "client", value_parser = ["client", "admin"])]
        scope: String,
        /// Requests per second.
        #[arg(long, default_value_t = auth::DEFAULT_RATE)]
        rate: u32,
        /// Requests at once (the token bucket's size).
        #[arg(long, default_value_t = auth::DEFAULT_BURST)]
        burst: u32,
    },
    /// Every key: name, prefix, scope, limits, created, revoked.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by name (the gateway stops taking it within 5 s).
    Revoke {
        /// The key's name.
        name: String,
    },
}

fn refusal(e: KeyError) -> anyhow::Error {
    match e {
        KeyError::Invalid(m) => Refusal::Invalid(m).into(),
        KeyError::Database(e) => e.into(),
    }
}

/// Runs an `apikey` command.
///
/// # Errors
/// [`Refusal`] (exit status 2) for a bad name, a name in use or an unknown key.
pub async fn run(rt: &Runtime, command: ApiKeyCommand) -> anyhow::Result<()> {
    match command {
        ApiKeyCommand::Create {
            name,
            scope,
            rate,
            burst,
        } => {
            let new = NewKey {
                name,
                scope: Scope::parse(&scope).unwrap_or(Scope::Client),
                rate,
                burst,
            };
            let (info, key) = auth::create(&rt.pool, &new).await.map_err(refusal)?;
            println!(
                "created {} key {} ({} requests/s, bursts of {}); it is shown only now:",
                info.scope.as_str(),
                info.name,
                info.rate,
                info.burst
            );
            println!("{key}");
        }
        ApiKeyCommand::List { json } => {
            let keys = auth::list(&rt.pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                for k in &keys {
                    println!(
                        "{:<24} {}…  {:<6} {:>7}/s burst {:<6} created {}{}",
                        k.name,
                        k.prefix,
                        k.scope.as_str(),
                        k.rate,
                        k.burst,
                        k.created_at,
                        k.revoked_at
                            .map_or_else(String::new, |t| format!("  REVOKED {t}"))
                    );
                }
                println!("{} key(s)", keys.len());
            }
        }
        ApiKeyCommand::Revoke { name } => {
            auth::revoke(&rt.pool, &name).await.map_err(refusal)?;
            println!("revoked {name}");
        }
    }
    Ok(())
}
