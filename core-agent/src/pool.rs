//! The pool: `Pool` → `Group` (one app) → `Process` (one OS process) → sessions.
//!
//! All decisions are made under one lock (`Inner`), by small synchronous functions; what they
//! decide to do outside the lock (start a spawn, stop a process) is collected in [`Actions`]
//! and carried out after the lock is released.
//!
//! Routing: a request goes to the process with the fewest sessions among those with spare
//! concurrency (what its loader advertised, or `force_max_concurrent_requests_per_process`;
//! 0 = unlimited); among equally busy ones, to the one least recently used (ties
//! on that: the oldest process), so that traffic spreads over all processes instead of piling
//! on the first one. A request that finds no free process waits in its group's queue
//! (first come, first served), bounded by `max_request_queue_size`. When no spawn is coming for
//! it, a waiting request without a body may instead go ahead to a busy process whose loader
//! takes one (its `prefetch`: the Rack and WSGI loaders with one thread) and whose requests are
//! quick: it then starts there as soon as the one before ends (see
//! [`Group::grant_prefetches`]). With sticky sessions, a request carrying a live process's
//! sticky id goes to that process, waiting while it is busy (and letting later requests by); an
//! unknown id is ignored.
//!
//! Scaling: a group spawns (one spawn at a time) when requests wait (that is, a request found
//! all its processes busy), within `max_pool_size` (all apps) and the per-app cap (the lower
//! non-zero of the app's `max_instances` and the global `max_instances_per_app`); below
//! `min_instances` it spawns up to that many at once. When the pool is full and a group with
//! waiting requests needs a process, the longest-idle process of another group is stopped.
//!
//! Failures: a process that exits is removed at once (its requests in flight fail with 502 in
//! the session); a failed spawn is answered to the waiting requests when the group has no
//! process to serve them, and repeated failures back off (0, 1, 2, 4 … 60 s between tries;
//! requests arriving during a back-off get the last error at once).
//!
//! Recycling, idling and restarts: a process that served `max_requests` (or, as the request
//! server finds after a request, exceeds `memory_limit`) is drained (it finishes what it has,
//! then stops) and replaced on demand; idle processes beyond
//! `min_instances` stop after `pool_idle_time`; a restart (restart.txt's mtime changed, or
//! always_restart.txt exists) is rolling: one new process is spawned, and once it is ready one
//! old process is drained, until no old process is left. With `rolling_restarts` off, every old
//! process drains at once, and new ones spawn (and requests wait for them) once all are gone.

use crate::app_options::AppOptions;
use passenger_protocol::loader::SocketProtocol;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};
use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest pause between two spawn attempts of a failing app.
pub const MAX_SPAWN_BACKOFF: Duration = Duration::from_secs(60);
/// A request goes ahead to a busy process only if the request that process is serving began
/// less than this long ago, and the one it served before took less than this. Sent ahead, a
/// request waits for the one before it, which may turn out slow while another process frees
/// up; the time saved (a wake-up of the app, some 10 us) matters only for requests much
/// shorter than this, and an app whose requests take longer gains nothing from it.
const PREFETCH_BEHIND_AT_MOST: Duration = Duration::from_millis(2);
/// How often idle processes are looked for.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Why an app process could not be started.
#[derive(Debug, Clone, Default, Error, PartialEq, Eq)]
#[error("{summary}")]
pub struct SpawnError {
    /// One sentence: what failed.
    pub summary: String,
    /// The loader's output (stdout and stderr), possibly empty.
    pub output: String,
    /// The command line that was run (empty when none was).
    pub command: String,
    /// The environment the process was given.
    pub environment: Vec<(String, String)>,
    /// Who it ran as.
    pub user: String,
}

/// Where an app process takes connections: the unix socket its loader reported, or (a
/// generic app) the localhost TCP port it was started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppAddress {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for AppAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            AppAddress::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// What a spawner hands the pool: a running, ready app process.
pub struct SpawnedProcess {
    pub pid: u32,
    pub address: AppAddress,
    pub protocol: SocketProtocol,
    /// Concurrent sessions the process takes; 0 means unlimited.
    pub concurrency: u32,
    /// Sessions it takes beyond `concurrency`, each waiting in the process for a free thread
    /// (see [`passenger_protocol::loader::SocketInfo::prefetch`]).
    pub prefetch: u32,
    /// The password the process expects in every session header.
    pub password: String,
    /// Sending on (or dropping) this asks the process to stop gracefully.
    pub stop: oneshot::Sender<()>,
    /// Completes when the process has exited (and been reaped).
    pub exited: oneshot::Receiver<()>,
}

/// Starts app processes. Behind a trait so the pool can be tested without real processes.
pub trait Spawner: Send + Sync + 'static {
    /// Starts a process of the app; `generation` is the group's restart generation (a new one
    /// means the app's code changed).
    fn spawn(
        &self,
        options: &AppOptions,
        generation: u64,
    ) -> impl Future<Output = Result<SpawnedProcess, SpawnError>> + Send;
}

/// One app process (the parts that never change; its counters live in the pool's state).
pub struct Process {
    /// Unique within the pool (pids can be reused).
    pub id: u64,
    pub pid: u32,
    pub group: String,
    pub address: AppAddress,
    pub protocol: SocketProtocol,
    pub password: String,
    pub concurrency: u32,
    /// Sessions it takes beyond `concurrency` (see [`SpawnedProcess::prefetch`]); 0 unless
    /// its connections are kept and its concurrency is its own (not forced).
    pub prefetch: u32,
    /// Session connections to it may be kept for its next request: its loader serves each
    /// connection on one of its threads until the connection closes (a one-thread loader with
    /// a prefetch: that many more, in turn), so the core must never hold more connections than
    /// that, which holds when the pool sends it no more concurrent requests than it advertised
    /// (plus its prefetch).
    pub keep_alive: bool,
    /// The group's restart generation the process was spawned for.
    pub generation: u64,
    /// Its sticky session id (`passenger_sticky_sessions`): random, unique within its group.
    pub sticky_id: u32,
    pub spawned_at: SystemTime,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    /// Turns true when the pool shuts the process down (it drains, or stops).
    retired: watch::Sender<bool>,
}

