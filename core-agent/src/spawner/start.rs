//! The part of every spawn that follows the process's creation, whoever created it (the core,
//! or a preloader's fork): the handshake within `passenger_start_timeout`, then output
//! forwarding and supervision; or, when it fails, a [`SpawnError`] that says why, with the
//! app's output, the command and the environment.

use super::handshake::{self, Handshake};
use super::launch::LaunchPlan;
use super::output::{self, OutputSink, StderrState};
use super::process::{self, Handle, Kind};
use crate::app_options::AppOptions;
use crate::pool::SpawnError;
use passenger_protocol::loader::SocketInfo;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::oneshot;

/// How long to wait for the rest of a failed loader's stderr once its stdout is closed.
const ERROR_DRAIN: Duration = Duration::from_secs(2);

/// What a spawn is about, for its handshake and its error messages.
pub struct StartContext<'a> {
    pub options: &'a AppOptions,
    pub plan: &'a LaunchPlan,
    pub kind: Kind,
    /// The process's private directory (its socket goes there); removed when it exits.
    pub private_dir: PathBuf,
}

/// A process that completed the handshake and is supervised.
pub struct Running {
    pub pid: u32,
    pub socket: SocketInfo,
    /// Sending on (or dropping) this asks the process to stop gracefully.
    pub stop: oneshot::Sender<()>,
    /// Completes when the process has exited.
    pub exited: oneshot::Receiver<()>,
}

impl StartContext<'_> {
    /// Logs a failed spawn (one line for the event, then the output) and describes it.
    pub fn failure(&self, summary: String, output: String) -> SpawnError {
        let options = self.options;
        let command = self.plan.command_text();
        let lines = output.trim_end().lines().count();
        let (printed, output_of) = if self.kind == Kind::Generic {
            ("The app printed nothing", "The app's output")
        } else {
            ("The loader printed nothing", "The loader's output")
        };
        tracing::error!(
            "Could not start the app in {}: {summary}. Command: {command}; cwd {}; user {}. {}",
            options.app_root,
            options.app_root,
            self.plan.identity.describe(),
            if lines == 0 {
                printed.to_string()
            } else {
                format!("{output_of} ({lines} lines) follows; fix the app and reload the page")
            }
        );
        let label = if self.kind == Kind::Generic {
            "App output"
        } else {
            "Loader output"
        };
        for line in output.trim_end().lines() {
            tracing::error!("{label} for {}: {line}", options.app_root);
        }
        SpawnError {
            summary,
            output,
            command,
            environment: self.plan.environment_text(),
            user: self.plan.identity.describe(),
        }
    }

    /// Runs the handshake on the process's pipes and, once it is ready, hands the pipes to
    /// the output forwarders and the process to its supervisor.
    pub async fn complete<W, R, E>(
        &self,
        mut handle: Handle,
        mut stdin: W,
        stdout: R,
        stderr: E,
        options_text: &str,
    ) -> Result<Running, SpawnError>
    where
        W: AsyncWrite + Unpin + Send + 'static,
        R: AsyncRead + Unpin + Send + 'static,
        E: AsyncRead + Unpin + Send + 'static,
    {
        let pid = handle.pid();
        let sink = OutputSink {
            pid,
            prefix: !self.options.spawn.disable_log_prefix,
        };
        let mut stdout = BufReader::new(stdout);
        let stderr_state = StderrState::new();
        let stderr_task = tokio::spawn(output::forward_stderr(
            sink,
            BufReader::new(stderr),
            stderr_state.clone(),
        ));
        let timeout = Duration::from_secs(self.options.spawn.start_timeout);
        let mut seen: Vec<String> = Vec::new();
        let result = tokio::time::timeout(
            timeout,
            handshake::run(&mut stdout, &mut stdin, options_text, &mut seen, |line| {
                sink.log(line)
            }),
        )
        .await;
        let collect = |seen: Vec<String>| {
            let mut all = seen;
            all.extend(stderr_state.take_collected());
            all.join("\n")
        };
        match result {
            Ok(Handshake::Ready(socket)) => {
                stderr_state.mark_ready(sink);
                tokio::spawn(output::forward_stdout(sink, stdout));
                let (stop_tx, stop_rx) = oneshot::channel();
                let (exit_tx, exit_rx) = oneshot::channel();
                tokio::spawn(process::supervise(
                    handle,
                    self.kind,
                    stdin,
                    stop_rx,
                    exit_tx,
                    self.private_dir.clone(),
                ));
                Ok(Running {
                    pid,
                    socket,
                    stop: stop_tx,
                    exited: exit_rx,
                })
            }
            Ok(Handshake::Failed(text)) => {
                drop(stdin);
                let status = handle.wait_or_kill(ERROR_DRAIN).await;
                let _ = tokio::time::timeout(ERROR_DRAIN, stderr_task).await;
                let _ = std::fs::remove_dir_all(&self.private_dir);
                let mut all = collect(seen);
                if !text.is_empty() {
                    all = text + "\n" + &all;
                }
                Err(self.failure(
                    format!("the loader failed before it became ready ({status})"),
                    all.trim().to_string(),
                ))
            }
            Err(_) => {
                handle.kill().await;
                let _ = tokio::time::timeout(ERROR_DRAIN, stderr_task).await;
                let _ = std::fs::remove_dir_all(&self.private_dir);
                Err(self.failure(
                    format!(
                        "the app did not become ready within {} s (passenger_start_timeout) and \
                         was killed; if it is merely slow to boot, raise passenger_start_timeout",
                        timeout.as_secs()
                    ),
                    collect(seen),
                ))
            }
        }
    }
}
