//! Pool decisions against a dummy spawner: no real processes, virtual time where time
//! matters, and explicit gates (not sleeps) to order events.

use super::*;
use crate::app_options::{PoolOptions, SpawnOptions};
use passenger_protocol::options::AppType;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use tokio::sync::Semaphore;

/// Spawns nothing. Counts spawns, fails on request, and (when `gated`) lets a spawn finish
/// only when the test opens the gate. Each "process" runs until the pool stops it (recorded
/// in `stopped`) or the test kills it.
struct Dummy {
    spawns: AtomicUsize,
    fail: AtomicBool,
    concurrency: u32,
    prefetch: u32,
    gated: AtomicBool,
    gate: Arc<Semaphore>,
    kills: Mutex<HashMap<u32, oneshot::Sender<()>>>,
    stopped: Arc<Mutex<Vec<u32>>>,
}

impl Dummy {
    fn new(concurrency: u32) -> Self {
        Dummy {
            spawns: AtomicUsize::new(0),
            fail: AtomicBool::new(false),
            concurrency,
            prefetch: 0,
            gated: AtomicBool::new(false),
            gate: Arc::new(Semaphore::new(0)),
            kills: Mutex::new(HashMap::new()),
            stopped: Arc::new(Mutex::new(Vec::new())),
        }
    }
    fn gated(concurrency: u32) -> Self {
        let d = Dummy::new(concurrency);
        d.gated.store(true, Ordering::SeqCst);
        d
    }
    /// Lets `n` gated spawns finish.
    fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }
    /// The process `pid` crashes.
    fn kill(&self, pid: u32) {
        let tx = self
            .kills
            .lock()
            .unwrap()
            .remove(&pid)
            .expect("a live dummy");
        let _ = tx.send(());
    }
    fn stopped(&self) -> Vec<u32> {
        self.stopped.lock().unwrap().clone()
    }
    fn spawns(&self) -> usize {
        self.spawns.load(Ordering::SeqCst)
    }
}

impl Spawner for Dummy {
    async fn spawn(
        &self,
        _options: &AppOptions,
        _generation: u64,
    ) -> Result<SpawnedProcess, SpawnError> {
        let n = self.spawns.fetch_add(1, Ordering::SeqCst);
        if self.gated.load(Ordering::SeqCst) {
            self.gate.acquire().await.unwrap().forget();
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(SpawnError {
                summary: "boom".into(),
                output: "trace".into(),
                ..SpawnError::default()
            });
        }
        let pid = 1000 + n as u32;
        let (stop, stop_rx) = oneshot::channel();
        let (exit_tx, exited) = oneshot::channel();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        self.kills.lock().unwrap().insert(pid, kill_tx);
        let stopped = self.stopped.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop_rx => stopped.lock().unwrap().push(pid),
                _ = kill_rx => {}
            }
            let _ = exit_tx.send(());
        });
        Ok(SpawnedProcess {
            pid,
            address: AppAddress::Unix(PathBuf::from("/nonexistent")),
            protocol: SocketProtocol::Session,
            concurrency: self.concurrency,
            prefetch: self.prefetch,
            password: "pw".into(),
            stop,
            exited,
        })
    }
}

fn app(name: &str) -> AppOptions {
    let root = format!("/nonexistent/{name}");
    AppOptions {
        app_root: root.clone(),
        app_type: AppType::Rack,
        startup_file: format!("{root}/config.ru"),
        app_env: "production".into(),
        group_name: format!("{root} (production)"),
        ruby: "ruby".into(),
        python: "python3".into(),
        nodejs: "node".into(),
        base_uri: String::new(),
        show_version_in_header: true,
        pool: PoolOptions::defaults(&root),
        spawn: SpawnOptions::defaults(AppType::Rack, "production"),
    }
}

fn options() -> AppOptions {
    app("app")
}

fn with(f: impl FnOnce(&mut PoolOptions)) -> AppOptions {
    let mut o = options();
    f(&mut o.pool);
    o
}

/// Lets every runnable task run until none has anything left to do (no time passes).
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

fn group<'a>(s: &'a PoolSnapshot, o: &AppOptions) -> &'a GroupSnapshot {
    s.groups
        .iter()
        .find(|g| g.name == o.group_name)
        .expect("group exists")
}

fn pids(pool: &Pool<Dummy>, o: &AppOptions) -> Vec<u32> {
    let s = pool.snapshot();
    s.groups
        .iter()
        .find(|g| g.name == o.group_name)
        .map(|g| g.processes.iter().map(|p| p.pid).collect())
        .unwrap_or_default()
}

type Pending = JoinHandle<Result<Checkout, CheckoutError>>;

fn start(pool: &Arc<Pool<Dummy>>, o: &AppOptions) -> Pending {
    let pool = pool.clone();
    let o = o.clone();
    tokio::spawn(async move { pool.checkout(&o).await })
}

async fn pid_of(t: Pending) -> u32 {
    t.await.unwrap().unwrap().process.pid
}

// ---------------------------------------------------------------------------------------------
// 1. Routing and scaling

