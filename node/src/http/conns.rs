//! Bounds on HTTP connections, per client address and overall, and which connection
//! gives way when a bound is reached.
//!
//! A flood of idle connections must not lock out viewers. When a new connection would
//! exceed a bound, an existing one is shed first: one that has not sent a request yet
//! (oldest first), else the one idle longest (closed gracefully: a response in flight is
//! finished). Viewers that are playing send requests every few seconds and are the last
//! to go. Near a bound, a new connection must send its first request within a short
//! deadline.

use shoal_core::viewers::Sid;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once.
    pub max: usize,
    /// Most connections from one client address.
    pub per_addr: usize,
    /// A new connection must send its first request within this time...
    pub first_request: Duration,
    /// ...or within this shorter time when more than half of a bound is in use.
    pub first_request_near_limit: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // An edge serves tens of thousands of viewers, one or two connections each;
            // an idle connection costs about 10 KiB.
            max: 32_768,
            // A carrier-grade NAT or a campus puts thousands of players behind one
            // address.
            per_addr: 4_096,
            first_request: Duration::from_secs(30),
            // Real clients send their request right after connecting.
            first_request_near_limit: Duration::from_secs(3),
        }
    }
}

/// `limits` with `max` lowered to what the open-file limit allows (after raising the
/// soft limit to the hard one), keeping room for the data plane, peers and storage.
pub fn fit_to_fd_limit(mut limits: Limits) -> Limits {
    /// File descriptors kept for everything but viewer connections.
    const RESERVED_FDS: u64 = 1_024;
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                if lim.rlim_cur < lim.rlim_max {
                    let raised = libc::rlimit {
                        rlim_cur: lim.rlim_max,
                        rlim_max: lim.rlim_max,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                        lim.rlim_cur = lim.rlim_max;
                    }
                }
                let usable = lim.rlim_cur.saturating_sub(RESERVED_FDS).max(64);
                if (limits.max as u64) > usable {
                    tracing::warn!(
                        configured = limits.max,
                        usable,
                        "open-file limit too low for the configured connections; lowered"
                    );
                    limits.max = usable as usize;
                }
            }
        }
    }
    limits.per_addr = limits.per_addr.min(limits.max);
    limits
}

/// One open connection.
#[derive(Debug)]
pub struct Conn {
    id: u64,
    ip: IpAddr,
    opened: Instant,
    requests: AtomicU64,
    /// Milliseconds from `opened` to the latest request.
    last_request_ms: AtomicU64,
    shed: tokio::sync::Notify,
    /// The viewer session this connection last carried (see `http::live`): a player
    /// reloads its playlist on a connection it used before.
    pub session: Mutex<Option<Sid>>,
}

impl Conn {
    /// A request arrived on this connection.
    pub fn on_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_request_ms.store(ms, Ordering::Relaxed);
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Resolves when this connection is to give way to a new one.
    pub async fn shed(&self) {
        self.shed.notified().await
    }

    fn last_active(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_request_ms.load(Ordering::Relaxed))
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is taken and none could be shed.
    Full,
}

#[derive(Debug, Default)]
struct Inner {
    all: HashMap<u64, Arc<Conn>>,
    by_addr: HashMap<IpAddr, Vec<u64>>,
    /// Connections in the order they opened, to find the oldest that sent no request;
    /// entries of closed or used connections are skipped and dropped lazily.
    fresh: VecDeque<u64>,
}

/// The open connections of one HTTP listener.
#[derive(Debug)]
pub struct Conns {
    limits: Limits,
    inner: Mutex<Inner>,
    next: AtomicU64,
    shed_count: AtomicU64,
}

/// A connection's place; frees it when dropped.
#[derive(Debug)]
pub struct Slot {
    conns: Arc<Conns>,
    /// The connection.
    pub conn: Arc<Conn>,
    /// How long it has to send its first request.
    pub first_request: Duration,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.conns.release(&self.conn);
    }
}

