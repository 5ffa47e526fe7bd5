//! The `shoal` binary: `shoal run` starts a node, `shoal id` prints a node's peer id.

use clap::{Parser, Subcommand, ValueEnum};
use shoal_node::config::RunArgs;
use shoal_node::{Node, identity};
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
    /// Print the node's peer id (creating its identity key if missing).
    Id {
        /// The node's state directory.
        #[arg(long, env = "SHOAL_DATA_DIR", default_value = "shoal-data")]
        data_dir: PathBuf,
    },
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,libp2p=warn,quinn=warn"));
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
        Cmd::Run(args) => {
            init_logging(cli.log_format);
            let config = args.resolve()?;
            if config.ingest_keys.is_empty() {
                tracing::warn!("no --ingest-key given: this node refuses ingest");
            }
            let node = Node::start(config).await?;
            shutdown_signal().await;
            tracing::info!("shutting down");
            node.shutdown().await;
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
