//! `shoal-sim`: runs and measures many real Shoal nodes on one machine.
//!
//! - `shoal-sim demo`: N nodes on loopback, the built-in test clip played out as an
//!   endless live stream into one of them, viewer URLs for every node, and a live table.
//! - `shoal-sim mesh`: N nodes and a periodic report, for pushing your own streams.
//! - `shoal-sim viewers`: simulated HLS players against any node ([`viewer`]).
//! - `shoal-sim bench`: in-process benchmarks ([`bench`]).
//! - [`model`]: the same cores in a discrete-event loop in virtual time (model mode).
//!
//! Modules: [`cluster`] starts the nodes, [`clip`] embeds the test clip, [`playout`]
//! pushes it through a node's HTTP ingest (continuous across loops thanks to [`ts`]),
//! [`table`] renders the live table.

mod bench;
mod clip;
mod cluster;
mod delay;
mod http;
mod model;
mod playout;
mod scenario;
mod table;
mod ts;
mod viewer;

use clap::{Parser, Subcommand};
use cluster::Cluster;
use std::io::IsTerminal;
use std::time::Duration;

/// Runs and measures many Shoal nodes on one machine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A local mesh with a built-in live test stream to watch, and a live table.
    Demo {
        /// Number of nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Stream name.
        #[arg(long, default_value = "demo")]
        stream: String,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Where the /watch pages load hls.js from (default: a public CDN).
        #[arg(long)]
        hls_js_url: Option<String>,
    },
    /// Run a scenario file (sim/scenarios/*.toml) and print its report.
    Run {
        /// The scenario file.
        scenario: std::path::PathBuf,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Also write the report as an HTML page with plots here (real mode).
        #[arg(long)]
        html: Option<std::path::PathBuf>,
        /// `real`: in-process nodes on loopback, in wall-clock time; `model`: the same
        /// cores in a discrete-event loop, in virtual time (up to 20,000 nodes).
        #[arg(long, value_enum, default_value = "real")]
        mode: scenario::file::Mode,
        /// Run the scenario at this many nodes instead of the file's.
        #[arg(long)]
        nodes: Option<usize>,
    },
    /// Simulated HLS viewers against any node's playlist: startup, stalls, continuity.
    Viewers {
        /// The live playlist URL (http://IP:PORT/live/STREAM/index.m3u8).
        #[arg(long)]
        url: String,
        /// Number of viewers.
        #[arg(long, default_value_t = 20)]
        count: usize,
        /// Seconds each viewer watches.
        #[arg(long, default_value_t = 30)]
        duration: u64,
        /// Seconds over which viewers arrive (0: all at once, a flash crowd).
        #[arg(long, default_value_t = 0)]
        ramp: u64,
    },
    /// In-process benchmarks against same-run references; prints JSON.
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
    /// Start a local mesh of real nodes and report on it until Ctrl-C.
    Mesh {
        /// Number of nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Ingest key every node accepts.
        #[arg(long, default_value = "sim-key")]
        ingest_key: String,
        /// Seconds between reports.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Segment pulls over Shoal's data plane against plain quinn bulk transfer.
    Relay {
        /// A/B round pairs.
        #[arg(long, default_value_t = 6)]
        rounds: usize,
        /// Segments per round.
        #[arg(long, default_value_t = 24)]
        segments: usize,
        /// Segment size in bytes.
        #[arg(long, default_value_t = 1_000_000)]
        size: usize,
        /// Transfers in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Ingest-to-everywhere propagation in an N-node mesh.
    Propagation {
        /// Nodes.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Segments pushed (one per second).
        #[arg(long, default_value_t = 8)]
        segments: usize,
        /// Segment size in bytes.
        #[arg(long, default_value_t = 500_000)]
        size: usize,
        /// Fan-out per holder.
        #[arg(long, default_value_t = 4)]
        fanout: usize,
    },
    /// Time to first byte: cold (pull from a peer) against warm (held).
    FirstByte {
        /// Fresh streams measured.
        #[arg(long, default_value_t = 30)]
        iterations: usize,
        /// Segment size in bytes.
        #[arg(long, default_value_t = 200_000)]
        size: usize,
    },
}

/// The ingest key of demo meshes.
const DEMO_KEY: &str = "demo-key";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Demo {
            nodes,
            stream,
            duration,
            hls_js_url,
        } => {
            let limit = duration.map(Duration::from_secs);
            demo(nodes.max(1), stream, limit, hls_js_url).await
        }
        Cmd::Mesh {
            nodes,
            ingest_key,
            interval,
        } => {
            mesh(
                nodes.max(1),
                ingest_key,
                Duration::from_secs(interval.max(1)),
            )
            .await
        }
        Cmd::Run {
            scenario,
            json,
            html,
            mode,
            nodes,
        } => {
            let text = std::fs::read_to_string(&scenario)
                .map_err(|e| anyhow::anyhow!("{}: {e}", scenario.display()))?;
            let mut parsed = scenario::file::Scenario::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", scenario.display()))?;
            if let Some(n) = nodes {
                parsed.nodes = n;
            }
            if mode == scenario::file::Mode::Model {
                anyhow::ensure!(html.is_none(), "--html is for real runs");
                let report = model::scenario::run(&parsed)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", scenario.display()))?;
                print!("{}", model::scenario::text(&report));
                if let Some(path) = json {
                    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
                }
                return Ok(());
            }
            let report = scenario::run(parsed, DEMO_KEY).await?;
            print!("{}", scenario::report::text(&report));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
            }
            if let Some(path) = html {
                std::fs::write(&path, scenario::html::page(&report))?;
            }
            Ok(())
        }
        Cmd::Viewers {
            url,
            count,
            duration,
            ramp,
        } => {
            let count = count.clamp(1, 10_000);
            // On loopback each viewer gets its own source IP, as real viewers have.
            let local = http::parse_url(&url).is_ok_and(|(a, _)| a.ip().is_loopback());
            let tasks: Vec<_> = (0..count)
                .map(|i| {
                    let url = url.clone();
                    let delay = Duration::from_secs(ramp) * i as u32 / count as u32;
                    let from = local.then(|| viewer::client::viewer_ip(i));
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        viewer::client::watch(|_| url.clone(), Duration::from_secs(duration), from)
                            .await
                    })
                })
                .collect();
            let mut outcomes = Vec::with_capacity(count);
            for t in tasks {
                outcomes.push(t.await?);
            }
            println!("{}", viewer::report::summarize(&outcomes));
            Ok(())
        }
        Cmd::Bench { which } => {
            let result = match which {
                BenchCmd::Relay {
                    rounds,
                    segments,
                    size,
                    concurrency,
                } => bench::relay::run(rounds, segments, size, concurrency.max(1)).await?,
                BenchCmd::Propagation {
                    nodes,
                    segments,
                    size,
                    fanout,
                } => bench::propagation::run(nodes.max(2), segments, size, fanout.max(1)).await?,
                BenchCmd::FirstByte { iterations, size } => {
                    bench::first_byte::run(iterations.max(1), size).await?
                }
            };
            println!("{result}");
            Ok(())
        }
    }
}