impl Conns {
    /// A table with these limits.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            inner: Mutex::new(Inner::default()),
            next: AtomicU64::new(0),
            shed_count: AtomicU64::new(0),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.inner.lock().expect("poisoned").all.len()
    }

    /// Connections shed so far to make room.
    pub fn shed_total(&self) -> u64 {
        self.shed_count.load(Ordering::Relaxed)
    }

    /// Takes a slot for a new connection from `ip`, shedding another connection if a
    /// bound is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Slot, Refused> {
        let mut inner = self.inner.lock().expect("poisoned");
        let from_addr = inner.by_addr.get(&ip).map_or(0, Vec::len);
        if from_addr >= self.limits.per_addr {
            let victim = self.victim_of_addr(&inner, ip).ok_or(Refused::Full)?;
            self.shed(&mut inner, victim);
        }
        if inner.all.len() >= self.limits.max {
            let victim = self.victim(&mut inner).ok_or(Refused::Full)?;
            self.shed(&mut inner, victim);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            ip,
            opened: now,
            requests: AtomicU64::new(0),
            last_request_ms: AtomicU64::new(0),
            shed: tokio::sync::Notify::new(),
            session: Mutex::new(None),
        });
        inner.all.insert(id, conn.clone());
        let from_addr = {
            let v = inner.by_addr.entry(ip).or_default();
            v.push(id);
            v.len()
        };
        inner.fresh.push_back(id);
        if inner.fresh.len() > 2 * inner.all.len() + 64 {
            let Inner { all, fresh, .. } = &mut *inner;
            fresh.retain(|id| all.get(id).is_some_and(|c| c.requests() == 0));
        }
        let near = inner.all.len() * 2 > self.limits.max || from_addr * 2 > self.limits.per_addr;
        let first_request = if near {
            self.limits.first_request_near_limit
        } else {
            self.limits.first_request
        };
        Ok(Slot {
            conns: self.clone(),
            conn,
            first_request,
        })
    }

    /// The connection of `ip` to shed: its oldest that sent no request, else the one
    /// idle longest.
    fn victim_of_addr(&self, inner: &Inner, ip: IpAddr) -> Option<u64> {
        let ids = inner.by_addr.get(&ip)?;
        let conns = ids.iter().filter_map(|id| inner.all.get(id));
        let unused = conns
            .clone()
            .filter(|c| c.requests() == 0)
            .min_by_key(|c| c.opened);
        unused
            .or_else(|| conns.min_by_key(|c| c.last_active()))
            .map(|c| c.id)
    }

    /// The connection to shed overall: the oldest that sent no request, else the one
    /// idle longest.
    fn victim(&self, inner: &mut Inner) -> Option<u64> {
        while let Some(id) = inner.fresh.pop_front() {
            if inner.all.get(&id).is_some_and(|c| c.requests() == 0) {
                return Some(id);
            }
        }
        inner
            .all
            .values()
            .min_by_key(|c| c.last_active())
            .map(|c| c.id)
    }

    fn shed(&self, inner: &mut Inner, id: u64) {
        if let Some(conn) = Self::remove(inner, id) {
            conn.shed.notify_one();
            self.shed_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(inner: &mut Inner, id: u64) -> Option<Arc<Conn>> {
        let conn = inner.all.remove(&id)?;
        if let Some(v) = inner.by_addr.get_mut(&conn.ip) {
            v.retain(|c| *c != id);
            if v.is_empty() {
                inner.by_addr.remove(&conn.ip);
            }
        }
        Some(conn)
    }

    fn release(&self, conn: &Conn) {
        let mut inner = self.inner.lock().expect("poisoned");
        Self::remove(&mut inner, conn.id);
        if inner.all.is_empty() {
            inner.fresh.clear();
            inner.all.shrink_to_fit();
            inner.by_addr.shrink_to_fit();
            inner.fresh.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_addr: usize) -> Limits {
        Limits {
            max,
            per_addr,
            ..Limits::default()
        }
    }

    #[test]
    fn a_flood_from_one_address_sheds_its_unused_connections_first() {
        let conns = Conns::new(limits(100, 10));
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let viewer = conns.admit(ip, t0).unwrap();
        viewer.conn.on_request();
        let mut flood = Vec::new();
        for _ in 0..50 {
            flood.push(conns.admit(ip, t0).unwrap());
        }
        assert_eq!(conns.open(), 10);
        assert!(
            conns
                .inner
                .lock()
                .unwrap()
                .all
                .contains_key(&viewer.conn.id)
        );
        assert_eq!(conns.shed_total(), 41);
        // Another address is untouched and its connections get the long deadline.
        let other = conns.admit("10.0.0.2".parse().unwrap(), t0).unwrap();
        assert_eq!(other.first_request, Limits::default().first_request);
        assert_eq!(flood.last().unwrap().first_request, Duration::from_secs(3));
        drop(flood);
        drop(other);
        assert_eq!(conns.open(), 1);
    }

    #[test]
    fn overall_bound_sheds_unused_then_longest_idle() {
        let conns = Conns::new(limits(3, 3));
        let t0 = Instant::now();
        let a = conns.admit("10.0.0.1".parse().unwrap(), t0).unwrap();
        let b = conns.admit("10.0.0.2".parse().unwrap(), t0).unwrap();
        let c = conns.admit("10.0.0.3".parse().unwrap(), t0).unwrap();
        a.conn.on_request();
        c.conn.on_request();
        let d = conns.admit("10.0.0.4".parse().unwrap(), t0).unwrap();
        let open: Vec<u64> = conns.inner.lock().unwrap().all.keys().copied().collect();
        assert!(!open.contains(&b.conn.id), "the unused one went first");
        std::thread::sleep(Duration::from_millis(5));
        c.conn.on_request();
        d.conn.on_request();
        let _e = conns.admit("10.0.0.5".parse().unwrap(), t0).unwrap();
        let open: Vec<u64> = conns.inner.lock().unwrap().all.keys().copied().collect();
        assert!(!open.contains(&a.conn.id), "then the one idle longest");
        assert!(open.contains(&c.conn.id));
    }
}
