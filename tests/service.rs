//! Running `shoal` as a service: systemd's readiness protocol (`READY=1` once it
//! listens, `STOPPING=1` when SIGTERM starts a drain), `/readyz` turning 503 while it
//! drains, and the shipped unit file passing `systemd-analyze verify`.

use shoal_tests::http;
use shoal_tests::process::{binary, free_tcp, free_udp};
use shoal_tests::temp_dir;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The node's process, killed when dropped (also when the test fails mid-way).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn receive(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification from the node");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_readiness_and_a_draining_node_goes_unready() {
    let dir = temp_dir("sd-notify");
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let http_addr: SocketAddr = format!("127.0.0.1:{}", free_tcp()).parse().unwrap();
    let mut child = Child(
        Command::new(binary())
            .arg("run")
            .arg("--data-dir")
            .arg(dir.join("node"))
            .args(["--http", &http_addr.to_string()])
            .args([
                "--p2p",
                &format!("/ip4/127.0.0.1/udp/{}/quic-v1", free_udp()),
            ])
            .args(["--data", &format!("127.0.0.1:{}", free_udp())])
            .args(["--rtmp", "off", "--srt", "off", "--drain-timeout", "5"])
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let ready = receive(&sock);
    assert!(ready.starts_with("READY=1\n"), "{ready:?}");
    assert!(ready.contains(&http_addr.to_string()), "{ready:?}");
    // Ready means listening.
    let r = http::get(http_addr, "/readyz", &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // SIGTERM: a drain, said to systemd, and the node leaves load balancers.
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopping = receive(&sock);
    assert!(stopping.starts_with("STOPPING=1"), "{stopping:?}");
    let r = http::get(http_addr, "/readyz", &[]).await.unwrap();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().starts_with("draining"));
    let r = http::get(http_addr, "/healthz", &[]).await.unwrap();
    assert_eq!(r.status, 200, "alive while draining");

    let exited = (0..200).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        child.0.try_wait().unwrap()
    });
    assert!(
        exited.is_some_and(|s| s.success()),
        "the drained node exits cleanly: {exited:?}"
    );
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: unit not verified");
        return;
    };
    assert!(out.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/shoal.service"
    ))
    .unwrap();
    // Verified against the binary this build made (the unit names its installed path).
    let unit = unit.replace("/usr/local/bin/shoal", &binary().display().to_string());
    let dir = temp_dir("unit");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shoal.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}