#[tokio::test]
async fn one_spawn_serves_concurrent_first_requests() {
    let pool = Pool::new(Dummy::gated(0));
    let o = options();
    let tasks: Vec<Pending> = (0..10).map(|_| start(&pool, &o)).collect();
    settle().await;
    assert_eq!(group(&pool.snapshot(), &o).queue_length, 10);
    pool.spawner.open(1);
    for t in tasks {
        assert_eq!(pid_of(t).await, 1000);
    }
    assert_eq!(
        pool.spawner.spawns(),
        1,
        "unlimited concurrency: one process is enough"
    );
    assert_eq!(pool.process_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn least_busy_process_first_and_ties_go_to_the_least_recently_used() {
    let pool = Pool::new(Dummy::new(4));
    let o = with(|p| p.min_instances = 3);
    drop(pool.checkout(&o).await.unwrap());
    settle().await;
    assert_eq!(pids(&pool, &o).len(), 3, "min_instances processes");
    // Three held sessions land on three different processes (least busy first).
    let held: Vec<Checkout> = [
        pool.checkout(&o).await.unwrap(),
        pool.checkout(&o).await.unwrap(),
        pool.checkout(&o).await.unwrap(),
    ]
    .into();
    let mut got: Vec<u32> = held.iter().map(|c| c.process.pid).collect();
    got.sort();
    assert_eq!(got, vec![1000, 1001, 1002]);
    // Release 1001 then 1000: now 1002 is the busiest; 1001 and 1000 are idle, 1001 used
    // longer ago, so it goes first.
    let mut held = held;
    held.sort_by_key(|c| c.process.pid);
    let c1002 = held.pop().unwrap();
    let c1001 = held.pop().unwrap();
    let c1000 = held.pop().unwrap();
    drop(c1001);
    tokio::time::advance(Duration::from_millis(1)).await;
    drop(c1000);
    let a = pool.checkout(&o).await.unwrap();
    assert_eq!(a.process.pid, 1001, "equally idle: the least recently used");
    let b = pool.checkout(&o).await.unwrap();
    assert_eq!(b.process.pid, 1000, "the idle one next");
    // All three have one session: a tie on load, broken by least recent use (1002's session
    // began first).
    let c = pool.checkout(&o).await.unwrap();
    assert_eq!(c.process.pid, 1002);
    drop((a, b, c, c1002));
}

#[tokio::test(start_paused = true)]
async fn sequential_requests_rotate_over_idle_processes() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| p.min_instances = 2);
    drop(pool.checkout(&o).await.unwrap());
    settle().await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        tokio::time::advance(Duration::from_millis(1)).await;
        seen.push(pool.checkout(&o).await.unwrap().process.pid);
    }
    // Both idle: each request goes to the one used longer ago.
    assert_eq!(seen, vec![1000, 1001, 1000, 1001]);
}

#[tokio::test]
async fn busy_processes_make_the_group_grow_within_max_pool_size() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| p.max_pool_size = 2);
    let a = pool.checkout(&o).await.unwrap();
    let b = pool.checkout(&o).await.unwrap();
    assert_ne!(
        a.process.pid, b.process.pid,
        "a busy process makes a second one spawn"
    );
    let c = start(&pool, &o);
    settle().await;
    assert!(
        !c.is_finished(),
        "the pool is full: the third request waits"
    );
    assert_eq!(pool.spawner.spawns(), 2);
    assert_eq!(group(&pool.snapshot(), &o).queue_length, 1);
    let freed = a.process.pid;
    drop(a);
    assert_eq!(pid_of(c).await, freed);
    drop(b);
}

#[tokio::test]
async fn max_instances_per_app_caps_one_app() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| p.max_instances_per_app = 1);
    let a = pool.checkout(&o).await.unwrap();
    let b = start(&pool, &o);
    settle().await;
    assert!(!b.is_finished());
    assert_eq!(pool.spawner.spawns(), 1);
    drop(a);
    assert_eq!(pid_of(b).await, 1000);
}

#[tokio::test]
async fn max_instances_caps_one_app_and_the_lower_cap_wins() {
    let pool = Pool::new(Dummy::new(1));
    // The app's own cap (2) is lower than the global one (3): two processes at most.
    let capped = with(|p| {
        p.max_instances = 2;
        p.max_instances_per_app = 3;
        p.max_pool_size = 10;
    });
    let held: Vec<Checkout> = vec![
        pool.checkout(&capped).await.unwrap(),
        pool.checkout(&capped).await.unwrap(),
    ];
    let third = start(&pool, &capped);
    settle().await;
    assert!(!third.is_finished(), "the third request waits");
    assert_eq!(pids(&pool, &capped).len(), 2);
    // Another app without a cap of its own grows to the global cap (3).
    let mut other = app("other");
    other.pool.max_instances_per_app = 3;
    other.pool.max_pool_size = 10;
    let others: Vec<Checkout> = vec![
        pool.checkout(&other).await.unwrap(),
        pool.checkout(&other).await.unwrap(),
        pool.checkout(&other).await.unwrap(),
    ];
    let fourth = start(&pool, &other);
    settle().await;
    assert!(!fourth.is_finished());
    assert_eq!(pids(&pool, &other).len(), 3);
    let freed = held[0].process.pid;
    drop(held);
    assert_eq!(pid_of(third).await, freed);
    drop(others);
    fourth.await.unwrap().unwrap();
    assert_eq!(pool.spawner.spawns(), 5);
}

#[tokio::test]
async fn force_max_concurrent_requests_overrides_what_the_process_advertised() {
    // The dummy advertises 1. Forced to 3: three requests share one process, a fourth makes
    // the group grow.
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| p.force_max_concurrent_requests_per_process = Some(3));
    let held: Vec<Checkout> = vec![
        pool.checkout(&o).await.unwrap(),
        pool.checkout(&o).await.unwrap(),
        pool.checkout(&o).await.unwrap(),
    ];
    assert!(held.iter().all(|c| c.process.pid == 1000));
    assert_eq!(held[0].process.concurrency, 3);
    let fourth = start(&pool, &o);
    assert_eq!(pid_of(fourth).await, 1001);
    drop(held);
    // Forced to 0: unlimited.
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| p.force_max_concurrent_requests_per_process = Some(0));
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(pool.checkout(&o).await.unwrap());
    }
    assert!(held.iter().all(|c| c.process.pid == 1000));
    assert_eq!(pool.spawner.spawns(), 1);
    // Not forced: the advertised 1.
    let pool = Pool::new(Dummy::new(1));
    let a = pool.checkout(&options()).await.unwrap();
    let b = pool.checkout(&options()).await.unwrap();
    assert_ne!(a.process.pid, b.process.pid);
}

