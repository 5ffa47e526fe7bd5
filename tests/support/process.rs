//! Real `shoal` processes for tests that must kill a node the hard way (SIGKILL) or
//! restart it with its data directory.

use anyhow::{Context, bail};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `shoal` binary next to the test executable (built by `cargo test --workspace`).
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join("shoal");
    assert!(
        bin.exists(),
        "{} missing: cargo build -p shoal-node (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port free on 127.0.0.1 right now.
pub fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `shoal run` process with fixed ports and data directory, so it can be restarted as
/// the same node at the same addresses.
pub struct ShoalProcess {
    /// Name in logs.
    pub name: String,
    /// Its peer id.
    pub peer_id: String,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its bootstrap multiaddr (`/ip4/127.0.0.1/udp/PORT/quic-v1/p2p/ID`).
    pub bootstrap: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl ShoalProcess {
    /// Starts a node; `bootstrap` is another node's bootstrap address.
    pub fn start(name: &str, bootstrap: Option<&str>, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = crate::temp_dir(name);
        Self::start_in(dir, name, bootstrap, extra)
    }

    /// The peer id of the node whose data directory is `dir` (made if missing).
    pub fn peer_id_of(dir: &std::path::Path) -> anyhow::Result<String> {
        std::fs::create_dir_all(dir)?;
        let out = Command::new(binary())
            .args(["id", "--data-dir"])
            .arg(dir)
            .output()?;
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// Starts a node with data directory `dir` (see [`ShoalProcess::start`]).
    pub fn start_in(
        dir: PathBuf,
        name: &str,
        bootstrap: Option<&str>,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let peer_id = Self::peer_id_of(&dir)?;
        let (http, p2p, data) = (free_tcp(), free_udp(), free_udp());
        let mut args: Vec<String> = vec![
            "run".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--http".into(),
            format!("127.0.0.1:{http}"),
            "--p2p".into(),
            format!("/ip4/127.0.0.1/udp/{p2p}/quic-v1"),
            "--data".into(),
            format!("127.0.0.1:{data}"),
            "--ingest-key".into(),
            crate::KEY.into(),
        ];
        if let Some(b) = bootstrap {
            args.extend(["--bootstrap".into(), b.into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut p = Self {
            name: name.into(),
            bootstrap: format!("/ip4/127.0.0.1/udp/{p2p}/quic-v1/p2p/{peer_id}"),
            peer_id,
            http: format!("127.0.0.1:{http}").parse()?,
            log: dir.join("node.log"),
            args,
            child: None,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(binary())
            .args(&self.args)
            .env("RUST_LOG", "info,libp2p=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning shoal")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(self.http).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "{} did not open {} (log: {})",
                    self.name,
                    self.http,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// SIGKILL: the node vanishes without a goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM: the node drains and exits on its own.
    pub fn terminate(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
    }

    /// Waits up to `timeout` for the process to exit; its exit status if it did.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// Starts it again with the same data directory, ports and flags.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn()
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for ShoalProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