impl Process {
    /// The pool shuts the process down: it takes no new requests.
    fn retire(&self) {
        self.retired.send_replace(true);
    }

    /// Turns true once the pool shuts the process down (for
    /// `passenger_abort_websockets_on_process_shutdown`).
    pub fn retirement(&self) -> watch::Receiver<bool> {
        self.retired.subscribe()
    }

    /// Asks the process to stop gracefully (its loader sees EOF on stdin; the spawner's
    /// supervision follows with SIGTERM, then SIGKILL).
    pub fn stop(&self) {
        self.retire();
        if let Some(tx) = self.stop.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

/// A session on a process; dropping it frees the slot (and may hand it to a waiting request).
pub struct Checkout {
    pub process: Arc<Process>,
    /// The request was sent ahead to a busy process (its prefetch): it waits there for a
    /// thread, and goes elsewhere if the process closes its connection unanswered.
    pub prefetched: bool,
    release: Arc<dyn Release>,
}

impl Drop for Checkout {
    fn drop(&mut self) {
        self.release.release(&self.process);
    }
}

trait Release: Send + Sync {
    fn release(&self, process: &Process);
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CheckoutError {
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the app's request queue is full ({size} requests wait)")]
    QueueFull { size: u32, status: u16 },
    #[error("the request waited longer than {0} s in the app's queue")]
    QueueTimeout(u64),
}

impl CheckoutError {
    /// The HTTP status a request that failed this way gets.
    pub fn status(&self) -> u16 {
        match self {
            CheckoutError::Spawn(_) => 500,
            CheckoutError::ShuttingDown => 503,
            CheckoutError::QueueFull { status, .. } => *status,
            CheckoutError::QueueTimeout(_) => 504,
        }
    }
}

/// A process for a waiting request, and whether it went there ahead (see [`Checkout`]).
type Grant = Result<(Arc<Process>, bool), CheckoutError>;

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Grant>,
    /// The sticky session id the request asks for: it waits for that process while it lives.
    sticky: Option<u32>,
    /// The request may be sent ahead to a busy process (see [`Group::grant_prefetches`]).
    prefetchable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    /// Takes new requests.
    Active,
    /// Takes no new requests; stops once the ones it has are done.
    Draining,
}

struct ProcEntry {
    process: Arc<Process>,
    sessions: u32,
    processed: u64,
    last_used: Instant,
    /// When the request it is serving now began (for a process with one thread: when it last
    /// went from idle to busy, or finished a request with another one waiting).
    busy_since: Instant,
    /// How long the request it served last took (from `busy_since` to its release).
    last_request: Duration,
    state: ProcessState,
    /// Requests after which this process is recycled (0 = never): `max_requests` plus its own
    /// share of `max_requests_jitter`, so processes started together don't recycle together.
    recycle_after: u64,
    oob_work: OobWork,
}

/// Out-of-band work: an app asked (with a response header) to be left alone for a moment,
/// e.g. to collect garbage; it gets no requests until that is done.
enum OobWork {
    None,
    /// Asked for; starts (the sender fires) once the process's requests are done.
    Pending(Option<oneshot::Sender<()>>),
    Running,
}

impl ProcEntry {
    /// It takes no new requests, and stops once the ones it has are done.
    fn drain(&mut self) {
        self.state = ProcessState::Draining;
        self.process.retire();
    }

    fn has_room(&self) -> bool {
        self.state == ProcessState::Active
            && matches!(self.oob_work, OobWork::None)
            && (self.process.concurrency == 0 || self.sessions < self.process.concurrency)
    }

    /// Whether a request can be sent ahead to it: it is busy, has prefetch room, its current
    /// request began less than [`PREFETCH_BEHIND_AT_MOST`] ago and its last one took less.
    fn can_prefetch(&self, now: Instant) -> bool {
        let c = self.process.concurrency;
        self.state == ProcessState::Active
            && matches!(self.oob_work, OobWork::None)
            && c > 0
            && self.sessions >= c
            && self.sessions < c + self.process.prefetch
            && now.saturating_duration_since(self.busy_since) < PREFETCH_BEHIND_AT_MOST
            && self.last_request < PREFETCH_BEHIND_AT_MOST
    }

    /// Starts pending out-of-band work if the process has no requests left.
    fn start_oob_work_if_idle(&mut self) {
        if self.sessions == 0
            && let OobWork::Pending(tx) = &mut self.oob_work
        {
            if let Some(tx) = tx.take() {
                let _ = tx.send(());
            }
            self.oob_work = OobWork::Running;
        }
    }
}

struct Group {
    name: String,
    /// The app options the group's processes are spawned with (taken at creation and at each
    /// restart).
    options: AppOptions,
    procs: Vec<ProcEntry>,
    spawning: u32,
    waiters: VecDeque<Waiter>,
    generation: u64,
    /// A request has come: min_instances applies.
    demanded: bool,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<SpawnError>,
    restart_mtime: Option<SystemTime>,
    next_stat: Instant,
    restarts: u64,
    last_restart: Option<SystemTime>,
    created_at: SystemTime,
}

impl Group {
    /// Least busy process with room; ties: least recently used, then oldest.
    fn pick(&self) -> Option<usize> {
        self.procs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.has_room())
            .min_by_key(|(_, p)| (p.sessions, p.last_used, p.process.id))
            .map(|(i, _)| i)
    }

    /// The process for a request: the live process with its sticky session id (`None`
    /// while that one is busy), else as [`Group::pick`].
    fn pick_for(&self, sticky: Option<u32>) -> Option<usize> {
        match sticky.and_then(|id| self.sticky_target(id)) {
            Some(i) if self.procs[i].has_room() => Some(i),
            Some(_) => None,
            None => self.pick(),
        }
    }

    /// The active process with sticky session id `id`.
    fn sticky_target(&self, id: u32) -> Option<usize> {
        self.procs
            .iter()
            .position(|p| p.process.sticky_id == id && p.state == ProcessState::Active)
    }

    /// Requests wait that any process could serve (not only a busy sticky one): a reason to
    /// spawn.
    fn has_demand(&self) -> bool {
        self.waiters
            .iter()
            .any(|w| w.sticky.and_then(|id| self.sticky_target(id)).is_none())
    }

    /// A random sticky session id no process of the group has.
    fn new_sticky_id(&self) -> u32 {
        loop {
            let mut bytes = [0u8; 4];
            let id = match getrandom::getrandom(&mut bytes) {
                Ok(()) => u32::from_le_bytes(bytes) & 0x7fff_ffff,
                Err(_) => self.procs.len() as u32 + 1,
            };
            if id != 0 && self.procs.iter().all(|p| p.process.sticky_id != id) {
                return id;
            }
        }
    }

    fn find(&self, id: u64) -> Option<usize> {
        self.procs.iter().position(|p| p.process.id == id)
    }

    fn active(&self) -> usize {
        self.procs
            .iter()
            .filter(|p| p.state == ProcessState::Active)
            .count()
    }

    fn old_active(&self) -> usize {
        self.procs
            .iter()
            .filter(|p| p.state == ProcessState::Active && p.process.generation < self.generation)
            .count()
    }

    /// Processes that count toward capacity: all of them, and the spawns under way.
    fn size(&self) -> usize {
        self.procs.len() + self.spawning as usize
    }

    /// The busy process to send a request ahead to (see [`ProcEntry::can_prefetch`]): the
    /// one whose current request began first, which as a rule ends first.
    fn pick_prefetch(&self, now: Instant) -> Option<usize> {
        self.procs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.can_prefetch(now))
            .min_by_key(|(_, p)| (p.busy_since, p.process.id))
            .map(|(i, _)| i)
    }

