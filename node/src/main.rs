//! The `shoal` binary: `shoal run` starts a node, `shoal drain` drains a running one,
//! `shoal id` prints a node's peer id, `shoal keygen` and `shoal token` make viewer
//! token keys and tokens, and `shoal credential` and `shoal revoke` a closed mesh's
//! membership credentials and revocation lists.

mod drain;

use clap::{Parser, Subcommand, ValueEnum};
use shoal_node::config::RunArgs;
use shoal_node::{Node, PeerId, identity, members, tokens};
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

/// Shoal: a peer-to-peer live streaming CDN node.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, env = "SHOAL_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a node.
    Run(Box<RunArgs>),
    /// Drain a running node: it redirects new viewers, serves its own until they leave
    /// (or its drain timeout), hands them off, leaves the mesh and exits.
    Drain {
        /// The node's HTTP address.
        #[arg(long, env = "SHOAL_HTTP", default_value = "127.0.0.1:8080")]
        http: std::net::SocketAddr,
        /// The node's admin token.
        #[arg(long, env = "SHOAL_ADMIN_TOKEN")]
        admin_token: String,
        /// Wait until the node has exited.
        #[arg(long)]
        wait: bool,
    },
    /// Write a new Ed25519 key to FILE (PKCS#8 PEM) and print its public key as
    /// `KID:PUBLIC`: the `--viewer-key` value that makes nodes accept the viewer tokens
    /// it signs, or the `--mesh-ca` value of a closed mesh whose credentials it signs.
    Keygen {
        /// Where to write the private key (refused if it exists).
        file: PathBuf,
    },
    /// Print a viewer token for a stream, signed with a key from `shoal keygen`.
    Token {
        /// The signing key file.
        #[arg(long)]
        key: PathBuf,
        /// The stream it grants.
        #[arg(long)]
        stream: String,
        /// How long it is valid: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = shoal_node::units::parse_duration)]
        ttl: std::time::Duration,
        /// Bind it to one client address.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
    },
    /// Print a membership credential for a node of a closed mesh (`--credential FILE`),
    /// signed with the mesh CA's key from `shoal keygen`.
    Credential {
        /// The mesh CA's key file.
        #[arg(long)]
        ca_key: PathBuf,
        /// The node's peer id (`shoal id`).
        #[arg(long)]
        peer: PeerId,
        /// How long it admits the node: 1h, 30d.
        #[arg(long, default_value = "30d", value_parser = shoal_node::units::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Print a revocation list naming these peers, signed with the mesh CA's key: post it
    /// to any node (`POST /api/revocations`) and the mesh cuts them within seconds. Each
    /// list replaces the ones before: name every peer still revoked.
    Revoke {
        /// The mesh CA's key file.
        #[arg(long)]
        ca_key: PathBuf,
        /// A peer to revoke (repeatable; none lifts every revocation).
        #[arg(long)]
        peer: Vec<PeerId>,
    },
    /// Print the node's peer id (creating its identity key if missing).
    Id {
        /// The node's state directory.
        #[arg(long, env = "SHOAL_DATA_DIR", default_value = "shoal-data")]
        data_dir: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,libp2p=warn,quinn=warn,srt_protocol=error,srt_tokio=error")
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Id { data_dir } => {
            let keypair = identity::load_or_create(&data_dir)?;
            println!("{}", keypair.public().to_peer_id());
            Ok(())
        }
        Cmd::Keygen { file } => {
            let key = tokens::SigningKey::generate();
            write_new_private(&file, key.to_pem().as_bytes())?;
            println!("{}", key.viewer_key_arg());
            Ok(())
        }
        Cmd::Credential { ca_key, peer, ttl } => {
            let ca = read_key(&ca_key)?;
            let text = members::issue_credential(&ca, peer, ttl, tokens::unix_now())
                .map_err(anyhow::Error::msg)?;
            println!("{text}");
            Ok(())
        }
        Cmd::Revoke { ca_key, peer } => {
            let ca = read_key(&ca_key)?;
            let text = members::issue_revocations(&ca, peer, tokens::unix_now())
                .map_err(anyhow::Error::msg)?;
            println!("{text}");
            Ok(())
        }
        Cmd::Token {
            key,
            stream,
            ttl,
            ip,
        } => {
            let key = read_key(&key)?;
            let token = key
                .token(&stream, ttl, ip, tokens::unix_now())
                .map_err(anyhow::Error::msg)?;
            println!("{token}");
            Ok(())
        }
        Cmd::Run(args) => {
            init_logging(cli.log_format);
            let config = args.resolve()?;
            if config.ingest_keys.is_empty() {
                tracing::warn!("no --ingest-key given: this node refuses ingest");
            }
            let drain_timeout = config.drain_timeout;
            let node = Node::start(config).await?;
            shoal_node::sd_notify::notify(&format!(
                "READY=1\nSTATUS=serving on {}",
                node.http_addr()
            ));
            match stop_signal(&node).await {
                Stop::Now => {
                    tracing::info!("shutting down");
                    node.shutdown().await;
                }
                Stop::Drain => {
                    // A second SIGINT/SIGTERM while draining stops at once.
                    tokio::select! {
                        _ = node.drain(drain_timeout) => {}
                        _ = tokio::signal::ctrl_c() => tracing::warn!("drain interrupted"),
                        _ = terminate() => tracing::warn!("drain interrupted"),
                    }
                }
            }
            Ok(())
        }
        Cmd::Drain {
            http,
            admin_token,
            wait,
        } => drain::request(http, &admin_token, wait).await,
    }
}

/// Reads a key written by `shoal keygen`.
fn read_key(path: &std::path::Path) -> anyhow::Result<tokens::SigningKey> {
    let pem =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    tokens::SigningKey::from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Writes a new private file (mode 0600 on Unix); refuses to overwrite one.
fn write_new_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// How the node should stop.
enum Stop {
    /// Ctrl-C: at once.
    Now,
    /// SIGTERM or `POST /api/drain`: drain first.
    Drain,
}

async fn stop_signal(node: &Node) -> Stop {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Stop::Now,
        _ = terminate() => Stop::Drain,
        _ = node.drain_requested() => Stop::Drain,
    }
}

/// Resolves on SIGTERM (never elsewhere).
async fn terminate() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    }
    #[cfg(not(unix))]
    std::future::pending::<()>().await;
}