#[tokio::test]
async fn sticky_requests_go_to_their_process_and_wait_for_it() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| p.min_instances = 2);
    drop(pool.checkout(&o).await.unwrap());
    settle().await;
    assert_eq!(pids(&pool, &o), vec![1000, 1001]);
    let a = pool.checkout(&o).await.unwrap();
    let target = a.process.clone();
    let other = if target.pid == 1000 { 1001 } else { 1000 };
    assert_ne!(target.sticky_id, 0);
    drop(a);
    // Idle: sticky requests all go to their process, even where the least busy rule would
    // rotate.
    for _ in 0..4 {
        let c = pool
            .checkout_sticky(&o, Some(target.sticky_id))
            .await
            .unwrap();
        assert_eq!(c.process.pid, target.pid);
    }
    // Busy: the next sticky request waits for it (no spawn for it), while a plain request
    // arriving after it is served by the other process.
    let busy = pool
        .checkout_sticky(&o, Some(target.sticky_id))
        .await
        .unwrap();
    let sticky = {
        let pool = pool.clone();
        let o = o.clone();
        let id = target.sticky_id;
        tokio::spawn(async move { pool.checkout_sticky(&o, Some(id)).await })
    };
    settle().await;
    assert!(!sticky.is_finished());
    assert_eq!(pid_of(start(&pool, &o)).await, other);
    settle().await;
    assert_eq!(
        pool.spawner.spawns(),
        2,
        "a sticky wait is no reason to spawn"
    );
    drop(busy);
    assert_eq!(pid_of(sticky).await, target.pid);
    // An unknown id is ignored.
    let unknown = pool
        .checkout_sticky(&o, Some(target.sticky_id ^ 1))
        .await
        .unwrap();
    assert!([1000, 1001].contains(&unknown.process.pid));
    drop(unknown);
    // Once its process is gone, the id is unknown.
    pool.spawner.kill(target.pid);
    settle().await;
    let after = pool
        .checkout_sticky(&o, Some(target.sticky_id))
        .await
        .unwrap();
    assert_ne!(after.process.pid, target.pid);
}

#[tokio::test]
async fn min_instances_exist_after_the_first_request() {
    let pool = Pool::new(Dummy::gated(1));
    let o = with(|p| p.min_instances = 3);
    let first = start(&pool, &o);
    settle().await;
    assert_eq!(pool.spawner.spawns(), 3, "the spawns run side by side");
    assert_eq!(
        pool.process_count(),
        0,
        "no process before the first request"
    );
    pool.spawner.open(3);
    assert!(pid_of(first).await >= 1000);
    settle().await;
    assert_eq!(pool.process_count(), 3);
    assert_eq!(pool.spawner.spawns(), 3);
}

#[tokio::test]
async fn a_full_pool_evicts_the_longest_idle_process_of_another_app() {
    let pool = Pool::new(Dummy::new(1));
    let (a, b, c) = (app("a"), app("b"), app("c"));
    let full = |mut o: AppOptions| {
        o.pool.max_pool_size = 2;
        o
    };
    let (a, b, c) = (full(a), full(b), full(c));
    let pa = pool.checkout(&a).await.unwrap().process.pid;
    let pb = pool.checkout(&b).await.unwrap().process.pid;
    // Both idle now; a's process was used longer ago.
    let pc = pool.checkout(&c).await.unwrap().process.pid;
    settle().await;
    assert_eq!(
        pool.spawner.stopped(),
        vec![pa],
        "a's process, the longest idle, made room"
    );
    assert!(![pa, pb].contains(&pc));
    assert_eq!(pool.process_count(), 2);
    assert_eq!(pids(&pool, &b), vec![pb]);
}

#[tokio::test]
async fn eviction_waits_for_requests_in_flight() {
    let pool = Pool::new(Dummy::new(1));
    let mut a = app("a");
    a.pool.max_pool_size = 1;
    let mut b = app("b");
    b.pool.max_pool_size = 1;
    let held = pool.checkout(&a).await.unwrap();
    let waiting = start(&pool, &b);
    settle().await;
    assert!(!waiting.is_finished(), "a's only process is busy: b waits");
    assert!(
        pool.spawner.stopped().is_empty(),
        "a busy process is never evicted"
    );
    let pa = held.process.pid;
    drop(held);
    let pb = pid_of(waiting).await;
    assert_ne!(pa, pb);
    assert_eq!(pool.spawner.stopped(), vec![pa]);
}

// ---------------------------------------------------------------------------------------------
// 2. Queueing

#[tokio::test]
async fn a_full_queue_answers_the_overflow_status() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| {
        p.max_pool_size = 1;
        p.max_request_queue_size = 2;
    });
    let held = pool.checkout(&o).await.unwrap();
    let w1 = start(&pool, &o);
    let w2 = start(&pool, &o);
    settle().await;
    let e = pool
        .checkout(&o)
        .await
        .err()
        .expect("the third waiter overflows");
    assert_eq!(
        e,
        CheckoutError::QueueFull {
            size: 2,
            status: 503
        }
    );
    assert_eq!(e.status(), 503);
    let custom = with(|p| {
        p.max_pool_size = 1;
        p.max_request_queue_size = 2;
        p.queue_overflow_status = 429;
    });
    // The group's options are those of its creation: a changed code applies after a restart.
    assert_eq!(pool.checkout(&custom).await.err().unwrap().status(), 503);
    drop(held);
    let p1 = pid_of(w1).await;
    let p2 = pid_of(w2).await;
    assert_eq!(p1, p2);
}

#[tokio::test]
async fn queue_size_zero_is_unbounded() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| {
        p.max_pool_size = 1;
        p.max_request_queue_size = 0;
    });
    let held = pool.checkout(&o).await.unwrap();
    let waiters: Vec<Pending> = (0..300).map(|_| start(&pool, &o)).collect();
    settle().await;
    assert_eq!(group(&pool.snapshot(), &o).queue_length, 300);
    drop(held);
    for w in waiters {
        drop(w.await.unwrap().unwrap());
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_that_waits_too_long_gets_504_and_leaves_the_queue() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| {
        p.max_pool_size = 1;
        p.max_request_queue_time = 5;
    });
    let held = pool.checkout(&o).await.unwrap();
    let e = pool.checkout(&o).await.err().unwrap();
    assert_eq!(e, CheckoutError::QueueTimeout(5));
    assert_eq!(e.status(), 504);
    assert_eq!(group(&pool.snapshot(), &o).queue_length, 0);
    drop(held);
    assert!(pool.checkout(&o).await.is_ok());
}

