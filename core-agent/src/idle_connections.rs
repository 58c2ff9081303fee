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
    idle: Mutex<HashMap<u64, Idle<C>>>,
    /// Check-ins so far: every [`PRUNE_EVERY`]th one drops the closed connections of every
    /// process (those of processes that stopped would otherwise stay forever).
    checkins: AtomicUsize,
}

/// One process's idle connections, the most recently used last.
struct Idle<C> {
    conns: Vec<C>,
    /// How many at the front have not been taken since the last [`IdleConnections::shrink`]:
    /// the fewest there were since then (connections are taken from the back).
    untouched: usize,
}

impl<C> Default for Idle<C> {
    fn default() -> Self {
        Idle {
            conns: Vec::new(),
            untouched: 0,
        }
    }
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
        self.take_by_id(process.id)
    }

    /// Keeps `conn` for the next request to `process`.
    pub fn put(&self, process: &Process, conn: C) {
        self.put_by_id(process.id, conn)
    }

    fn take_by_id(&self, process_id: u64) -> Option<C> {
        let mut idle = self.idle.lock().unwrap();
        let list = idle.get_mut(&process_id)?;
        while let Some(conn) = list.conns.pop() {
            list.untouched = list.untouched.min(list.conns.len());
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn put_by_id(&self, process_id: u64, conn: C) {
        let mut idle = self.idle.lock().unwrap();
        if self.checkins.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            idle.retain(|_, list| {
                list.conns.retain(|c| !c.is_closed());
                list.untouched = list.untouched.min(list.conns.len());
                !list.conns.is_empty()
            });
        }
        let list = idle.entry(process_id).or_default();
        if list.conns.len() < MAX_IDLE_PER_PROCESS {
            list.conns.push(conn);
        }
    }

    /// Closes the idle connections that no request took since the last call: after a burst,
    /// what only the burst needed (and its buffers, in the core and in the app) goes, while a
    /// steady load keeps all it uses. Called every 2 s.
    pub fn shrink(&self) {
        self.idle.lock().unwrap().retain(|_, list| {
            list.conns.drain(..list.untouched);
            list.untouched = list.conns.len();
            !list.conns.is_empty()
        });
    }

    /// Closes the idle connections to `process` (it left the pool, or its loader must be free
    /// to accept a connection of another kind).
    pub fn forget(&self, process: &Process) {
        self.idle.lock().unwrap().remove(&process.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// A connection that records being closed (dropped).
    struct Conn(u32, Arc<AtomicBool>);
    impl Reusable for Conn {
        fn is_closed(&self) -> bool {
            false
        }
    }
    impl Drop for Conn {
        fn drop(&mut self) {
            self.1.store(true, Ordering::Relaxed);
        }
    }

    #[test]
    fn shrinking_closes_what_no_request_took_since_the_last_shrink() {
        let idle = IdleConnections::default();
        let closed: Vec<_> = (0..4).map(|_| Arc::new(AtomicBool::new(false))).collect();
        // A burst of four requests to process 1 left four connections.
        for (n, c) in closed.iter().enumerate() {
            idle.put_by_id(1, Conn(n as u32, c.clone()));
        }
        idle.shrink();
        assert!(
            !closed.iter().any(|c| c.load(Ordering::Relaxed)),
            "all were just used"
        );
        // Then two requests at a time: they take the two most recent connections.
        for _ in 0..3 {
            let a = idle.take_by_id(1).unwrap();
            let b = idle.take_by_id(1).unwrap();
            assert_eq!((a.0, b.0), (3, 2));
            idle.put_by_id(1, b);
            idle.put_by_id(1, a);
        }
        idle.shrink();
        let state: Vec<bool> = closed.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(
            state,
            [true, true, false, false],
            "the two the load no longer needed"
        );
        // With no request at all, the rest goes at the next shrink.
        idle.shrink();
        assert!(closed.iter().all(|c| c.load(Ordering::Relaxed)));
        assert!(idle.take_by_id(1).is_none());
    }
}
