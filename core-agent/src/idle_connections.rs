//! Connections to app processes kept open between requests, per process: HTTP/1.1
//! keep-alive to Node.js and generic apps (see [`crate::http_session`]), and session-protocol
//! connections to the Ruby and Python loaders, which serve the next request on a connection
//! whose response was delimited (see [`crate::session`]).

use crate::pool::Process;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A connection that may have been closed by the app while it sat idle.
pub trait Reusable {
    fn is_closed(&self) -> bool;
}

impl Reusable for tokio::net::UnixStream {
    /// An idle session connection has nothing to read: anything readable is the loader's
    /// end of it (EOF), or bytes that would put the next response out of step.
    fn is_closed(&self) -> bool {
        !matches!(
            self.try_read(&mut [0u8; 1]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }
}

/// Idle connections, by process id.
pub struct IdleConnections<C> {
    idle: Mutex<HashMap<u64, Vec<C>>>,
    /// Check-ins so far: every [`PRUNE_EVERY`]th one drops the closed connections of every
    /// process (those of processes that stopped would otherwise stay forever).
    checkins: AtomicUsize,
}

const PRUNE_EVERY: usize = 256;
/// Most idle connections kept per process. A process never has more idle connections than it
/// had requests at once, so this only bounds descriptors and memory. It is as large as the
/// concurrency an unlimited (Node.js) process sees under load: a smaller bound closes and
/// reopens the surplus on every request (at 256 clients, 32 here doubled Node's and the core's
/// CPU per request).
const MAX_IDLE_PER_PROCESS: usize = 256;

impl<C> Default for IdleConnections<C> {
    fn default() -> Self {
        IdleConnections {
            idle: Mutex::new(HashMap::new()),
            checkins: AtomicUsize::new(0),
        }
    }
}

impl<C: Reusable> IdleConnections<C> {
    /// The most recently used idle connection to `process` that is still open.
    pub fn take(&self, process: &Process) -> Option<C> {
        let mut idle = self.idle.lock().unwrap();
        let list = idle.get_mut(&process.id)?;
        while let Some(conn) = list.pop() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` for the next request to `process`.
    pub fn put(&self, process: &Process, conn: C) {
        let mut idle = self.idle.lock().unwrap();
        if self.checkins.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            idle.retain(|_, list| {
                list.retain(|c| !c.is_closed());
                !list.is_empty()
            });
        }
        let list = idle.entry(process.id).or_default();
        if list.len() < MAX_IDLE_PER_PROCESS {
            list.push(conn);
        }
    }

    /// Closes the idle connections to `process` (it left the pool, or its loader must be free
    /// to accept a connection of another kind).
    pub fn forget(&self, process: &Process) {
        self.idle.lock().unwrap().remove(&process.id);
    }
}