#[tokio::test]
async fn a_request_whose_client_left_leaves_the_queue() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| {
        p.max_pool_size = 1;
        p.max_request_queue_size = 1;
    });
    let held = pool.checkout(&o).await.unwrap();
    let gone = start(&pool, &o);
    settle().await;
    assert_eq!(group(&pool.snapshot(), &o).queue_length, 1);
    gone.abort();
    settle().await;
    assert_eq!(group(&pool.snapshot(), &o).queue_length, 0);
    // Its place is free again, and the slot goes to the next request.
    let next = start(&pool, &o);
    settle().await;
    drop(held);
    assert_eq!(pid_of(next).await, 1000);
}

#[tokio::test]
async fn a_grant_to_a_request_that_just_left_is_given_back() {
    // The session is handed to a waiter in the same moment its client leaves: the slot must
    // not leak.
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| p.max_pool_size = 1);
    let held = pool.checkout(&o).await.unwrap();
    let leaving = start(&pool, &o);
    settle().await;
    drop(held); // grants the slot to `leaving` (under the lock) ...
    leaving.abort(); // ... which is cancelled before it could take it
    let _ = leaving.await;
    settle().await;
    let s = pool.snapshot();
    assert_eq!(group(&s, &o).sessions, 0, "the slot came back");
    assert!(pool.checkout(&o).await.is_ok());
}

#[tokio::test]
async fn a_spawn_finishing_while_the_queue_drains_serves_the_rest() {
    let pool = Pool::new(Dummy::gated(1));
    let o = with(|p| p.max_pool_size = 2);
    let first = start(&pool, &o);
    settle().await;
    pool.spawner.open(1);
    let a = first.await.unwrap().unwrap();
    // Three wait; a second spawn starts for them.
    let w: Vec<Pending> = (0..3).map(|_| start(&pool, &o)).collect();
    settle().await;
    assert_eq!(pool.spawner.spawns(), 2);
    // The first session ends and the spawn completes in the same breath.
    drop(a);
    pool.spawner.open(1);
    let mut served = Vec::new();
    let mut held = Vec::new();
    for t in w {
        let c = t.await.unwrap().unwrap();
        served.push(c.process.pid);
        held.push(c);
        if held.len() == 2 {
            held.clear(); // let the third through
        }
    }
    served.sort();
    assert!(
        served.contains(&1000) && served.contains(&1001),
        "{served:?}"
    );
    assert_eq!(pool.spawner.spawns(), 2);
    assert_eq!(group(&pool.snapshot(), &o).queue_length, 0);
}

/// A dummy whose processes (one thread each) take one request ahead.
fn prefetching(gated: bool) -> Dummy {
    let mut d = if gated {
        Dummy::gated(1)
    } else {
        Dummy::new(1)
    };
    d.prefetch = 1;
    d
}

fn start_for(pool: &Arc<Pool<Dummy>>, o: &AppOptions, prefetchable: bool) -> Pending {
    let pool = pool.clone();
    let o = o.clone();
    tokio::spawn(async move { pool.checkout_for(&o, None, prefetchable).await })
}