/// Resolves after `limit` if given, else never.
async fn deadline(limit: Option<Duration>) {
    match limit {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn demo(
    count: usize,
    stream: String,
    limit: Option<Duration>,
    hls_js_url: Option<String>,
) -> anyhow::Result<()> {
    shoal_protocol::stream::Name::new(stream.as_str())
        .map_err(|e| anyhow::anyhow!("stream name {stream:?}: {e}"))?;
    let cluster = Cluster::start(count, DEMO_KEY, |_, c| {
        if let Some(url) = &hls_js_url {
            c.hls_js_url = url.clone();
        }
    })
    .await?;
    let ingest = cluster.node(0).expect("started").http_addr();
    let mut playout = tokio::spawn(playout::run(ingest, stream.clone(), DEMO_KEY.into()));
    let mut header = format!(
        "Shoal demo: {count} nodes on 127.0.0.1, the built-in test stream \"{stream}\" pushed into node0.\n\
         Watch it on any node (the first segment is ready in ~2 s):\n"
    );
    for (i, node) in cluster.indexed() {
        let http = node.http_addr();
        header.push_str(&format!(
            "  node{i}  http://{http}/watch/{stream}   (VLC/ffplay: http://{http}/live/{stream}/index.m3u8)\n"
        ));
    }
    header.push_str("Status: http://ADDR/api/status on any node. Ctrl-C stops everything.\n");
    let tty = std::io::stdout().is_terminal();
    if !tty {
        println!("{header}");
    }
    let mut table = table::Table::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let stop = deadline(limit);
    tokio::pin!(stop);
    let outcome = loop {
        tokio::select! {
            _ = ticker.tick() => {
                let rows = table.render(&cluster.indexed());
                if tty {
                    // Clear and redraw in place.
                    print!("\x1b[2J\x1b[H{header}\n{rows}");
                } else {
                    println!("{rows}");
                }
            }
            done = &mut playout => break match done {
                Ok(Err(e)) => Err(e.context("the test stream stopped")),
                Ok(Ok(())) => Ok(()),
                Err(e) => Err(anyhow::anyhow!("playout task failed: {e}")),
            },
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = &mut stop => break Ok(()),
        }
    };
    playout.abort();
    cluster.stop().await;
    println!("stopped");
    outcome
}

async fn mesh(count: usize, key: String, interval: Duration) -> anyhow::Result<()> {
    let cluster = Cluster::start(count, &key, |_, _| {}).await?;
    for (i, node) in cluster.indexed() {
        println!(
            "node{i} {} http://{}  (ingest: PUT http://{}/ingest/STREAM/index.m3u8 with Bearer {key})",
            node.peer_id(),
            node.http_addr(),
            node.http_addr()
        );
    }
    let mut table = table::Table::new();
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => println!("{}", table.render(&cluster.indexed())),
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    cluster.stop().await;
    Ok(())
}
