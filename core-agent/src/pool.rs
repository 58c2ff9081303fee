//! The pool: `Pool` → `Group` (one app) → `Process` (one OS process) → session slots.
//!
//! Minimal for now: a group holds at most one process, spawned lazily by the first request;
//! requests arriving while it spawns wait for that same spawn. A process takes as many
//! concurrent sessions as its loader advertised (0 = unlimited); further requests wait for a
//! slot. A process that exits is removed from its group at once, and the next request spawns
//! a new one. Spawn failures are handed to every request waiting for that spawn and are not
//! remembered.

use crate::app_options::AppOptions;
use passenger_protocol::loader::SocketProtocol;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinHandle;

/// Why an app process could not be started.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{summary}")]
pub struct SpawnError {
    /// One sentence: what failed.
    pub summary: String,
    /// The loader's output (stdout and stderr), possibly empty.
    pub output: String,
}

/// What a spawner hands the pool: a running, ready app process.
pub struct SpawnedProcess {
    pub pid: u32,
    pub socket_path: PathBuf,
    pub protocol: SocketProtocol,
    /// Concurrent sessions the process takes; 0 means unlimited.
    pub concurrency: u32,
    /// The password the process expects in every session header.
    pub password: String,
    /// Sending on (or dropping) this asks the process to stop gracefully.
    pub stop: oneshot::Sender<()>,
    /// Completes when the process has exited (and been reaped).
    pub exited: oneshot::Receiver<()>,
}

/// Starts app processes. Behind a trait so the pool can be tested without real processes.
pub trait Spawner: Send + Sync + 'static {
    fn spawn(
        &self,
        options: &AppOptions,
    ) -> impl Future<Output = Result<SpawnedProcess, SpawnError>> + Send;
}

/// One app process in a group.
pub struct Process {
    /// Unique within the pool (pids can be reused).
    pub id: u64,
    pub pid: u32,
    pub group: String,
    pub socket_path: PathBuf,
    pub protocol: SocketProtocol,
    pub password: String,
    pub concurrency: u32,
    pub spawned_at: Instant,
    pub sessions_served: AtomicU64,
    slots: Option<Arc<Semaphore>>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Process {
    /// Asks the process to stop gracefully (its loader sees EOF on stdin).
    pub fn stop(&self) {
        if let Some(tx) = self.stop.lock().unwrap().take() {
            let _ = tx.send(());
        }
        self.retire();
    }

    /// No new sessions: requests waiting for a slot go back to the pool.
    fn retire(&self) {
        if let Some(s) = &self.slots {
            s.close();
        }
    }
}

/// A checked-out session slot on a process; dropping it frees the slot.
pub struct Checkout {
    pub process: Arc<Process>,
    _permit: Option<OwnedSemaphorePermit>,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum CheckoutError {
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the app's processes kept exiting before they could take the request")]
    ProcessesGone,
}

type SpawnOutcome = Option<Result<Arc<Process>, CheckoutError>>;

enum GroupState {
    Empty,
    Spawning(watch::Receiver<SpawnOutcome>),
    Ready(Arc<Process>),
}

/// One app: its processes (at most one for now).
pub struct Group {
    pub name: String,
    state: Mutex<GroupState>,
}

impl Group {
    /// Removes the process with `id` if it is still this group's process.
    fn remove(&self, id: u64) -> Option<Arc<Process>> {
        let mut state = self.state.lock().unwrap();
        match &*state {
            GroupState::Ready(p) if p.id == id => {
                let p = p.clone();
                *state = GroupState::Empty;
                p.retire();
                Some(p)
            }
            _ => None,
        }
    }
}

pub struct Pool<S: Spawner> {
    spawner: Arc<S>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    next_id: AtomicU64,
    shutting_down: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    /// Spawn tasks and per-process exit watchers; shutdown waits for all of them.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl<S: Spawner> Pool<S> {
    pub fn new(spawner: S) -> Arc<Self> {
        Arc::new(Pool {
            spawner: Arc::new(spawner),
            groups: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            shutdown_tx: watch::channel(false).0,
            tasks: Mutex::new(Vec::new()),
        })
    }

    fn track(&self, handle: JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap();
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    fn group(&self, name: &str) -> Arc<Group> {
        let mut groups = self.groups.lock().unwrap();
        groups
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Group {
                    name: name.to_string(),
                    state: Mutex::new(GroupState::Empty),
                })
            })
            .clone()
    }