#[tokio::test(start_paused = true)]
async fn a_request_goes_ahead_to_a_busy_process_when_no_spawn_can_serve_it() {
    let pool = Pool::new(prefetching(false));
    let o = with(|p| p.max_pool_size = 1);
    let first = pool.checkout_for(&o, None, true).await.unwrap();
    assert!(!first.prefetched);
    let ahead = pool.checkout_for(&o, None, true).await.unwrap();
    assert_eq!(ahead.process.pid, first.process.pid);
    assert!(
        ahead.prefetched,
        "the pool is full: it goes ahead to the busy process"
    );
    // One ahead per process: the next one waits in the queue.
    let third = start_for(&pool, &o, true);
    settle().await;
    assert_eq!(group(&pool.snapshot(), &o).queue_length, 1);
    assert_eq!(pool.snapshot().groups[0].processes[0].sessions, 2);
    // The first ends: the one ahead runs now, and the third goes ahead of it in turn.
    drop(first);
    let third = third.await.unwrap().unwrap();
    assert!(third.prefetched);
    assert_eq!(pool.spawner.spawns(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_forced_concurrency_sends_nothing_ahead() {
    let pool = Pool::new(prefetching(false));
    let o = with(|p| {
        p.max_pool_size = 1;
        p.force_max_concurrent_requests_per_process = Some(1);
    });
    let first = pool.checkout_for(&o, None, true).await.unwrap();
    let second = start_for(&pool, &o, true);
    settle().await;
    assert_eq!(group(&pool.snapshot(), &o).queue_length, 1, "it waits");
    drop(first);
    assert!(!second.await.unwrap().unwrap().prefetched);
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_for_a_spawn_rather_than_go_ahead() {
    let pool = Pool::new(prefetching(true));
    let o = with(|p| p.max_pool_size = 2);
    let first = start_for(&pool, &o, true);
    settle().await;
    pool.spawner.open(1);
    let first = first.await.unwrap().unwrap();
    let second = start_for(&pool, &o, true);
    settle().await;
    assert_eq!(
        pool.spawner.spawns(),
        2,
        "a busy process is a reason to spawn"
    );
    assert_eq!(
        group(&pool.snapshot(), &o).queue_length,
        1,
        "not sent ahead meanwhile"
    );
    pool.spawner.open(1);
    let second = second.await.unwrap().unwrap();
    assert!(!second.prefetched);
    assert_ne!(second.process.pid, first.process.pid);
}

#[tokio::test(start_paused = true)]
async fn no_request_goes_ahead_of_one_that_cannot_or_behind_one_that_runs_long() {
    let pool = Pool::new(prefetching(false));
    let o = with(|p| p.max_pool_size = 1);
    let first = pool.checkout_for(&o, None, true).await.unwrap();
    // A request with a body waits for a free process, and the queue behind it with it.
    let post = start_for(&pool, &o, false);
    let get = start_for(&pool, &o, true);
    settle().await;
    assert_eq!(group(&pool.snapshot(), &o).queue_length, 2);
    drop(first);
    let post = post.await.unwrap().unwrap();
    assert!(!post.prefetched, "it got the process once free");
    let get = get.await.unwrap().unwrap();
    assert!(get.prefetched, "the one behind it goes ahead then");
    drop(post);
    drop(get);
    // Behind a request that has run for a while, nothing goes ahead.
    let long = pool.checkout_for(&o, None, true).await.unwrap();
    tokio::time::advance(PREFETCH_BEHIND_AT_MOST).await;
    let waiting = start_for(&pool, &o, true);
    settle().await;
    assert_eq!(group(&pool.snapshot(), &o).queue_length, 1);
    drop(long);
    let next = waiting.await.unwrap().unwrap();
    assert!(!next.prefetched);
    // Nor behind one that has just begun, when the one before it ran long: the app's requests
    // are of the slow kind.
    let after_long = start_for(&pool, &o, true);
    settle().await;
    assert_eq!(group(&pool.snapshot(), &o).queue_length, 1);
    drop(next);
    assert!(!after_long.await.unwrap().unwrap().prefetched);
}

// ---------------------------------------------------------------------------------------------
// 3. Crashes and spawn failures

#[tokio::test]
async fn a_crashed_process_is_removed_and_waiting_requests_get_a_new_one() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| p.max_pool_size = 1);
    let held = pool.checkout(&o).await.unwrap();
    let waiting = start(&pool, &o);
    settle().await;
    pool.spawner.kill(1000);
    settle().await;
    assert_eq!(pids(&pool, &o), vec![1001], "removed at once, and replaced");
    assert_eq!(pid_of(waiting).await, 1001);
    drop(held); // the in-flight one ends (its session saw the 502); nothing breaks
    assert_eq!(pool.checkout(&o).await.unwrap().process.pid, 1001);
}

#[tokio::test]
async fn detach_removes_a_process_and_stops_it() {
    let pool = Pool::new(Dummy::new(1));
    let o = options();
    let c = pool.checkout(&o).await.unwrap();
    pool.detach(&c.process);
    drop(c);
    settle().await;
    assert_eq!(pool.spawner.stopped(), vec![1000]);
    assert_eq!(
        pids(&pool, &o),
        vec![1001],
        "min_instances brings a new one"
    );
}

#[tokio::test]
async fn spawn_failures_reach_the_waiters() {
    let pool = Pool::new(Dummy::new(1));
    pool.spawner.fail.store(true, Ordering::SeqCst);
    let o = options();
    let (a, b) = tokio::join!(pool.checkout(&o), pool.checkout(&o));
    assert!(matches!(a, Err(CheckoutError::Spawn(_))));
    assert!(matches!(b, Err(CheckoutError::Spawn(_))));
    assert_eq!(pool.spawner.spawns(), 1);
    // The first failure is retried by the next request at once.
    pool.spawner.fail.store(false, Ordering::SeqCst);
    assert!(pool.checkout(&o).await.is_ok());
    assert_eq!(pool.spawner.spawns(), 2);
}

#[tokio::test(start_paused = true)]
async fn repeated_spawn_failures_back_off() {
    let pool = Pool::new(Dummy::new(1));
    pool.spawner.fail.store(true, Ordering::SeqCst);
    let o = options();
    assert!(pool.checkout(&o).await.is_err());
    assert!(pool.checkout(&o).await.is_err());
    assert_eq!(pool.spawner.spawns(), 2);
    // In the back-off (1 s after the second failure) requests get the error without a spawn.
    let e = pool.checkout(&o).await.err().unwrap();
    assert_eq!(e.to_string(), "boom");
    assert_eq!(pool.spawner.spawns(), 2);
    let s = pool.snapshot();
    assert_eq!(group(&s, &o).spawn_failures, 2);
    assert_eq!(group(&s, &o).last_spawn_error.as_deref(), Some("boom"));
    tokio::time::advance(Duration::from_millis(1001)).await;
    pool.spawner.fail.store(false, Ordering::SeqCst);
    assert!(pool.checkout(&o).await.is_ok());
    assert_eq!(pool.spawner.spawns(), 3);
    assert_eq!(group(&pool.snapshot(), &o).spawn_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_extra_spawn_leaves_waiters_for_the_live_process() {
    let pool = Pool::new(Dummy::new(1));
    let o = options();
    let held = pool.checkout(&o).await.unwrap();
    pool.spawner.fail.store(true, Ordering::SeqCst);
    let waiting = start(&pool, &o);
    settle().await;
    // Tried, failed, retried at once, failed again: now it backs off.
    assert_eq!(pool.spawner.spawns(), 3);
    assert!(!waiting.is_finished(), "still waiting for the live process");
    drop(held);
    assert_eq!(pid_of(waiting).await, 1000);
}

// ---------------------------------------------------------------------------------------------
// 4. Recycling and idling

#[tokio::test]
async fn max_requests_recycles_a_process() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| p.max_requests = 3);
    for _ in 0..3 {
        assert_eq!(pool.checkout(&o).await.unwrap().process.pid, 1000);
    }
    settle().await;
    assert_eq!(pool.spawner.stopped(), vec![1000]);
    assert_eq!(pool.checkout(&o).await.unwrap().process.pid, 1001);
}

#[tokio::test]
async fn a_draining_process_finishes_its_requests_first() {
    let pool = Pool::new(Dummy::new(2));
    let o = with(|p| p.max_requests = 2);
    let a = pool.checkout(&o).await.unwrap();
    let b = pool.checkout(&o).await.unwrap();
    assert_eq!((a.process.pid, b.process.pid), (1000, 1000));
    let c = pool.checkout(&o).await.unwrap();
    assert_eq!(c.process.pid, 1001, "1000 takes no third request");
    drop(a);
    settle().await;
    assert!(
        pool.spawner.stopped().is_empty(),
        "one request still in flight"
    );
    drop(b);
    settle().await;
    assert_eq!(pool.spawner.stopped(), vec![1000]);
    drop(c);
}

#[tokio::test]
async fn a_recycled_process_finishes_its_requests_then_is_replaced() {
    // As the request server does for a process over passenger_memory_limit.
    let pool = Pool::new(Dummy::new(2));
    let o = options();
    let a = pool.checkout(&o).await.unwrap();
    let b = pool.checkout(&o).await.unwrap();
    assert_eq!(a.process.pid, 1000);
    assert_eq!(b.process.pid, 1000);
    assert!(pool.recycle(&a.process));
    assert!(!pool.recycle(&a.process), "draining already");
    let next = pool.checkout(&o).await.unwrap();
    assert_eq!(next.process.pid, 1001, "a new process takes new requests");
    drop(a);
    settle().await;
    assert!(
        pool.spawner.stopped().is_empty(),
        "a request is still in progress"
    );
    drop(b);
    settle().await;
    assert_eq!(pool.spawner.stopped(), vec![1000]);
    // An idle process stops at once.
    let idle = next.process.clone();
    drop(next);
    assert!(pool.recycle(&idle));
    settle().await;
    assert_eq!(pool.spawner.stopped(), vec![1000, 1001]);
    assert_eq!(pids(&pool, &o), vec![1002], "min_instances: replaced");
}

#[tokio::test]
async fn retirement_fires_when_the_pool_shuts_a_process_down() {
    // What upgraded connections watch (passenger_abort_websockets_on_process_shutdown).
    let pool = Pool::new(Dummy::new(0));
    let o = options();
    let a = pool.checkout(&o).await.unwrap();
    let retirement = a.process.retirement();
    assert!(!*retirement.borrow(), "a serving process is not retired");
    assert!(pool.recycle(&a.process));
    assert!(*retirement.borrow(), "draining retires it");
    drop(a);
    let b = pool.checkout(&o).await.unwrap();
    let retirement = b.process.retirement();
    drop(b);
    pool.shutdown().await;
    assert!(*retirement.borrow(), "stopping retires it");
}

#[tokio::test(start_paused = true)]
async fn idle_processes_beyond_min_instances_stop() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| p.pool_idle_time = 10);
    let a = pool.checkout(&o).await.unwrap();
    let b = pool.checkout(&o).await.unwrap();
    drop((a, b));
    assert_eq!(pool.process_count(), 2);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(pool.process_count(), 2, "not idle long enough");
    tokio::time::sleep(Duration::from_secs(7)).await;
    settle().await;
    assert_eq!(pool.process_count(), 1, "min_instances (1) stays");
    assert_eq!(pool.spawner.stopped().len(), 1);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(pool.process_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn pool_idle_time_zero_keeps_processes() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| p.pool_idle_time = 0);
    let a = pool.checkout(&o).await.unwrap();
    let b = pool.checkout(&o).await.unwrap();
    drop((a, b));
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(pool.process_count(), 2);
}

