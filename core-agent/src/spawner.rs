//! The direct spawner: starts `<ruby> <passenger_root>/loaders/rack-loader.rb` in the app
//! root, speaks the loader handshake over its stdin/stdout, forwards the app's output to the
//! log, and supervises the process until it exits.

use crate::app_options::AppOptions;
use crate::pool::{SpawnError, SpawnedProcess, Spawner};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use passenger_protocol::loader::{self, LoaderLine, SocketInfo};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::oneshot;

/// How long a loader may take from start to `!> Ready`.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(90);
/// Each step of a graceful stop: stdin closed, then SIGTERM, then SIGKILL.
pub const STOP_STEP: Duration = Duration::from_secs(5);
/// How long to wait for the rest of a failed loader's stderr once its stdout is closed.
const ERROR_DRAIN: Duration = Duration::from_secs(2);
/// App output lines longer than this are split.
const MAX_LINE: usize = 16 * 1024;

pub struct DirectSpawner {
    pub passenger_root: PathBuf,
    pub socket_dir: PathBuf,
    pub log_level: u8,
}

/// A fresh password for one app process: 43 URL-safe characters (258 bits).
pub fn random_password() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 43];
    getrandom::getrandom(&mut bytes).expect("the OS random number generator failed");
    bytes
        .iter()
        .map(|b| ALPHABET[(b & 63) as usize] as char)
        .collect()
}

/// Reads one line (without the newline), lossily decoded; `None` at EOF.
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Option<String> {
    buf.clear();
    loop {
        let available = match r.fill_buf().await {
            Ok(b) => b,
            Err(_) => return None,
        };
        if available.is_empty() {
            return if buf.is_empty() {
                None
            } else {
                Some(String::from_utf8_lossy(buf).into_owned())
            };
        }
        let room = MAX_LINE - buf.len();
        let take = available.len().min(room);
        if let Some(i) = available[..take].iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&available[..i]);
            r.consume(i + 1);
            break;
        }
        buf.extend_from_slice(&available[..take]);
        r.consume(take);
        if buf.len() >= MAX_LINE {
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Some(String::from_utf8_lossy(buf).into_owned())
}

/// What came of the handshake.
enum Handshake {
    Ready(SocketInfo),
    /// `!> Error`, or EOF without Ready; the text is what the loader said.
    Failed(String),
}

/// The loader's stderr, shared between the handshake (which collects it for error messages)
/// and the forwarding after Ready (which logs it).
struct StderrState {
    ready: AtomicBool,
    collected: Mutex<Vec<String>>,
}

impl DirectSpawner {
    fn loader_path(&self) -> PathBuf {
        self.passenger_root
            .join("loaders")
            .join(passenger_protocol::options::AppType::Rack.loader())
    }

    fn command_text(&self, options: &AppOptions) -> String {
        format!("{} {}", options.ruby, self.loader_path().display())
    }

    fn handshake_options(&self, options: &AppOptions, password: &str) -> String {
        let root = self.passenger_root.to_string_lossy();
        let socket_dir = self.socket_dir.to_string_lossy();
        let log_level = self.log_level.to_string();
        loader::encode_options([
            ("passenger_root", root.as_ref()),
            ("passenger_version", passenger_protocol::VERSION),
            ("app_root", options.app_root.as_str()),
            ("startup_file", options.startup_file.as_str()),
            ("app_type", options.app_type.name()),
            ("environment", options.app_env.as_str()),
            ("connect_password", password),
            ("socket_dir", socket_dir.as_ref()),
            ("base_uri", options.base_uri.as_str()),
            ("log_level", log_level.as_str()),
        ])
    }

