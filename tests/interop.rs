//! Ingest from encoders no one here wrote: GStreamer pushing over RTMP with `rtmpsink`
//! (librtmp, the library OBS's RTMP output is a fork of) and with its own `rtmp2sink`,
//! and over SRT with `srtsink` (libsrt; the stream id as a property, as GStreamer users
//! set it). Each stream must be segmented by the node and probe as H.264 + AAC.
//! Needs `gst-launch-1.0` with the base, good, bad and ugly plugins (`.ci/run` installs
//! them).

use shoal_tests::{KEY, config, ffprobe_streams, http, mesh, wait_playlist};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// A GStreamer process, killed when dropped (also when a test fails mid-way).
struct Gst(std::process::Child);

impl Drop for Gst {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A GStreamer pipeline: 10 s of 640x360 30 fps H.264 (a keyframe every 2 s, parameter
/// sets with each, as broadcast encoders send them) and AAC, muxed by `mux` and sent by
/// `sink`.
fn gst(mux: &str, sink: &[&str]) -> Gst {
    let source = "videotestsrc is-live=true num-buffers=300 ! video/x-raw,width=640,height=360,framerate=30/1 \
        ! x264enc tune=zerolatency key-int-max=60 speed-preset=ultrafast ! h264parse config-interval=-1 ! queue ! mux. \
        audiotestsrc is-live=true num-buffers=430 ! audioconvert ! voaacenc ! aacparse ! queue ! mux.";
    let mut args: Vec<String> = vec!["-q".into()];
    args.extend(mux.split(' ').map(String::from));
    args.push("!".into());
    args.extend(sink.iter().map(|s| s.to_string()));
    args.extend(source.split_whitespace().map(String::from));
    let child = Command::new("gst-launch-1.0")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gst-launch-1.0 not found: apt-get install gstreamer1.0-tools gstreamer1.0-plugins-{base,good,bad,ugly}");
    Gst(child)
}

/// Waits for two segments of `stream` on `addr` and probes one.
async fn plays(addr: SocketAddr, stream: &str) {
    let p = wait_playlist(addr, stream, 2).await;
    let r = http::get(addr, &format!("/live/{stream}/{}", p.entries[0].uri), &[])
        .await
        .unwrap();
    let streams = ffprobe_streams(&r.body).unwrap();
    assert!(
        streams.contains(&("h264".into(), 640, 360)) && streams.iter().any(|s| s.0 == "aac"),
        "{stream}: {streams:?}"
    );
    for e in &p.entries {
        assert!(
            (1800..=2200).contains(&e.duration_ms),
            "{stream}: {} lasts {} ms",
            e.file,
            e.duration_ms
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gstreamer_encoders_push_over_rtmp_and_srt() {
    shoal_tests::init_logging();
    let mut c = config("interop");
    c.rtmp = Some("127.0.0.1:0".parse().unwrap());
    c.srt = Some("127.0.0.1:0".parse().unwrap());
    (c.rtmp_explicit, c.srt_explicit) = (true, true);
    let nodes = mesh(vec![c, config("interop-b")]).await.unwrap();
    let (rtmp, srt) = (nodes[0].rtmp_addr().unwrap(), nodes[0].srt_addr().unwrap());
    let viewer = nodes[1].http_addr();

    let librtmp = format!("location=rtmp://{rtmp}/live/librtmp?key={KEY} live=1");
    let _a = gst("flvmux name=mux streamable=true", &["rtmpsink", &librtmp]);
    let rtmp2 = format!("location=rtmp://{rtmp}/live/rtmp2?key={KEY}");
    let _b = gst("flvmux name=mux streamable=true", &["rtmp2sink", &rtmp2]);
    let srt_uri = format!("uri=srt://{srt}");
    let stream_id = format!("streamid=#!::r=gstsrt,m=publish,s={KEY}");
    // Seven TS packets per buffer, one SRT message each: srtsink drops larger buffers.
    let _s = gst(
        "mpegtsmux name=mux alignment=7",
        &["srtsink", &srt_uri, &stream_id],
    );
    plays(viewer, "librtmp").await;
    plays(viewer, "rtmp2").await;
    plays(viewer, "gstsrt").await;
}