// ---------------------------------------------------------------------------------------------
// 5. Restarts

struct TempDir(PathBuf);
impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "prs-pool-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
    fn touch(&self, name: &str, secs: u64) {
        let f = std::fs::File::create(self.0.join(name)).unwrap();
        f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn restartable(dir: &TempDir) -> AppOptions {
    with(|p| {
        p.restart_dir = dir.0.display().to_string();
        p.stat_throttle_rate = 0;
    })
}

#[tokio::test]
async fn restart_txt_rolls_processes_without_dropping_requests() {
    let dir = TempDir::new();
    dir.touch("restart.txt", 1000);
    let pool = Pool::new(Dummy::gated(1));
    let o = restartable(&dir);
    pool.spawner.open(1);
    let in_flight = pool.checkout(&o).await.unwrap();
    assert_eq!(in_flight.process.pid, 1000);
    let second = start(&pool, &o); // 1000 is busy: a spawn for this one
    settle().await;
    pool.spawner.open(1);
    assert_eq!(pid_of(second).await, 1001);
    settle().await;
    assert_eq!(pids(&pool, &o), vec![1000, 1001]);

    dir.touch("restart.txt", 2000);
    // The restart is noticed; old processes keep serving until new ones are ready.
    let during = pool.checkout(&o).await.unwrap();
    assert_eq!(
        during.process.pid, 1001,
        "an old process serves while the new one spawns"
    );
    assert!(group(&pool.snapshot(), &o).restarting);
    drop(during);
    pool.spawner.open(1); // the first new process (1002) is ready: the oldest old one drains
    settle().await;
    let s = pool.snapshot();
    let states: Vec<(u32, ProcessState)> = group(&s, &o)
        .processes
        .iter()
        .map(|p| (p.pid, p.state))
        .collect();
    assert!(
        states.contains(&(1000, ProcessState::Draining)),
        "{states:?}"
    );
    assert!(
        pool.spawner.stopped().is_empty(),
        "1000 still has its request"
    );
    let next = pool.checkout(&o).await.unwrap();
    assert_ne!(
        next.process.pid, 1000,
        "a draining process takes nothing new"
    );
    drop(next);
    drop(in_flight);
    settle().await;
    assert_eq!(pool.spawner.stopped(), vec![1000]);
    pool.spawner.open(1); // the second new process (1003) replaces 1001
    settle().await;
    assert_eq!(pool.spawner.stopped(), vec![1000, 1001]);
    assert_eq!(pids(&pool, &o), vec![1002, 1003]);
    assert!(!group(&pool.snapshot(), &o).restarting);
    // No further restart without a new mtime.
    drop(pool.checkout(&o).await.unwrap());
    settle().await;
    assert_eq!(pool.spawner.spawns(), 4);
}

#[tokio::test]
async fn rolling_restarts_off_stops_every_old_process_before_new_ones_serve() {
    let dir = TempDir::new();
    dir.touch("restart.txt", 1000);
    let pool = Pool::new(Dummy::new(1));
    let o = {
        let mut o = restartable(&dir);
        o.pool.rolling_restarts = false;
        o.pool.min_instances = 2;
        o
    };
    let in_flight = pool.checkout(&o).await.unwrap();
    settle().await;
    assert_eq!(pids(&pool, &o), vec![1000, 1001]);
    let busy = in_flight.process.pid;

    dir.touch("restart.txt", 2000);
    let waiting = start(&pool, &o);
    settle().await;
    assert!(!waiting.is_finished(), "no old process takes the request");
    assert_eq!(
        pool.spawner.spawns(),
        2,
        "no new process while an old one finishes its request"
    );
    let idle = if busy == 1000 { 1001 } else { 1000 };
    assert_eq!(
        pool.spawner.stopped(),
        vec![idle],
        "the idle old one stops at once"
    );
    drop(in_flight);
    let served = pid_of(waiting).await;
    assert!(served >= 1002, "a new process serves the request");
    settle().await;
    assert_eq!(pool.spawner.stopped(), vec![idle, busy]);
    assert_eq!(
        pids(&pool, &o),
        vec![1002, 1003],
        "min_instances new processes"
    );
}

#[tokio::test]
async fn a_restart_in_a_full_pool_replaces_the_process_in_place() {
    let dir = TempDir::new();
    let pool = Pool::new(Dummy::gated(1));
    let mut o = restartable(&dir);
    o.pool.max_pool_size = 1;
    pool.spawner.open(1);
    let in_flight = pool.checkout(&o).await.unwrap();
    dir.touch("restart.txt", 7000);
    let waiting = start(&pool, &o); // notices the restart; 1000 is busy
    settle().await;
    assert_eq!(pool.spawner.spawns(), 1, "no room for a second process");
    assert!(!waiting.is_finished());
    drop(in_flight); // the old process drains: it must not take the waiting request
    settle().await;
    assert_eq!(pool.spawner.stopped(), vec![1000]);
    assert_eq!(
        pool.spawner.spawns(),
        2,
        "the new process spawns in the freed slot"
    );
    pool.spawner.open(1);
    assert_eq!(pid_of(waiting).await, 1001);
}

#[tokio::test]
async fn restart_txt_present_at_start_is_not_a_restart() {
    let dir = TempDir::new();
    dir.touch("restart.txt", 1000);
    let pool = Pool::new(Dummy::new(1));
    let o = restartable(&dir);
    for _ in 0..3 {
        assert_eq!(pool.checkout(&o).await.unwrap().process.pid, 1000);
    }
    assert_eq!(pool.spawner.spawns(), 1);
}

#[tokio::test(start_paused = true)]
async fn restart_checks_are_throttled() {
    let dir = TempDir::new();
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| {
        p.restart_dir = dir.0.display().to_string();
        p.stat_throttle_rate = 10;
    });
    assert_eq!(pool.checkout(&o).await.unwrap().process.pid, 1000);
    dir.touch("restart.txt", 5000);
    assert_eq!(pool.checkout(&o).await.unwrap().process.pid, 1000);
    assert_eq!(pool.spawner.spawns(), 1, "not stat()ed again within 10 s");
    tokio::time::advance(Duration::from_secs(10)).await;
    drop(pool.checkout(&o).await.unwrap());
    settle().await;
    assert_eq!(pool.spawner.spawns(), 2, "noticed after the throttle time");
}