    async fn spawn_process(&self, options: &AppOptions) -> Result<SpawnedProcess, SpawnError> {
        let command_text = self.command_text(options);
        let fail = |summary: String, output: String| {
            // One log line per event: the summary, then each line of the loader's output.
            let lines = output.trim_end().lines().count();
            tracing::error!(
                "Could not start the app in {}: {summary}. Command: {command_text}; cwd {}. {}",
                options.app_root,
                options.app_root,
                if lines == 0 {
                    "The loader printed nothing".to_string()
                } else {
                    format!(
                        "The loader's output ({lines} lines) follows; fix the app and reload the page"
                    )
                }
            );
            for line in output.trim_end().lines() {
                tracing::error!("Loader output for {}: {line}", options.app_root);
            }
            SpawnError { summary, output }
        };

        let mut cmd = Command::new(&options.ruby);
        cmd.arg(self.loader_path())
            .current_dir(&options.app_root)
            .env("RACK_ENV", &options.app_env)
            .env("RAILS_ENV", &options.app_env)
            .env("PASSENGER_APP_ENV", &options.app_env)
            .env("IN_PASSENGER", "1")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C meant for the core does not hit the app, and a
            // stop can reach the app's own children too.
            .process_group(0)
            // Until it is ready the spawn may be abandoned (shutdown); then it must not linger.
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound
                    if !std::path::Path::new(&options.app_root).is_dir() =>
                {
                    format!(
                        "the app root {} does not exist; check passenger_app_root / root",
                        options.app_root
                    )
                }
                std::io::ErrorKind::NotFound => format!(
                    "the Ruby interpreter {:?} was not found; install Ruby or set passenger_ruby",
                    options.ruby
                ),
                _ => "check that the app root is accessible and Ruby is executable".into(),
            };
            fail(
                format!("could not execute {}: {e}; {hint}", options.ruby),
                String::new(),
            )
        })?;
        let pid = child.id().unwrap_or(0);
        tracing::debug!(
            "Started loader {pid} for {}: {command_text}",
            options.app_root
        );
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let stderr = BufReader::new(child.stderr.take().expect("piped stderr"));

        let stderr_state = Arc::new(StderrState {
            ready: AtomicBool::new(false),
            collected: Mutex::new(Vec::new()),
        });
        let stderr_task = tokio::spawn(forward_stderr(pid, stderr, stderr_state.clone()));

        let password = random_password();
        let greeting = self.handshake_options(options, &password);
        let mut output: Vec<String> = Vec::new();
        let result = tokio::time::timeout(
            SPAWN_TIMEOUT,
            handshake(pid, &mut stdout, &mut stdin, &greeting, &mut output),
        )
        .await;
        let collect = |output: Vec<String>| {
            let mut all = output;
            all.extend(stderr_state.collected.lock().unwrap().drain(..));
            all.join("\n")
        };

        match result {
            Ok(Handshake::Ready(socket)) => {
                stderr_state.ready.store(true, Ordering::SeqCst);
                for line in stderr_state.collected.lock().unwrap().drain(..) {
                    tracing::info!("App {pid} output: {line}");
                }
                tracing::info!(
                    "Started app {pid} for {} ({}), listening on {}, concurrency {}",
                    options.app_root,
                    options.app_env,
                    socket.path,
                    socket.concurrency
                );
                tokio::spawn(forward_stdout(pid, stdout));
                let (stop_tx, stop_rx) = oneshot::channel();
                let (exit_tx, exit_rx) = oneshot::channel();
                let socket_path = PathBuf::from(&socket.path);
                tokio::spawn(supervise(
                    child,
                    stdin,
                    pid,
                    stop_rx,
                    exit_tx,
                    socket_path.clone(),
                    self.socket_dir.clone(),
                ));
                Ok(SpawnedProcess {
                    pid,
                    socket_path,
                    protocol: socket.protocol,
                    concurrency: socket.concurrency,
                    password,
                    stop: stop_tx,
                    exited: exit_rx,
                })
            }
            Ok(Handshake::Failed(text)) => {
                drop(stdin);
                let status = wait_briefly(&mut child).await;
                let _ = tokio::time::timeout(ERROR_DRAIN, stderr_task).await;
                let mut all = collect(output);
                if !text.is_empty() {
                    all = text + "\n" + &all;
                }
                Err(fail(
                    format!("the loader failed before it became ready ({status})"),
                    all.trim().to_string(),
                ))
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                let _ = child.wait().await;
                let _ = tokio::time::timeout(ERROR_DRAIN, stderr_task).await;
                Err(fail(
                    format!(
                        "the loader did not become ready within {} s and was killed; if the app \
                         is merely slow to boot, make it faster to load",
                        SPAWN_TIMEOUT.as_secs()
                    ),
                    collect(output),
                ))
            }
        }
    }
}

impl Spawner for DirectSpawner {
    async fn spawn(&self, options: &AppOptions) -> Result<SpawnedProcess, SpawnError> {
        self.spawn_process(options).await
    }
}

/// Runs the handshake. Protocol and app lines seen along the way go to `output`, so that a
/// failure (or a timeout) can show them.
async fn handshake<R: AsyncBufRead + Unpin>(
    pid: u32,
    stdout: &mut R,
    stdin: &mut ChildStdin,
    greeting: &str,
    output: &mut Vec<String>,
) -> Handshake {
    let mut buf = Vec::new();
    // The greeting; anything printed before it is the app's (or Ruby's) own output.
    loop {
        let Some(line) = read_line(stdout, &mut buf).await else {
            return Handshake::Failed(String::new());
        };
        match loader::parse_line(&line) {
            LoaderLine::Greeting => break,
            LoaderLine::Error => return error_block(stdout, output).await,
            _ => output.push(line),
        }
    }
    if let Err(e) = stdin.write_all(greeting.as_bytes()).await {
        output.push(format!("(could not send the options to the loader: {e})"));
        return Handshake::Failed(String::new());
    }
    let _ = stdin.flush().await;
    let mut ready = false;
    let mut socket = None;
    loop {
        let Some(line) = read_line(stdout, &mut buf).await else {
            return Handshake::Failed(String::new());
        };
        match loader::parse_line(&line) {
            LoaderLine::Ready => ready = true,
            LoaderLine::Socket(info) if ready => socket = Some(info),
            LoaderLine::Terminator if ready => {
                return match socket {
                    Some(s) => Handshake::Ready(s),
                    None => Handshake::Failed(
                        "the loader said it was ready but reported no socket".into(),
                    ),
                };
            }
            LoaderLine::Error => return error_block(stdout, output).await,
            LoaderLine::AppOutput(text) => {
                tracing::info!("App {pid} output: {text}");
                output.push(text);
            }
            _ => {
                tracing::debug!("Loader {pid} sent an unexpected protocol line: {line}");
                output.push(line);
            }
        }
    }
}