    /// Requests that still wait when no spawn is coming take the prefetch room of busy
    /// processes, first come first served: each then starts when its process finishes the
    /// request before it, without waiting for the core to hear of that. Only requests the core
    /// can send again elsewhere (no body) go ahead, and the queue stops at the first one that
    /// cannot, so that none overtakes it.
    fn grant_prefetches(&mut self, now: Instant) {
        if self.spawning > 0 {
            return;
        }
        while let Some(waiter) = self.waiters.front() {
            if waiter.tx.is_closed() {
                self.waiters.pop_front();
                continue;
            }
            if !waiter.prefetchable || waiter.sticky.is_some() {
                return;
            }
            let Some(i) = self.pick_prefetch(now) else {
                return;
            };
            let waiter = self.waiters.pop_front().expect("seen above");
            let process = self.grant(i, now);
            if waiter.tx.send(Ok((process, true))).is_err() {
                self.ungrant(i);
            }
        }
    }

    /// Hands a session on process `i` out.
    fn grant(&mut self, i: usize, now: Instant) -> Arc<Process> {
        let p = &mut self.procs[i];
        if p.sessions == 0 {
            p.busy_since = now;
        }
        p.sessions += 1;
        p.processed += 1;
        p.last_used = now;
        if p.recycle_after > 0 && p.processed >= p.recycle_after {
            p.drain();
        }
        p.process.clone()
    }

    /// Takes back a grant that could not be delivered.
    fn ungrant(&mut self, i: usize) {
        let p = &mut self.procs[i];
        p.sessions -= 1;
        p.processed -= 1;
        if p.recycle_after == 0 || p.processed < p.recycle_after {
            p.state = ProcessState::Active;
        }
    }

    /// Stat()s restart.txt and always_restart.txt if due; true when the group must restart:
    /// restart.txt's mtime changed, or always_restart.txt exists and no restart is under way
    /// (so that a stream of requests does not restart the restart over and over).
    fn restart_due(&mut self, now: Instant) -> bool {
        if now < self.next_stat {
            return false;
        }
        self.next_stat = now + Duration::from_secs(self.options.pool.stat_throttle_rate);
        let dir = Path::new(&self.options.pool.restart_dir);
        let mtime = std::fs::metadata(dir.join("restart.txt"))
            .and_then(|m| m.modified())
            .ok();
        let changed = mtime.is_some() && mtime != self.restart_mtime;
        self.restart_mtime = mtime;
        changed || (self.old_active() == 0 && dir.join("always_restart.txt").exists())
    }
}

/// What to do once the lock is released.
#[derive(Default)]
struct Actions {
    spawns: Vec<(String, AppOptions, u64)>,
    stops: Vec<Arc<Process>>,
}

struct Inner {
    groups: HashMap<String, Group>,
    max_pool_size: usize,
    max_instances_per_app: usize,
    pool_idle_time: u64,
    shutting_down: bool,
    housekeeper: bool,
}

impl Inner {
    fn total(&self) -> usize {
        self.groups.values().map(Group::size).sum()
    }
}

pub struct Pool<S: Spawner> {
    spawner: Arc<S>,
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    shutdown_tx: watch::Sender<bool>,
    /// Spawn tasks, exit watchers and the housekeeper; shutdown waits for all of them.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    me: Weak<Pool<S>>,
}

impl<S: Spawner> Release for Pool<S> {
    fn release(&self, process: &Process) {
        let mut actions = Actions::default();
        {
            let mut inner = self.lock();
            release_locked(&mut inner, process, &mut actions);
            self.reconcile(&mut inner, &mut actions);
        }
        self.run(actions);
    }
}