#[tokio::test]
async fn always_restart_txt_restarts_on_requests() {
    let dir = TempDir::new();
    let pool = Pool::new(Dummy::new(1));
    let o = restartable(&dir);
    assert_eq!(pool.checkout(&o).await.unwrap().process.pid, 1000);
    settle().await;
    dir.touch("always_restart.txt", 1);
    drop(pool.checkout(&o).await.unwrap());
    settle().await;
    assert_eq!(pids(&pool, &o), vec![1001]);
    drop(pool.checkout(&o).await.unwrap());
    settle().await;
    assert_eq!(pids(&pool, &o), vec![1002]);
}

#[tokio::test]
async fn always_restart_txt_does_not_restart_a_restart_under_way() {
    let dir = TempDir::new();
    let pool = Pool::new(Dummy::gated(1));
    let o = restartable(&dir);
    pool.spawner.open(1);
    drop(pool.checkout(&o).await.unwrap());
    dir.touch("always_restart.txt", 1);
    for _ in 0..5 {
        // Served by the old process while the new one spawns; no new restart each time.
        assert_eq!(pool.checkout(&o).await.unwrap().process.pid, 1000);
    }
    settle().await;
    assert_eq!(pool.spawner.spawns(), 2);
    assert_eq!(group(&pool.snapshot(), &o).restarts, 1);
    pool.spawner.open(1);
    settle().await;
    assert_eq!(pids(&pool, &o), vec![1001]);
}

#[tokio::test]
async fn a_crash_during_a_restart_is_replaced_and_the_restart_completes() {
    let dir = TempDir::new();
    let pool = Pool::new(Dummy::gated(1));
    let o = restartable(&dir);
    pool.spawner.open(1);
    drop(pool.checkout(&o).await.unwrap());
    dir.touch("restart.txt", 3000);
    let waiting = start(&pool, &o); // notices the restart, served by 1000
    assert_eq!(pid_of(waiting).await, 1000);
    settle().await;
    assert_eq!(pool.spawner.spawns(), 2, "the new process spawns");
    pool.spawner.kill(1000); // the old one crashes meanwhile
    settle().await;
    assert!(pids(&pool, &o).is_empty());
    let w = start(&pool, &o);
    settle().await;
    pool.spawner.open(1);
    assert_eq!(pid_of(w).await, 1001);
    settle().await;
    assert_eq!(pids(&pool, &o), vec![1001]);
    assert!(!group(&pool.snapshot(), &o).restarting);
}

// ---------------------------------------------------------------------------------------------
// 6. Observability and shutdown

