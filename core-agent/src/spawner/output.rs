//! App output: every line an app process writes to stdout or stderr goes to the log as
//! `App <pid> output: <line>` (or bare, with `passenger_disable_log_prefix`). Lines pass
//! through a bounded queue to one writer thread, so an app never waits for a slow log: when
//! the queue is full, lines are counted as dropped and the count is logged.

use super::handshake::read_line;
use passenger_protocol::loader::{self, LoaderLine};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::AsyncBufRead;

/// Lines waiting for the log writer.
const QUEUE: usize = 8192;

struct Line {
    pid: u32,
    prefix: bool,
    text: String,
}

static WRITER: OnceLock<SyncSender<Line>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn writer() -> &'static SyncSender<Line> {
    WRITER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Line>(QUEUE);
        std::thread::Builder::new()
            .name("app-output".into())
            .spawn(move || {
                for line in rx {
                    let dropped = DROPPED.swap(0, Ordering::Relaxed);
                    if dropped > 0 {
                        tracing::warn!(
                            "{dropped} lines of app output were dropped because the log could \
                             not keep up"
                        );
                    }
                    if line.prefix {
                        tracing::info!("App {} output: {}", line.pid, line.text);
                    } else {
                        tracing::info!("{}", line.text);
                    }
                }
            })
            .expect("cannot start the app output thread");
        tx
    })
}

/// Where one process's output goes.
#[derive(Clone, Copy)]
pub struct OutputSink {
    pub pid: u32,
    pub prefix: bool,
}

impl OutputSink {
    pub fn log(&self, text: &str) {
        let line = Line {
            pid: self.pid,
            prefix: self.prefix,
            text: text.to_string(),
        };
        match writer().try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// A process's stderr until it is ready: collected for an error message, then logged.
pub struct StderrState {
    ready: AtomicBool,
    collected: Mutex<Vec<String>>,
}

impl StderrState {
    pub fn new() -> Arc<StderrState> {
        Arc::new(StderrState {
            ready: AtomicBool::new(false),
            collected: Mutex::new(Vec::new()),
        })
    }

    /// The process is ready: what was collected goes to the log, and so does all that follows.
    pub fn mark_ready(&self, sink: OutputSink) {
        let mut collected = self.collected.lock().unwrap();
        self.ready.store(true, Ordering::SeqCst);
        for line in collected.drain(..) {
            sink.log(&line);
        }
    }

    pub fn take_collected(&self) -> Vec<String> {
        std::mem::take(&mut *self.collected.lock().unwrap())
    }
}

pub async fn forward_stderr<R: AsyncBufRead + Unpin>(
    sink: OutputSink,
    mut r: R,
    state: Arc<StderrState>,
) {
    let mut buf = Vec::new();
    while let Some(line) = read_line(&mut r, &mut buf).await {
        if state.ready.load(Ordering::SeqCst) {
            sink.log(&line);
            continue;
        }
        let mut collected = state.collected.lock().unwrap();
        // Re-check under the lock: mark_ready drains the buffer while holding it.
        if state.ready.load(Ordering::SeqCst) {
            sink.log(&line);
        } else {
            collected.push(line);
        }
    }
}

pub async fn forward_stdout<R: AsyncBufRead + Unpin>(sink: OutputSink, mut r: R) {
    let mut buf = Vec::new();
    while let Some(line) = read_line(&mut r, &mut buf).await {
        match loader::parse_line(&line) {
            LoaderLine::AppOutput(text) => sink.log(&text),
            _ => tracing::debug!("App {} protocol line after ready: {line}", sink.pid),
        }
    }
}
