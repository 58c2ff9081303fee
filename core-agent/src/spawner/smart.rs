//! Smart spawning. One preloader per app group and restart generation loads the app once
//! (`loaders/rack-preloader.rb`); each spawn connects to its socket, sends
//! `["spawn", <password>]` (a MessageChannel array), and gets back `["ok", <pid>]` with the
//! forked child's stdin, stdout and stderr pipes attached (SCM_RIGHTS). The child then speaks
//! the usual loader handshake over those pipes. Children share the preloader's memory
//! copy-on-write, and skip loading the app, which is what makes this fast.

use super::identity::Identity;
use super::launch::LaunchPlan;
use super::process::{Handle, Kind};
use super::start::StartContext;
use super::{SpawnConfig, into_spawned, random_password};
use crate::app_options::AppOptions;
use crate::pool::{SpawnError, SpawnedProcess};
use passenger_protocol::channel::{self, tokio_io};
use passenger_protocol::loader::SocketProtocol;
use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

const PRELOADER_SCRIPT: &str = "rack-preloader.rb";
/// A preloader answers a spawn command as soon as it has forked.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The preloaders, one slot per app group; a slot's lock serialises its spawn commands.
#[derive(Default)]
pub struct Preloaders {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Preloader>>>>>,
}

struct Preloader {
    generation: u64,
    identity: Identity,
    pid: u32,
    socket: PathBuf,
    password: String,
    /// How it was started: its children's command line and environment are the same.
    plan: Arc<LaunchPlan>,
    /// Dropping it stops the preloader.
    _stop: oneshot::Sender<()>,
    exited: oneshot::Receiver<()>,
}

/// A child a preloader just forked, before its handshake.
struct Forked {
    pid: u32,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

impl Preloader {
    fn alive(&mut self) -> bool {
        matches!(
            self.exited.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        )
    }

    async fn start(
        config: &SpawnConfig,
        options: &AppOptions,
        identity: Identity,
        generation: u64,
    ) -> Result<Preloader, SpawnError> {
        let began = std::time::Instant::now();
        let password = random_password();
        let idle = options.spawn.max_preloader_idle_time.to_string();
        let (running, plan) = config
            .launch(
                options,
                identity.clone(),
                PRELOADER_SCRIPT,
                Kind::Preloader,
                &password,
                &[("max_preloader_idle_time", &idle)],
            )
            .await?;
        if running.socket.protocol != SocketProtocol::Preloader {
            return Err(SpawnError {
                summary: format!(
                    "the preloader reported a {} socket instead of a preloader socket",
                    running.socket.protocol.name()
                ),
                ..SpawnError::default()
            });
        }
        tracing::info!(
            "Started preloader {} for {} as {} in {:.1} ms; it forks the app's processes",
            running.pid,
            options.app_root,
            identity.describe(),
            began.elapsed().as_secs_f64() * 1000.0
        );
        Ok(Preloader {
            generation,
            identity,
            pid: running.pid,
            socket: PathBuf::from(running.socket.path),
            password,
            plan: Arc::new(plan),
            _stop: running.stop,
            exited: running.exited,
        })
    }