fn release_locked(inner: &mut Inner, process: &Process, actions: &mut Actions) {
    let Some(group) = inner.groups.get_mut(&process.group) else {
        return;
    };
    let Some(i) = group.find(process.id) else {
        return; // removed already (it exited, or was detached)
    };
    let p = &mut group.procs[i];
    p.sessions = p.sessions.saturating_sub(1);
    p.last_used = Instant::now();
    p.last_request = p.last_used.saturating_duration_since(p.busy_since);
    // A request sent ahead (or another thread's) is what it serves from now on.
    p.busy_since = p.last_used;
    p.start_oob_work_if_idle();
    if p.state == ProcessState::Draining && p.sessions == 0 {
        let p = group.procs.remove(i);
        tracing::info!(
            "App {} of group {:?} drained after {} requests; stopping it",
            p.process.pid,
            group.name,
            p.processed
        );
        actions.stops.push(p.process);
    }
}

/// Removes a waiting request whose client gave up (or whose wait timed out); a grant it may
/// have received meanwhile is given back.
struct WaitGuard<'a, S: Spawner> {
    pool: &'a Pool<S>,
    group: &'a str,
    id: u64,
    rx: Option<oneshot::Receiver<Grant>>,
}

impl<S: Spawner> Drop for WaitGuard<'_, S> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let mut actions = Actions::default();
        {
            let mut inner = self.pool.lock();
            if let Some(g) = inner.groups.get_mut(self.group) {
                g.waiters.retain(|w| w.id != self.id);
            }
            // Grants are sent under the lock: either it is in the channel now or never comes.
            if let Ok(Ok((process, _))) = rx.try_recv() {
                release_locked(&mut inner, &process, &mut actions);
            }
            self.pool.reconcile(&mut inner, &mut actions);
        }
        self.pool.run(actions);
    }
}