    /// Hands out a session slot on the app's process, spawning it if needed and waiting for a
    /// free slot.
    pub async fn checkout(
        self: &Arc<Self>,
        options: &AppOptions,
    ) -> Result<Checkout, CheckoutError> {
        // A process can exit while we wait for its slot; then try again with a fresh one.
        for _ in 0..3 {
            if self.shutting_down.load(Ordering::SeqCst) {
                return Err(CheckoutError::ShuttingDown);
            }
            let group = self.group(&options.group_name);
            let process = self.process_of(&group, options).await?;
            let permit = match &process.slots {
                None => None,
                Some(slots) => match slots.clone().acquire_owned().await {
                    Ok(p) => Some(p),
                    Err(_) => continue,
                },
            };
            process.sessions_served.fetch_add(1, Ordering::Relaxed);
            return Ok(Checkout {
                process,
                _permit: permit,
            });
        }
        Err(CheckoutError::ProcessesGone)
    }

    /// The group's process: the current one, the one being spawned, or a new spawn.
    async fn process_of(
        self: &Arc<Self>,
        group: &Arc<Group>,
        options: &AppOptions,
    ) -> Result<Arc<Process>, CheckoutError> {
        let mut rx = {
            let mut state = group.state.lock().unwrap();
            match &*state {
                GroupState::Ready(p) => return Ok(p.clone()),
                GroupState::Spawning(rx) => rx.clone(),
                GroupState::Empty => {
                    let (tx, rx) = watch::channel(None);
                    *state = GroupState::Spawning(rx.clone());
                    let handle =
                        tokio::spawn(self.clone().spawn_into(group.clone(), options.clone(), tx));
                    self.track(handle);
                    rx
                }
            }
        };
        let outcome = rx.wait_for(Option::is_some).await.map(|v| v.clone());
        match outcome {
            Ok(v) => v.expect("waited for Some"),
            Err(_) => {
                // The spawn task went away without an answer (it panicked, or the runtime is
                // going down): let the next request try again.
                let mut state = group.state.lock().unwrap();
                if matches!(&*state, GroupState::Spawning(r) if r.same_channel(&rx)) {
                    *state = GroupState::Empty;
                }
                if self.shutting_down.load(Ordering::SeqCst) {
                    Err(CheckoutError::ShuttingDown)
                } else {
                    Err(CheckoutError::Spawn(SpawnError {
                        summary: "the spawn was aborted by an internal error in the core; see the core's log".into(),
                        output: String::new(),
                    }))
                }
            }
        }
    }

    /// Runs one spawn for `group` and publishes the outcome to every waiting request.
    async fn spawn_into(
        self: Arc<Self>,
        group: Arc<Group>,
        options: AppOptions,
        tx: watch::Sender<SpawnOutcome>,
    ) {
        let mut shutdown = self.shutdown_tx.subscribe();
        let result = tokio::select! {
            r = self.spawner.spawn(&options) => r.map_err(CheckoutError::Spawn),
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => Err(CheckoutError::ShuttingDown),
        };
        let outcome = match result {
            Ok(spawned) => {
                let process = Arc::new(Process {
                    id: self.next_id.fetch_add(1, Ordering::Relaxed),
                    pid: spawned.pid,
                    group: group.name.clone(),
                    socket_path: spawned.socket_path,
                    protocol: spawned.protocol,
                    password: spawned.password,
                    concurrency: spawned.concurrency,
                    spawned_at: Instant::now(),
                    sessions_served: AtomicU64::new(0),
                    slots: (spawned.concurrency > 0)
                        .then(|| Arc::new(Semaphore::new(spawned.concurrency as usize))),
                    stop: Mutex::new(Some(spawned.stop)),
                });
                let exited = spawned.exited;
                let watcher_group = group.clone();
                let (id, pid) = (process.id, process.pid);
                self.track(tokio::spawn(async move {
                    let _ = exited.await;
                    if watcher_group.remove(id).is_some() {
                        tracing::debug!(
                            "App {pid} of group {:?} exited; removed it from the pool, the next request spawns a new one",
                            watcher_group.name
                        );
                    }
                }));
                let mut state = group.state.lock().unwrap();
                if self.shutting_down.load(Ordering::SeqCst) {
                    *state = GroupState::Empty;
                    process.stop();
                    Err(CheckoutError::ShuttingDown)
                } else {
                    *state = GroupState::Ready(process.clone());
                    Ok(process)
                }
            }
            Err(e) => {
                *group.state.lock().unwrap() = GroupState::Empty;
                Err(e)
            }
        };
        let _ = tx.send(Some(outcome));
    }

    /// Removes a process that turned out unusable (e.g. its socket refuses connections) and
    /// asks it to stop; the next request spawns a new one.
    pub fn detach(&self, process: &Process) {
        let group = self.groups.lock().unwrap().get(&process.group).cloned();
        if let Some(group) = group {
            group.remove(process.id);
        }
        process.stop();
    }