    /// Asks the preloader for a child.
    async fn fork(&self) -> io::Result<Forked> {
        let mut stream = UnixStream::connect(&self.socket).await?;
        tokio_io::write_array(&mut stream, &["spawn", self.password.as_str()]).await?;
        let (items, fds) = tokio::time::timeout(COMMAND_TIMEOUT, read_reply(&stream))
            .await
            .map_err(|_| {
                io::Error::new(io::ErrorKind::TimedOut, "the preloader did not answer")
            })??;
        let text = |i: usize| {
            items
                .get(i)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        match text(0).as_str() {
            "ok" => {
                let pid: u32 = text(1).parse().map_err(|_| {
                    invalid(format!("the preloader answered a bad pid {:?}", text(1)))
                })?;
                let Ok([stdin, stdout, stderr]) = <[OwnedFd; 3]>::try_from(fds) else {
                    return Err(invalid(
                        "the preloader did not pass exactly three pipes".into(),
                    ));
                };
                Ok(Forked {
                    pid,
                    stdin,
                    stdout,
                    stderr,
                })
            }
            "error" => Err(io::Error::other(format!(
                "the preloader could not fork: {}",
                text(1)
            ))),
            other => Err(invalid(format!("the preloader answered {other:?}"))),
        }
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Reads one array message and the descriptors that came with it.
async fn read_reply(stream: &UnixStream) -> io::Result<(Vec<Vec<u8>>, Vec<OwnedFd>)> {
    let mut buf = Vec::new();
    let mut fds = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((items, _)) = channel::decode_array(&buf)? {
            return Ok((items, fds));
        }
        let (n, received) = tokio_io::recv_with_fds(stream, &mut chunk).await?;
        fds.extend(received);
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the preloader closed the connection without an answer",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl Preloaders {
    pub async fn spawn(
        &self,
        config: &SpawnConfig,
        options: &AppOptions,
        identity: Identity,
        generation: u64,
    ) -> Result<SpawnedProcess, SpawnError> {
        let slot = self
            .slots
            .lock()
            .unwrap()
            .entry(options.group_name.clone())
            .or_default()
            .clone();
        // The spawn time logged is the fork and the child's handshake; starting the preloader
        // is logged on its own.
        let (forked, plan, began) = {
            let mut preloader = slot.lock().await;
            let mut attempt = 0;
            loop {
                attempt += 1;
                // One of an earlier generation (a restart), for another identity, or one that
                // exited (its idle time passed) is replaced; dropping it stops it.
                if preloader.as_mut().is_some_and(|p| {
                    p.generation != generation || p.identity != identity || !p.alive()
                }) {
                    *preloader = None;
                }
                if preloader.is_none() {
                    *preloader = Some(
                        Preloader::start(config, options, identity.clone(), generation).await?,
                    );
                }
                let p = preloader.as_ref().expect("just started");
                let began = std::time::Instant::now();
                match p.fork().await {
                    Ok(forked) => break (forked, p.plan.clone(), began),
                    Err(e) => {
                        let pid = p.pid;
                        let plan = p.plan.clone();
                        *preloader = None;
                        if attempt == 1 {
                            tracing::warn!(
                                "Preloader {pid} of {} failed a spawn command ({e}); starting a \
                                 new preloader",
                                options.app_root
                            );
                            continue;
                        }
                        let ctx = StartContext {
                            options,
                            plan: &plan,
                            kind: Kind::App,
                            private_dir: PathBuf::new(),
                        };
                        return Err(ctx.failure(
                            format!("the preloader could not fork a process: {e}"),
                            String::new(),
                        ));
                    }
                }
            }
        };
        self.handshake_child(config, options, forked, &plan, began)
            .await
    }

    /// Runs the handshake with a freshly forked child, over the pipes it came with.
    async fn handshake_child(
        &self,
        config: &SpawnConfig,
        options: &AppOptions,
        forked: Forked,
        plan: &LaunchPlan,
        began: std::time::Instant,
    ) -> Result<SpawnedProcess, SpawnError> {
        let handle = Handle::forked(forked.pid);
        let private_dir = config.private_dir("a", &plan.identity);
        let mut ctx = StartContext {
            options,
            plan,
            kind: Kind::App,
            private_dir: PathBuf::new(),
        };
        let pipes = (
            pipe::Sender::from_owned_fd(forked.stdin),
            pipe::Receiver::from_owned_fd(forked.stdout),
            pipe::Receiver::from_owned_fd(forked.stderr),
        );
        let (dir, stdin, stdout, stderr) = match (private_dir, pipes) {
            (Ok(dir), (Ok(stdin), Ok(stdout), Ok(stderr))) => (dir, stdin, stdout, stderr),
            (Err(e), _) => {
                let mut handle = handle;
                handle.kill().await;
                return Err(ctx.failure(e, String::new()));
            }
            (Ok(dir), (a, b, c)) => {
                let _ = std::fs::remove_dir_all(&dir);
                let mut handle = handle;
                handle.kill().await;
                let e = [a.err(), b.err(), c.err()].into_iter().flatten().next();
                return Err(ctx.failure(
                    format!(
                        "the preloader passed something other than pipes: {}",
                        e.map(|e| e.to_string()).unwrap_or_default()
                    ),
                    String::new(),
                ));
            }
        };
        ctx.private_dir = dir.clone();
        let password = random_password();
        let text = config.handshake_options(options, &password, &dir, &[]);
        let running = ctx.complete(handle, stdin, stdout, stderr, &text).await?;
        Ok(into_spawned(running, password, "smart", began))
    }
}