impl<S: Spawner> Pool<S> {
    pub fn new(spawner: S) -> Arc<Self> {
        Arc::new_cyclic(|me| Pool {
            spawner: Arc::new(spawner),
            inner: Mutex::new(Inner {
                groups: HashMap::new(),
                max_pool_size: passenger_protocol::options::DEFAULT_MAX_POOL_SIZE as usize,
                max_instances_per_app: 0,
                pool_idle_time: passenger_protocol::options::DEFAULT_POOL_IDLE_TIME,
                shutting_down: false,
                housekeeper: false,
            }),
            next_id: AtomicU64::new(1),
            shutdown_tx: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
            me: me.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn track(&self, handle: JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap();
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// Hands out a session on one of the app's processes: at once when one has room, else
    /// after waiting in the app's queue (for a session to end or a spawn to finish).
    #[cfg_attr(not(test), allow(dead_code))]
    pub async fn checkout(
        self: &Arc<Self>,
        options: &AppOptions,
    ) -> Result<Checkout, CheckoutError> {
        self.checkout_for(options, None, false).await
    }

    /// As [`Pool::checkout`], for a request carrying sticky session id `sticky`: it goes to the
    /// process with that id (waiting for it while it is busy) as long as that one lives and
    /// takes requests; an unknown id is ignored.
    #[cfg_attr(not(test), allow(dead_code))]
    pub async fn checkout_sticky(
        self: &Arc<Self>,
        options: &AppOptions,
        sticky: Option<u32>,
    ) -> Result<Checkout, CheckoutError> {
        self.checkout_for(options, sticky, false).await
    }

    /// As [`Pool::checkout_sticky`]; `prefetchable`: the request can be sent again to another
    /// process if the one it went to closes its connection unanswered (it has no body), so it
    /// may be sent ahead to a busy process rather than wait in the queue (see
    /// [`Group::grant_prefetches`]).
    pub async fn checkout_for(
        self: &Arc<Self>,
        options: &AppOptions,
        sticky: Option<u32>,
        prefetchable: bool,
    ) -> Result<Checkout, CheckoutError> {
        let mut actions = Actions::default();
        let (id, rx) = {
            let mut inner = self.lock();
            if inner.shutting_down {
                return Err(CheckoutError::ShuttingDown);
            }
            inner.max_pool_size = options.pool.max_pool_size.max(1) as usize;
            inner.max_instances_per_app = options.pool.max_instances_per_app as usize;
            inner.pool_idle_time = options.pool.pool_idle_time;
            if !inner.housekeeper {
                inner.housekeeper = true;
                self.track(tokio::spawn(housekeeper(self.me.clone())));
            }
            let now = Instant::now();
            // (Looked up before inserting: `entry` would copy the name on every checkout.)
            let name = options.group_name.as_str();
            if !inner.groups.contains_key(name) {
                inner
                    .groups
                    .insert(name.to_string(), new_group(options, now));
            }
            let group = inner.groups.get_mut(name).expect("inserted above");
            group.demanded = true;
            if group.restart_due(now) {
                restart_group(group, options);
                if !group.options.pool.rolling_restarts {
                    drain_all_old(group, &mut actions);
                }
            }
            if group.procs.is_empty()
                && group.spawning == 0
                && group.failures > 0
                && group.retry_at.is_some_and(|t| now < t)
                && let Some(e) = &group.last_error
            {
                return Err(CheckoutError::Spawn(e.clone()));
            }
            if group.waiters.is_empty()
                && let Some(i) = group.pick_for(sticky)
            {
                let process = group.grant(i, now);
                self.reconcile(&mut inner, &mut actions);
                drop(inner);
                self.run(actions);
                return Ok(self.checkout_of(process, false));
            }
            let limit = group.options.pool.max_request_queue_size;
            if limit > 0 && group.waiters.len() >= limit as usize {
                let full = CheckoutError::QueueFull {
                    size: limit,
                    status: group.options.pool.queue_overflow_status,
                };
                drop(inner);
                self.run(actions); // what a restart just decided
                return Err(full);
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            group.waiters.push_back(Waiter {
                id,
                tx,
                sticky,
                prefetchable,
            });
            self.reconcile(&mut inner, &mut actions);
            (id, rx)
        };
        self.run(actions);

        let mut guard = WaitGuard {
            pool: self,
            group: &options.group_name,
            id,
            rx: Some(rx),
        };
        let rx = guard.rx.as_mut().expect("set above");
        let queue_time = options.pool.max_request_queue_time;
        let outcome = if queue_time > 0 {
            match tokio::time::timeout(Duration::from_secs(queue_time), rx).await {
                Ok(r) => r,
                // The guard takes the request out of the queue.
                Err(_) => return Err(CheckoutError::QueueTimeout(queue_time)),
            }
        } else {
            rx.await
        };
        guard.rx = None;
        match outcome {
            Ok(Ok((process, prefetched))) => Ok(self.checkout_of(process, prefetched)),
            Ok(Err(e)) => Err(e),
            // The pool dropped the waiter without an answer: only at shutdown.
            Err(_) => Err(CheckoutError::ShuttingDown),
        }
    }

    fn checkout_of(self: &Arc<Self>, process: Arc<Process>, prefetched: bool) -> Checkout {
        Checkout {
            process,
            prefetched,
            release: self.clone(),
        }
    }

    /// Brings every group in line with the rules: hands free slots to waiting requests,
    /// starts the spawns that are needed, evicts for them when the pool is full.
    fn reconcile(&self, inner: &mut Inner, actions: &mut Actions) {
        if inner.shutting_down {
            return;
        }
        let now = Instant::now();
        for group in inner.groups.values_mut() {
            // A non-rolling restart: every old process drains at once (an old spawn that
            // finished late too).
            if !group.options.pool.rolling_restarts {
                drain_all_old(group, actions);
            }
            // Waiting requests take free slots, first come first served.
            // (A request waiting for its busy sticky process lets later ones by.)
            let mut passed_over = Vec::new();
            while let Some(waiter) = group.waiters.pop_front() {
                if waiter.tx.is_closed() {
                    continue;
                }
                let Some(i) = group.pick_for(waiter.sticky) else {
                    // (A sticky id whose process is gone was served like any other.)
                    let no_room_at_all = waiter
                        .sticky
                        .and_then(|id| group.sticky_target(id))
                        .is_none();
                    if no_room_at_all && passed_over.is_empty() {
                        // The common case under load: the queue stays as it is, and nothing
                        // is allocated for it on every checkout and release.
                        group.waiters.push_front(waiter);
                        break;
                    }
                    passed_over.push(waiter);
                    if no_room_at_all {
                        // Nobody behind can be served either: the rest of the queue stays as
                        // it is (walking it on every release made a long queue quadratic).
                        break;
                    }
                    continue;
                };
                let process = group.grant(i, now);
                if waiter.tx.send(Ok((process, false))).is_err() {
                    group.ungrant(i);
                }
            }
            for waiter in passed_over.into_iter().rev() {
                group.waiters.push_front(waiter);
            }
            // Drained processes with nothing left to do stop.
            let mut i = 0;
            while i < group.procs.len() {
                let p = &group.procs[i];
                if p.state == ProcessState::Draining && p.sessions == 0 {
                    actions.stops.push(group.procs.remove(i).process);
                } else {
                    i += 1;
                }
            }
        }
        self.start_spawns(inner, actions, now);
        // What still waits with no spawn coming may go ahead to a busy process.
        for group in inner.groups.values_mut() {
            group.grant_prefetches(now);
        }
    }

    /// The spawns the groups want, as far as the pool's limits allow (evicting other apps'
    /// idle processes for requests that wait).
    fn start_spawns(&self, inner: &mut Inner, actions: &mut Actions, now: Instant) {
        // As a rule no group wants a spawn: then there is nothing to do (and the
        // group names are not copied, on every checkout and release).
        if inner
            .groups
            .values()
            .all(|group| spawn_wanted(group, now) == Want::No)
        {
            return;
        }
        // Nor can any start in a full pool with no idle process to evict and no restart to
        // make room: the state of a pool under more load than it has processes for, on every
        // checkout and release.
        if inner.total() >= inner.max_pool_size
            && inner
                .groups
                .values()
                .all(|group| group.old_active() == 0 && group.procs.iter().all(|p| p.sessions > 0))
        {
            return;
        }
        let names: Vec<String> = inner.groups.keys().cloned().collect();
        for name in &names {
            loop {
                let max_pool = inner.max_pool_size;
                let global_per_app = inner.max_instances_per_app as u32;
                let total = inner.total();
                let group = inner.groups.get_mut(name).expect("listed");
                let per_app = group.options.pool.instance_cap(global_per_app) as usize;
                let want = spawn_wanted(group, now);
                if want == Want::No {
                    break;
                }
                // A restart that finds no room replaces in place: an old process drains (one
                // at a time), and the new one spawns in the slot it frees.
                let restarting = group.old_active() > 0;
                if per_app > 0 && group.size() >= per_app {
                    if restarting && !draining_old(group) {
                        drain_oldest_old(group, actions);
                    }
                    break;
                }
                if total >= max_pool {
                    if restarting && group.old_active() > 1 {
                        if !draining_old(group) {
                            drain_oldest_old(group, actions);
                        }
                        break;
                    }
                    // Only requests that wait (or a restart) take another app's process.
                    if !group.has_demand() && !restarting {
                        break;
                    }
                    if !evict_for(inner, name, actions) {
                        let group = inner.groups.get_mut(name).expect("listed");
                        if restarting && !draining_old(group) {
                            drain_oldest_old(group, actions);
                        }
                        break;
                    }
                    continue;
                }
                let group = inner.groups.get_mut(name).expect("listed");
                group.spawning += 1;
                actions
                    .spawns
                    .push((name.clone(), group.options.clone(), group.generation));
                if want != Want::MinInstances {
                    break;
                }
            }
        }
    }

    /// Carries out what `reconcile` decided (outside the lock).
    fn run(&self, actions: Actions) {
        for p in actions.stops {
            p.stop();
        }
        for (group, options, generation) in actions.spawns {
            let Some(me) = self.me.upgrade() else { return };
            self.track(tokio::spawn(me.spawn_into(group, options, generation)));
        }
    }

    /// Runs one spawn for `group` and adds the process to the pool.
    async fn spawn_into(self: Arc<Self>, name: String, options: AppOptions, generation: u64) {
        let mut shutdown = self.shutdown_tx.subscribe();
        let result = tokio::select! {
            r = self.spawner.spawn(&options, generation) => Some(r),
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => None,
        };
        let mut actions = Actions::default();
        {
            let mut inner = self.lock();
            let shutting_down = inner.shutting_down;
            let Some(group) = inner.groups.get_mut(&name) else {
                return;
            };
            group.spawning = group.spawning.saturating_sub(1);
            match result {
                None => {}
                Some(Ok(spawned)) => {
                    let concurrency = options
                        .pool
                        .force_max_concurrent_requests_per_process
                        .unwrap_or(spawned.concurrency);
                    let keep_alive = spawned.protocol == SocketProtocol::Session
                        && concurrency > 0
                        && concurrency <= spawned.concurrency;
                    // A forced concurrency is the site's word on how many requests a process
                    // may hold.
                    let prefetch = if keep_alive
                        && options
                            .pool
                            .force_max_concurrent_requests_per_process
                            .is_none()
                    {
                        spawned.prefetch
                    } else {
                        0
                    };
                    let process = Arc::new(Process {
                        id: self.next_id.fetch_add(1, Ordering::Relaxed),
                        pid: spawned.pid,
                        group: name.clone(),
                        address: spawned.address,
                        protocol: spawned.protocol,
                        password: spawned.password,
                        concurrency,
                        prefetch,
                        keep_alive,
                        generation,
                        sticky_id: group.new_sticky_id(),
                        spawned_at: SystemTime::now(),
                        stop: Mutex::new(Some(spawned.stop)),
                        retired: watch::channel(false).0,
                    });
                    let exited = spawned.exited;
                    let weak = self.me.clone();
                    let watched = process.clone();
                    self.track(tokio::spawn(async move {
                        let _ = exited.await;
                        if let Some(pool) = weak.upgrade() {
                            pool.exited(&watched);
                        }
                    }));
                    if shutting_down {
                        actions.stops.push(process);
                    } else {
                        group.failures = 0;
                        group.retry_at = None;
                        group.last_error = None;
                        // Rolling restart: a new process is serving, so one old one goes.
                        if generation == group.generation {
                            drain_oldest_old(group, &mut actions);
                        }
                        let now = Instant::now();
                        group.procs.push(ProcEntry {
                            process,
                            sessions: 0,
                            processed: 0,
                            last_used: now,
                            busy_since: now,
                            last_request: Duration::ZERO,
                            state: ProcessState::Active,
                            recycle_after: recycle_point(&group.options.pool),
                            oob_work: OobWork::None,
                        });
                    }
                }
                Some(Err(e)) => {
                    group.failures += 1;
                    let delay = if group.failures <= 1 {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(1u64 << (group.failures - 2).min(6))
                            .min(MAX_SPAWN_BACKOFF)
                    };
                    group.retry_at = Some(Instant::now() + delay);
                    group.last_error = Some(e.clone());
                    let new_version_failed =
                        generation == group.generation && group.old_active() > 0;
                    if new_version_failed && !group.options.pool.resist_deployment_errors {
                        // As Phusion Passenger does by default: the deploy is broken, so the
                        // old version stops and requests see the error, rather than old code
                        // serving on unnoticed.
                        tracing::error!(
                            "The new version of group {:?} failed to start: {}; stopping the old \
                             processes (set passenger_resist_deployment_errors on to keep them \
                             serving instead)",
                            group.name,
                            e.summary
                        );
                        drain_all_old(group, &mut actions);
                    }
                    if group.active() == 0 {
                        // Nobody could serve them: they get the error instead of waiting.
                        for w in group.waiters.drain(..) {
                            let _ = w.tx.send(Err(CheckoutError::Spawn(e.clone())));
                        }
                    }
                }
            }
            self.reconcile(&mut inner, &mut actions);
        }
        self.run(actions);
    }

    /// A process exited (crashed, or stopped): it leaves the pool at once.
    fn exited(&self, process: &Process) {
        let mut actions = Actions::default();
        {
            let mut inner = self.lock();
            if let Some(g) = inner.groups.get_mut(&process.group)
                && let Some(i) = g.find(process.id)
            {
                g.procs.remove(i);
                tracing::info!(
                    "App {} of group {:?} exited; removed it from the pool",
                    process.pid,
                    process.group
                );
            }
            self.reconcile(&mut inner, &mut actions);
        }
        self.run(actions);
    }

    /// Removes a process that turned out unusable (e.g. its socket refuses connections) and
    /// asks it to stop; waiting requests go elsewhere or to a new process.
    /// Takes `process` out of routing for out-of-band work, which it asked for. The returned
    /// receiver fires once its requests are done (call this before releasing the session of the
    /// request that asked); then do the work and call [`Pool::finish_oob_work`]. `None`: the
    /// process is gone, draining, or already has work pending.
    pub fn request_oob_work(&self, process: &Process) -> Option<oneshot::Receiver<()>> {
        let mut inner = self.lock();
        let group = inner.groups.get_mut(&process.group)?;
        let i = group.find(process.id)?;
        let p = &mut group.procs[i];
        if p.state != ProcessState::Active || !matches!(p.oob_work, OobWork::None) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        p.oob_work = OobWork::Pending(Some(tx));
        p.start_oob_work_if_idle();
        Some(rx)
    }

    /// The process is done with its out-of-band work: it takes requests again.
    pub fn finish_oob_work(&self, process: &Process) {
        let mut actions = Actions::default();
        {
            let mut inner = self.lock();
            if let Some(group) = inner.groups.get_mut(&process.group)
                && let Some(i) = group.find(process.id)
            {
                group.procs[i].oob_work = OobWork::None;
            }
            self.reconcile(&mut inner, &mut actions);
        }
        self.run(actions);
    }

    /// Recycles `process` as `max_requests` would: it takes no new requests, finishes the ones
    /// it has, then stops; a new process replaces it on demand. False when it is gone or
    /// draining already.
    pub fn recycle(&self, process: &Process) -> bool {
        let mut actions = Actions::default();
        let recycled = {
            let mut inner = self.lock();
            let recycled = match inner.groups.get_mut(&process.group) {
                Some(group) => match group.find(process.id) {
                    Some(i) if group.procs[i].state == ProcessState::Active => {
                        group.procs[i].drain();
                        true
                    }
                    _ => false,
                },
                None => false,
            };
            // An idle one stops now; waiting requests may need a new one.
            self.reconcile(&mut inner, &mut actions);
            recycled
        };
        self.run(actions);
        recycled
    }

    pub fn detach(&self, process: &Process) {
        self.exited(process);
        process.stop();
    }

    /// Stops idle processes beyond min_instances that have been idle for pool_idle_time.
    fn housekeep(&self) {
        let mut actions = Actions::default();
        {
            let mut inner = self.lock();
            let idle_time = inner.pool_idle_time;
            if idle_time > 0 {
                let now = Instant::now();
                let limit = Duration::from_secs(idle_time);
                for group in inner.groups.values_mut() {
                    let min = group.options.pool.min_instances as usize;
                    loop {
                        if group.active() <= min {
                            break;
                        }
                        let victim = group
                            .procs
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| {
                                p.state == ProcessState::Active
                                    && p.sessions == 0
                                    && now.duration_since(p.last_used) >= limit
                            })
                            .min_by_key(|(_, p)| p.last_used)
                            .map(|(i, _)| i);
                        let Some(i) = victim else { break };
                        let p = group.procs.remove(i);
                        tracing::info!(
                            "App {} of group {:?} was idle for {idle_time} s; stopping it",
                            p.process.pid,
                            group.name
                        );
                        actions.stops.push(p.process);
                    }
                }
            }
            self.reconcile(&mut inner, &mut actions);
        }
        self.run(actions);
    }

    /// Stops every process and waits until all have exited (each gets its graceful stop:
    /// stdin closed, then SIGTERM, then SIGKILL, done by the spawner's supervision).
    pub async fn shutdown(&self) {
        self.shutdown_tx.send_replace(true);
        {
            let mut inner = self.lock();
            inner.shutting_down = true;
            for group in inner.groups.values_mut() {
                for w in group.waiters.drain(..) {
                    let _ = w.tx.send(Err(CheckoutError::ShuttingDown));
                }
                for p in group.procs.drain(..) {
                    tracing::info!(
                        "Stopping app {} of group {:?} ({} requests served, concurrency {}, {:?} protocol)",
                        p.process.pid,
                        group.name,
                        p.processed,
                        p.process.concurrency,
                        p.process.protocol
                    );
                    p.process.stop();
                }
            }
        }
        loop {
            let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().unwrap());
            if tasks.is_empty() {
                break;
            }
            for t in tasks {
                let _ = t.await;
            }
        }
    }

    /// Number of live processes (for logs and tests).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn process_count(&self) -> usize {
        self.lock().groups.values().map(|g| g.procs.len()).sum()
    }

    /// The pool's state for status reports.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn snapshot(&self) -> PoolSnapshot {
        let inner = self.lock();
        let now = Instant::now();
        let mut groups: Vec<GroupSnapshot> = inner
            .groups
            .values()
            .map(|g| GroupSnapshot {
                name: g.name.clone(),
                app_root: g.options.app_root.clone(),
                queue_length: g.waiters.len(),
                spawning: g.spawning,
                restarting: g.old_active() > 0,
                generation: g.generation,
                restarts: g.restarts,
                last_restart_unix: g.last_restart.map(unix),
                created_at_unix: unix(g.created_at),
                spawn_failures: g.failures,
                last_spawn_error: g.last_error.as_ref().map(|e| e.summary.clone()),
                sessions: g.procs.iter().map(|p| p.sessions as u64).sum(),
                processed: g.procs.iter().map(|p| p.processed).sum(),
                processes: g
                    .procs
                    .iter()
                    .map(|p| ProcessSnapshot {
                        pid: p.process.pid,
                        id: p.process.id,
                        generation: p.process.generation,
                        state: p.state,
                        sessions: p.sessions,
                        concurrency: p.process.concurrency,
                        processed: p.processed,
                        spawned_at_unix: unix(p.process.spawned_at),
                        idle_ms: if p.sessions == 0 {
                            now.duration_since(p.last_used).as_millis() as u64
                        } else {
                            0
                        },
                    })
                    .collect(),
            })
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        PoolSnapshot {
            max_pool_size: inner.max_pool_size,
            process_count: inner.groups.values().map(|g| g.procs.len()).sum(),
            groups,
        }
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn new_group(options: &AppOptions, now: Instant) -> Group {
    let mut g = Group {
        name: options.group_name.clone(),
        options: options.clone(),
        procs: Vec::new(),
        spawning: 0,
        waiters: VecDeque::new(),
        generation: 0,
        demanded: false,
        failures: 0,
        retry_at: None,
        last_error: None,
        restart_mtime: None,
        next_stat: now,
        restarts: 0,
        last_restart: None,
        created_at: SystemTime::now(),
    };
    // The restart.txt present at creation is the baseline, not a restart request.
    g.restart_mtime = std::fs::metadata(Path::new(&g.options.pool.restart_dir).join("restart.txt"))
        .and_then(|m| m.modified())
        .ok();
    g.next_stat = now + Duration::from_secs(g.options.pool.stat_throttle_rate);
    g
}

/// Begins a rolling restart: the current processes become "old"; new ones replace them one by
/// one. The new options apply from now on.
fn restart_group(group: &mut Group, options: &AppOptions) {
    tracing::info!(
        "Restarting group {:?} ({} processes to replace)",
        group.name,
        group.active()
    );
    group.options = options.clone();
    group.generation += 1;
    group.restarts += 1;
    group.last_restart = Some(SystemTime::now());
    group.failures = 0;
    group.retry_at = None;
    group.last_error = None;
}

/// A process of an earlier generation is draining already.
fn draining_old(group: &Group) -> bool {
    group
        .procs
        .iter()
        .any(|p| p.state == ProcessState::Draining && p.process.generation < group.generation)
}

/// Drains every process of an earlier generation (idle ones stop at once).
fn drain_all_old(group: &mut Group, actions: &mut Actions) {
    while group.old_active() > 0 {
        drain_oldest_old(group, actions);
    }
}

/// When a new process is recycled: `max_requests` plus a uniform share of
/// `max_requests_jitter` (0 = never recycled).
fn recycle_point(pool: &crate::app_options::PoolOptions) -> u64 {
    if pool.max_requests == 0 {
        return 0;
    }
    let mut bytes = [0u8; 8];
    let jitter = match pool.max_requests_jitter {
        0 => 0,
        j => match getrandom::getrandom(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes) % (j + 1),
            Err(_) => 0,
        },
    };
    pool.max_requests.saturating_add(jitter)
}

/// Drains the oldest active process of an earlier generation, if there is one.
fn drain_oldest_old(group: &mut Group, actions: &mut Actions) {
    let generation = group.generation;
    let victim = group
        .procs
        .iter()
        .enumerate()
        .filter(|(_, p)| p.state == ProcessState::Active && p.process.generation < generation)
        .min_by_key(|(_, p)| p.process.id)
        .map(|(i, _)| i);
    if let Some(i) = victim {
        if group.procs[i].sessions == 0 {
            actions.stops.push(group.procs.remove(i).process);
        } else {
            let p = &mut group.procs[i];
            tracing::info!(
                "App {} of group {:?} is replaced by a restart; it stops once its {} requests \
                 are done",
                p.process.pid,
                group.name,
                p.sessions
            );
            p.drain();
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Want {
    No,
    /// Below min_instances: spawns may run side by side.
    MinInstances,
    /// Requests wait.
    Demand,
    /// Old processes remain to be replaced.
    Restart,
}

fn spawn_wanted(group: &Group, now: Instant) -> Want {
    if group.failures > 0 {
        // A failing app is retried only for requests that wait, after the back-off.
        if group.retry_at.is_some_and(|t| now < t) || group.spawning > 0 {
            return Want::No;
        }
        return if group.has_demand() {
            Want::Demand
        } else {
            Want::No
        };
    }
    if !group.options.pool.rolling_restarts
        && group
            .procs
            .iter()
            .any(|p| p.process.generation < group.generation)
    {
        // A non-rolling restart: new processes start once the old ones are gone.
        return Want::No;
    }
    let live = group
        .procs
        .iter()
        .filter(|p| p.state == ProcessState::Active && p.process.generation == group.generation)
        .count()
        + group.spawning as usize;
    if group.demanded && live < group.options.pool.min_instances as usize {
        return Want::MinInstances;
    }
    if group.spawning > 0 {
        return Want::No;
    }
    if group.has_demand() {
        return Want::Demand;
    }
    if group.old_active() > 0 {
        return Want::Restart;
    }
    Want::No
}

/// Stops the longest-idle process of another group to make room for `name`; false if no
/// process is idle.
fn evict_for(inner: &mut Inner, name: &str, actions: &mut Actions) -> bool {
    let victim = inner
        .groups
        .iter()
        .filter(|(n, _)| n.as_str() != name)
        .flat_map(|(n, g)| {
            g.procs
                .iter()
                .filter(|p| p.sessions == 0)
                .map(move |p| (n.clone(), p.process.id, p.last_used))
        })
        .min_by_key(|(_, id, last_used)| (*last_used, *id));
    let Some((group_name, id, _)) = victim else {
        return false;
    };
    let g = inner.groups.get_mut(&group_name).expect("found above");
    let i = g.find(id).expect("found above");
    let p = g.procs.remove(i);
    tracing::info!(
        "The pool is full: stopping app {} of group {:?}, the longest idle, to make room for {name:?}",
        p.process.pid,
        group_name
    );
    actions.stops.push(p.process);
    true
}

async fn housekeeper<S: Spawner>(pool: Weak<Pool<S>>) {
    let mut shutdown = match pool.upgrade() {
        Some(p) => p.shutdown_tx.subscribe(),
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(HOUSEKEEPING_INTERVAL) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match pool.upgrade() {
            Some(p) => p.housekeep(),
            None => return,
        }
    }
}

/// The pool at one moment, for the admin server and logs.
#[derive(Debug, Clone, Serialize)]
pub struct PoolSnapshot {
    pub max_pool_size: usize,
    pub process_count: usize,
    pub groups: Vec<GroupSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupSnapshot {
    pub name: String,
    pub app_root: String,
    /// Requests waiting for a process.
    pub queue_length: usize,
    /// Spawns under way.
    pub spawning: u32,
    /// Old processes remain to be replaced by a rolling restart.
    pub restarting: bool,
    pub generation: u64,
    pub restarts: u64,
    pub last_restart_unix: Option<f64>,
    pub created_at_unix: f64,
    /// Consecutive failed spawns.
    pub spawn_failures: u32,
    pub last_spawn_error: Option<String>,
    /// Requests in progress, summed over the processes.
    pub sessions: u64,
    /// Requests handed to the current processes.
    pub processed: u64,
    pub processes: Vec<ProcessSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessSnapshot {
    pub pid: u32,
    pub id: u64,
    pub generation: u64,
    pub state: ProcessState,
    pub sessions: u32,
    pub concurrency: u32,
    pub processed: u64,
    pub spawned_at_unix: f64,
    /// Milliseconds since its last session ended (0 while busy).
    pub idle_ms: u64,
}

#[cfg(test)]
mod tests;