    /// Stops every process and waits until all have exited (each gets its graceful stop:
    /// stdin closed, then SIGTERM, then SIGKILL, done by the spawner's supervision).
    pub async fn shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        self.shutdown_tx.send_replace(true);
        let groups: Vec<Arc<Group>> = self.groups.lock().unwrap().values().cloned().collect();
        for group in groups {
            let mut state = group.state.lock().unwrap();
            if let GroupState::Ready(p) = &*state {
                tracing::info!(
                    "Stopping app {} of group {:?} (up {} s, {} requests served, concurrency {}, {:?} protocol)",
                    p.pid,
                    group.name,
                    p.spawned_at.elapsed().as_secs(),
                    p.sessions_served.load(Ordering::Relaxed),
                    p.concurrency,
                    p.protocol
                );
                p.stop();
                *state = GroupState::Empty;
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
        let groups = self.groups.lock().unwrap();
        groups
            .values()
            .filter(|g| matches!(&*g.state.lock().unwrap(), GroupState::Ready(_)))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passenger_protocol::options::AppType;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// Spawns nothing: counts spawns, takes a while, and can be told to fail. Keeps each
    /// "process" alive until the test drops its exit sender.
    struct DummySpawner {
        spawns: AtomicUsize,
        fail: AtomicBool,
        concurrency: u32,
        exits: Mutex<Vec<oneshot::Sender<()>>>,
    }

    impl DummySpawner {
        fn new(concurrency: u32) -> Self {
            DummySpawner {
                spawns: AtomicUsize::new(0),
                fail: AtomicBool::new(false),
                concurrency,
                exits: Mutex::new(Vec::new()),
            }
        }
    }

    impl Spawner for DummySpawner {
        async fn spawn(&self, _options: &AppOptions) -> Result<SpawnedProcess, SpawnError> {
            let n = self.spawns.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(SpawnError {
                    summary: "boom".into(),
                    output: "trace".into(),
                });
            }
            let (stop, _stop_rx) = oneshot::channel();
            let (exit_tx, exited) = oneshot::channel();
            self.exits.lock().unwrap().push(exit_tx);
            Ok(SpawnedProcess {
                pid: 1000 + n as u32,
                socket_path: PathBuf::from("/nonexistent"),
                protocol: SocketProtocol::Session,
                concurrency: self.concurrency,
                password: "pw".into(),
                stop,
                exited,
            })
        }
    }

    fn options() -> AppOptions {
        AppOptions {
            app_root: "/srv/app".into(),
            app_type: AppType::Rack,
            startup_file: "/srv/app/config.ru".into(),
            app_env: "production".into(),
            group_name: "/srv/app (production)".into(),
            ruby: "ruby".into(),
            base_uri: String::new(),
            show_version_in_header: true,
        }
    }

    #[tokio::test]
    async fn one_spawn_serves_concurrent_first_requests() {
        let pool = Pool::new(DummySpawner::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let pool = pool.clone();
            tasks.push(tokio::spawn(async move {
                pool.checkout(&options()).await.map(|c| c.process.pid)
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(1000));
        }
        assert_eq!(pool.spawner.spawns.load(Ordering::SeqCst), 1);
        assert_eq!(pool.process_count(), 1);
    }

    #[tokio::test]
    async fn concurrency_limit_makes_requests_wait() {
        let pool = Pool::new(DummySpawner::new(1));
        let first = pool.checkout(&options()).await.unwrap();
        let pool2 = pool.clone();
        let waiting = tokio::spawn(async move { pool2.checkout(&options()).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(first);
        assert!(waiting.await.unwrap());
        assert_eq!(pool.spawner.spawns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn failures_reach_all_waiters_and_are_not_cached() {
        let pool = Pool::new(DummySpawner::new(1));
        pool.spawner.fail.store(true, Ordering::SeqCst);
        let o = options();
        let (a, b) = tokio::join!(pool.checkout(&o), pool.checkout(&o));
        assert!(matches!(a, Err(CheckoutError::Spawn(_))));
        assert!(matches!(b, Err(CheckoutError::Spawn(_))));
        assert_eq!(pool.spawner.spawns.load(Ordering::SeqCst), 1);
        pool.spawner.fail.store(false, Ordering::SeqCst);
        assert!(pool.checkout(&options()).await.is_ok());
        assert_eq!(pool.spawner.spawns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn exited_process_is_replaced() {
        let pool = Pool::new(DummySpawner::new(1));
        let pid = pool.checkout(&options()).await.unwrap().process.pid;
        pool.spawner.exits.lock().unwrap().clear(); // the process "exits"
        for _ in 0..100 {
            if pool.process_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(pool.process_count(), 0);
        let next = pool.checkout(&options()).await.unwrap().process.pid;
        assert_ne!(pid, next);
        assert_eq!(pool.spawner.spawns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn shutdown_refuses_new_checkouts() {
        let pool = Pool::new(DummySpawner::new(1));
        drop(pool.checkout(&options()).await.unwrap());
        pool.spawner.exits.lock().unwrap().clear();
        pool.shutdown().await;
        assert!(matches!(
            pool.checkout(&options()).await,
            Err(CheckoutError::ShuttingDown)
        ));
    }
}