#[tokio::test]
async fn snapshot_reports_groups_and_processes() {
    let pool = Pool::new(Dummy::new(1));
    let o = options();
    let held = pool.checkout(&o).await.unwrap();
    let s = pool.snapshot();
    assert_eq!(s.process_count, 1);
    let g = group(&s, &o);
    assert_eq!(g.sessions, 1);
    assert_eq!(g.processed, 1);
    assert_eq!(g.processes[0].pid, 1000);
    assert_eq!(g.processes[0].state, ProcessState::Active);
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["groups"][0]["processes"][0]["pid"], 1000);
    assert_eq!(json["groups"][0]["processes"][0]["state"], "active");
    assert_eq!(json["groups"][0]["queue_length"], 0);
    drop(held);
}

#[tokio::test]
async fn shutdown_refuses_new_checkouts_and_answers_waiters() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| p.max_pool_size = 1);
    let held = pool.checkout(&o).await.unwrap();
    let waiting = start(&pool, &o);
    settle().await;
    pool.shutdown().await;
    assert_eq!(
        waiting.await.unwrap().err(),
        Some(CheckoutError::ShuttingDown)
    );
    assert_eq!(pool.spawner.stopped(), vec![1000]);
    drop(held);
    assert!(matches!(
        pool.checkout(&o).await,
        Err(CheckoutError::ShuttingDown)
    ));
}

// ---------------------------------------------------------------------------------------------
// Recycling jitter and deployment errors

#[test]
fn recycle_points_spread_over_the_jitter_range() {
    let mut p = PoolOptions::defaults("/nonexistent");
    p.max_requests = 3;
    p.max_requests_jitter = 2;
    let seen: std::collections::BTreeSet<u64> = (0..1000).map(|_| recycle_point(&p)).collect();
    // 1000 draws from 3 values: a value missing would take odds below 1e-170.
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![3, 4, 5]);
    p.max_requests_jitter = 0;
    assert_eq!(recycle_point(&p), 3, "no jitter: exactly max_requests");
    p.max_requests = 0;
    p.max_requests_jitter = 5;
    assert_eq!(
        recycle_point(&p),
        0,
        "no max_requests: never recycled, whatever the jitter"
    );
}

#[tokio::test]
async fn a_jittered_process_recycles_within_its_range() {
    let pool = Pool::new(Dummy::new(1));
    let o = with(|p| {
        p.max_requests = 3;
        p.max_requests_jitter = 2;
    });
    let mut served_by_first = 0;
    loop {
        let pid = pool.checkout(&o).await.unwrap().process.pid;
        settle().await;
        if pid != 1000 {
            break;
        }
        served_by_first += 1;
        assert!(
            served_by_first <= 5,
            "1000 served more than max_requests + jitter"
        );
    }
    assert!((3..=5).contains(&served_by_first), "{served_by_first}");
    assert_eq!(pool.spawner.stopped(), vec![1000]);
}

/// A restart whose new version fails to spawn, with the old process 1000 serving.
async fn failed_deploy(resist: bool) -> (TempDir, Arc<Pool<Dummy>>, AppOptions) {
    let dir = TempDir::new();
    dir.touch("restart.txt", 1000);
    let pool = Pool::new(Dummy::new(1));
    let mut o = restartable(&dir);
    o.pool.resist_deployment_errors = resist;
    drop(pool.checkout(&o).await.unwrap());
    settle().await;
    pool.spawner.fail.store(true, Ordering::SeqCst);
    dir.touch("restart.txt", 2000);
    // The restart is noticed; the old process serves this one while the new version spawns
    // (and fails).
    let during = pool.checkout(&o).await.unwrap();
    assert_eq!(during.process.pid, 1000);
    settle().await;
    assert_eq!(pool.spawner.spawns(), 2, "the new version was tried");
    drop(during);
    settle().await;
    (dir, pool, o)
}

#[tokio::test]
async fn a_failed_deploy_stops_the_old_version_by_default() {
    let (_dir, pool, o) = failed_deploy(false).await;
    assert_eq!(
        pool.spawner.stopped(),
        vec![1000],
        "the old version stops once idle"
    );
    let next = pool.checkout(&o).await;
    assert!(
        matches!(next, Err(CheckoutError::Spawn(_))),
        "requests see the deploy's error"
    );
}

#[tokio::test]
async fn resist_deployment_errors_keeps_the_old_version_serving() {
    let (_dir, pool, o) = failed_deploy(true).await;
    assert!(pool.spawner.stopped().is_empty());
    let next = pool.checkout(&o).await.unwrap();
    assert_eq!(next.process.pid, 1000, "the old version goes on serving");
}

// ---------------------------------------------------------------------------------------------
// Out-of-band work

#[tokio::test(start_paused = true)]
async fn out_of_band_work_waits_for_requests_in_flight_and_holds_new_ones_back() {
    let pool = Pool::new(Dummy::new(2));
    let o = with(|p| p.max_pool_size = 1);
    let a = pool.checkout(&o).await.unwrap();
    let b = pool.checkout(&o).await.unwrap();
    assert_eq!(a.process.pid, b.process.pid, "concurrency 2: one process");
    let process = a.process.clone();
    let mut ready = pool.request_oob_work(&process).expect("an active process");
    assert!(
        pool.request_oob_work(&process).is_none(),
        "work already pending"
    );
    drop(a);
    // b is still in flight: the work waits, and a new request waits too (the pool is full and
    // the process takes no requests while work is pending).
    let waiting = start(&pool, &o);
    settle().await;
    assert!(
        ready.try_recv().is_err(),
        "work started with a request in flight"
    );
    assert!(
        !waiting.is_finished(),
        "a request was routed to a process with pending work"
    );
    drop(b);
    settle().await;
    assert!(
        ready.try_recv().is_ok(),
        "the work starts once the process is idle"
    );
    assert!(
        !waiting.is_finished(),
        "a request was routed during the work"
    );
    pool.finish_oob_work(&process);
    assert_eq!(pid_of(waiting).await, process.pid);
}