/// After `!> Error`: everything else on stdout until EOF is the message.
async fn error_block<R: AsyncBufRead + Unpin>(
    stdout: &mut R,
    output: &mut Vec<String>,
) -> Handshake {
    let mut buf = Vec::new();
    let mut message = Vec::new();
    while let Some(line) = read_line(stdout, &mut buf).await {
        match loader::parse_line(&line) {
            LoaderLine::Html(_) | LoaderLine::Terminator => {}
            LoaderLine::Protocol(text) | LoaderLine::AppOutput(text) => message.push(text),
            _ => message.push(line),
        }
    }
    let mut text = message.join("\n");
    if !output.is_empty() {
        text = std::mem::take(output).join("\n") + "\n" + &text;
    }
    Handshake::Failed(text)
}

async fn wait_briefly(child: &mut Child) -> String {
    match tokio::time::timeout(ERROR_DRAIN, child.wait()).await {
        Ok(Ok(status)) => describe(status),
        _ => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            "killed: it did not exit after reporting the error".into()
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {s}"),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => status.to_string(),
    }
}

async fn forward_stderr<R: AsyncBufRead + Unpin>(pid: u32, mut r: R, state: Arc<StderrState>) {
    let mut buf = Vec::new();
    while let Some(line) = read_line(&mut r, &mut buf).await {
        if state.ready.load(Ordering::SeqCst) {
            tracing::info!("App {pid} output: {line}");
        } else {
            let mut collected = state.collected.lock().unwrap();
            // Re-check under the lock: Ready drains the buffer while holding it.
            if state.ready.load(Ordering::SeqCst) {
                tracing::info!("App {pid} output: {line}");
            } else {
                collected.push(line);
            }
        }
    }
}

async fn forward_stdout<R: AsyncBufRead + Unpin>(pid: u32, mut r: R) {
    let mut buf = Vec::new();
    while let Some(line) = read_line(&mut r, &mut buf).await {
        match loader::parse_line(&line) {
            LoaderLine::AppOutput(text) => tracing::info!("App {pid} output: {text}"),
            _ => tracing::debug!("App {pid} protocol line after ready: {line}"),
        }
    }
}

/// Owns the child until it exits. A stop request (or the pool dropping the process) closes
/// its stdin, then after [`STOP_STEP`] sends SIGTERM, then SIGKILL, to its process group.
async fn supervise(
    mut child: Child,
    stdin: ChildStdin,
    pid: u32,
    stop: oneshot::Receiver<()>,
    exited: oneshot::Sender<()>,
    socket_path: PathBuf,
    socket_dir: PathBuf,
) {
    let status = tokio::select! {
        status = child.wait() => {
            let how = status.map(describe).unwrap_or_else(|e| e.to_string());
            tracing::warn!(
                "App {pid} exited unexpectedly ({how}); it is removed from the pool and the next \
                 request starts a new one. Its output above may tell why"
            );
            None
        }
        _ = stop => Some(()),
    };
    drop(stdin);
    if status.is_some() {
        let mut how = match tokio::time::timeout(STOP_STEP, child.wait()).await {
            Ok(s) => s.map(describe).ok(),
            Err(_) => None,
        };
        if how.is_none() {
            tracing::warn!(
                "App {pid} did not exit within {} s of its stdin closing; sending SIGTERM",
                STOP_STEP.as_secs()
            );
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
            how = match tokio::time::timeout(STOP_STEP, child.wait()).await {
                Ok(s) => s.map(describe).ok(),
                Err(_) => None,
            };
        }
        if how.is_none() {
            tracing::warn!(
                "App {pid} did not exit within {} s of SIGTERM; sending SIGKILL",
                STOP_STEP.as_secs()
            );
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            how = child.wait().await.map(describe).ok();
        }
        tracing::info!(
            "App {pid} stopped ({})",
            how.unwrap_or_else(|| "status unknown".into())
        );
    }
    // A loader killed before it could clean up leaves its socket behind.
    if socket_path.starts_with(&socket_dir) && socket_path.exists() {
        let _ = std::fs::remove_file(&socket_path);
    }
    let _ = exited.send(());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_fresh_and_url_safe() {
        let a = random_password();
        let b = random_password();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[tokio::test]
    async fn reads_lines() {
        let data: &[u8] = b"one\r\ntwo\nlast";
        let mut r = BufReader::new(data);
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut r, &mut buf).await.as_deref(), Some("one"));
        assert_eq!(read_line(&mut r, &mut buf).await.as_deref(), Some("two"));
        assert_eq!(read_line(&mut r, &mut buf).await.as_deref(), Some("last"));
        assert_eq!(read_line(&mut r, &mut buf).await, None);
    }
}
