//! The encoders connected to this node right now, by stream: what `/api/status` and the
//! watch page show about a stream's ingest (protocol, encoder address, codecs,
//! resolution, bitrate), and the handle that lets a reconnecting encoder replace its
//! stale connection.

use serde::Serialize;
use shoal_protocol::stream;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// What is known of one stream's encoder.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EncoderInfo {
    /// How it pushes: `rtmp` (later `srt`).
    pub protocol: &'static str,
    /// Its address.
    pub address: SocketAddr,
    /// Codecs as HLS names them (`avc1.64001f`, `mp4a.40.2`).
    pub codecs: Vec<String>,
    /// Video width in pixels (0: not known yet).
    pub width: u32,
    /// Video height in pixels.
    pub height: u32,
    /// Bits per second over the last segment.
    pub bitrate_bps: u64,
    /// The encoder software, as its metadata names it.
    pub encoder: Option<String>,
    /// Segments made from it on this connection.
    pub segments: u64,
    /// When it connected, Unix ms.
    pub since_ms: u64,
}

/// One registration: lets the connection update its entry and learn it was replaced.
#[derive(Debug)]
pub struct Registration {
    generation: u64,
    /// Notified when a newer connection took the stream over.
    pub replaced: Arc<Notify>,
}

#[derive(Debug)]
struct Entry {
    generation: u64,
    info: EncoderInfo,
    replaced: Arc<Notify>,
}

/// Encoders by stream.
#[derive(Debug, Default)]
pub struct Encoders {
    inner: Mutex<(u64, HashMap<stream::Name, Entry>)>,
}

impl Encoders {
    /// Registers the encoder of `name`; one registered before it is told to go.
    pub fn register(&self, name: &stream::Name, info: EncoderInfo) -> Registration {
        let mut inner = self.inner.lock().expect("poisoned");
        inner.0 += 1;
        let generation = inner.0;
        let replaced = Arc::new(Notify::new());
        let entry = Entry {
            generation,
            info,
            replaced: replaced.clone(),
        };
        if let Some(old) = inner.1.insert(name.clone(), entry) {
            old.replaced.notify_one();
        }
        Registration {
            generation,
            replaced,
        }
    }

    /// Updates the entry of `name` if `reg` still holds it.
    pub fn update(
        &self,
        name: &stream::Name,
        reg: &Registration,
        f: impl FnOnce(&mut EncoderInfo),
    ) {
        let mut inner = self.inner.lock().expect("poisoned");
        if let Some(e) = inner
            .1
            .get_mut(name)
            .filter(|e| e.generation == reg.generation)
        {
            f(&mut e.info);
        }
    }

    /// Removes the entry of `name` if `reg` still holds it.
    pub fn remove(&self, name: &stream::Name, reg: &Registration) {
        let mut inner = self.inner.lock().expect("poisoned");
        if inner
            .1
            .get(name)
            .is_some_and(|e| e.generation == reg.generation)
        {
            inner.1.remove(name);
        }
    }

    /// The encoder of `name`, if one is connected.
    pub fn get(&self, name: &stream::Name) -> Option<EncoderInfo> {
        let inner = self.inner.lock().expect("poisoned");
        inner.1.get(name).map(|e| e.info.clone())
    }

    /// Connected encoders.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("poisoned").1.len()
    }

    /// True if no encoder is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> EncoderInfo {
        EncoderInfo {
            protocol: "rtmp",
            address: "127.0.0.1:5000".parse().unwrap(),
            codecs: vec![],
            width: 0,
            height: 0,
            bitrate_bps: 0,
            encoder: None,
            segments: 0,
            since_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_newer_connection_replaces_the_older() {
        let e = Encoders::default();
        let name = stream::Name::new("cam").unwrap();
        let old = e.register(&name, info());
        let new = e.register(&name, info());
        // The old one was told, and can no longer touch the entry.
        tokio::time::timeout(std::time::Duration::from_secs(1), old.replaced.notified())
            .await
            .unwrap();
        e.update(&name, &old, |i| i.width = 1);
        e.remove(&name, &old);
        assert_eq!(e.get(&name).map(|i| i.width), Some(0));
        e.update(&name, &new, |i| i.width = 2);
        assert_eq!(e.get(&name).map(|i| i.width), Some(2));
        e.remove(&name, &new);
        assert!(e.is_empty());
    }
}
