//! SRT ingest: MPEG-TS pushed by hardware encoders, OBS and ffmpeg in SRT caller mode
//! (`srt://NODE:9000?streamid=#!::r=STREAM,m=publish,s=KEY`). The transport is
//! `srt-tokio`; [`stream_id`] reads the caller's stream id; [`server`] runs the listener
//! and feeds each connection's TS to the node's segmenter.

pub mod server;
pub mod stream_id;
