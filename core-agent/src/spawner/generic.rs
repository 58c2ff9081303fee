//! Generic apps (`passenger_app_start_command`, Phusion Passenger 6's "any language" apps):
//! no loader and no handshake. The core picks a free localhost TCP port, runs the command
//! through `/bin/sh -c` in the app root with `PORT` set to it (and the environment, identity
//! and limits of every app, see [`launch`](super::launch)), and takes the app as ready once
//! `127.0.0.1:PORT` accepts a connection, within `passenger_start_timeout`. The core then
//! speaks HTTP/1.1 to it, like to a Node.js app, over TCP.

use super::identity::Identity;
use super::launch::LaunchPlan;
use super::output::{self, OutputSink, StderrState};
use super::process::{self, Handle, Kind};
use super::start::StartContext;
use crate::app_options::AppOptions;
use crate::pool::{AppAddress, SpawnError, SpawnedProcess};
use passenger_protocol::loader::SocketProtocol;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::BufReader;
use tokio::sync::oneshot;

/// How long to wait for the rest of a failed app's output once it has exited.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// The first and the longest pause between two readiness probes.
const FIRST_PROBE_DELAY: Duration = Duration::from_millis(5);
const MAX_PROBE_DELAY: Duration = Duration::from_millis(250);

/// A localhost TCP port nothing listens on now (the kernel's pick). Another process could
/// take it before the app binds it; the readiness probe cannot tell, as in Phusion
/// Passenger.
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Resolves once `addr` accepts a connection, probing with a growing pause.
async fn accepting(addr: SocketAddr) {
    let mut delay = FIRST_PROBE_DELAY;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_PROBE_DELAY);
    }
}

/// Starts one process of a generic app and waits until it listens.
pub async fn spawn(options: &AppOptions, identity: Identity) -> Result<SpawnedProcess, SpawnError> {
    let began = Instant::now();
    let command = options.spawn.start_command.as_deref().unwrap_or_default();
    let port = match free_port() {
        Ok(port) => port,
        Err(e) => {
            let summary = format!("could not find a free localhost TCP port for the app: {e}");
            tracing::error!("Could not start the app in {}: {summary}", options.app_root);
            return Err(SpawnError {
                summary,
                ..SpawnError::default()
            });
        }
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let plan = LaunchPlan::start_command(options, identity, command, port);
    let ctx = StartContext {
        options,
        plan: &plan,
        kind: Kind::Generic,
        private_dir: PathBuf::new(),
    };
    let mut child = match plan.command().spawn() {
        Ok(child) => child,
        Err(e) => {
            return Err(ctx.failure(
                format!(
                    "could not execute {}: {e}; check that the app root exists and {} may enter it",
                    plan.program,
                    plan.identity.describe()
                ),
                String::new(),
            ));
        }
    };
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut handle = Handle::Child(child);
    let pid = handle.pid();
    tracing::debug!(
        "Started generic app {pid} for {} as {} on port {port}: {}",
        options.app_root,
        plan.identity.describe(),
        plan.command_text()
    );
    // Both streams are the app's own output: kept for the error message until it is ready,
    // logged from then on.
    let sink = OutputSink {
        pid,
        prefix: !options.spawn.disable_log_prefix,
    };
    let collected = StderrState::new();
    let readers = [
        tokio::spawn(output::forward_stderr(
            sink,
            BufReader::new(stdout),
            collected.clone(),
        )),
        tokio::spawn(output::forward_stderr(
            sink,
            BufReader::new(stderr),
            collected.clone(),
        )),
    ];
    let timeout = Duration::from_secs(options.spawn.start_timeout);
    let outcome = tokio::select! {
        _ = accepting(addr) => Ok(()),
        how = handle.wait() => Err(Some(how)),
        _ = tokio::time::sleep(timeout) => Err(None),
    };
    match outcome {
        Ok(()) => {
            collected.mark_ready(sink);
            let (stop_tx, stop_rx) = oneshot::channel();
            let (exit_tx, exit_rx) = oneshot::channel();
            tokio::spawn(process::supervise(
                handle,
                Kind::Generic,
                stdin,
                stop_rx,
                exit_tx,
                PathBuf::new(),
            ));
            tracing::info!(
                "Started app {pid} in {:.1} ms (generic app), listening on {}",
                began.elapsed().as_secs_f64() * 1000.0,
                AppAddress::Tcp(addr)
            );
            Ok(SpawnedProcess {
                pid,
                address: AppAddress::Tcp(addr),
                protocol: SocketProtocol::HttpSession,
                // Like a Node.js app: as many requests at once as it takes
                // (passenger_force_max_concurrent_requests_per_process can cap it).
                concurrency: 0,
                prefetch: 0,
                // Unused: plain HTTP carries no password.
                password: String::new(),
                stop: stop_tx,
                exited: exit_rx,
            })
        }
        Err(exited) => {
            let summary = match exited {
                Some(how) => format!(
                    "the app exited ({how}) before it listened on port {port} (its start \
                     command must make it listen on 127.0.0.1:$PORT)"
                ),
                None => format!(
                    "the app did not listen on 127.0.0.1:{port} ($PORT) within {} s \
                     (passenger_start_timeout) and was killed; make its start command listen \
                     on $PORT, or if it is merely slow to boot, raise passenger_start_timeout",
                    timeout.as_secs()
                ),
            };
            // The process group goes (a shell's children may hold the output pipes), then
            // the rest of its output is read.
            handle.kill().await;
            drop(stdin);
            let _ = tokio::time::timeout(OUTPUT_DRAIN, async {
                for reader in readers {
                    let _ = reader.await;
                }
            })
            .await;
            let output = collected.take_collected().join("\n");
            Err(ctx.failure(summary, output.trim().to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_free_port_is_found_and_readiness_seen_once_it_listens() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), accepting(addr))
                .await
                .is_err(),
            "nothing listens on {addr} yet"
        );
        let _listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), accepting(addr))
            .await
            .expect("the probe sees the listener");
    }
}
