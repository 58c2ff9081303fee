//! Starting app processes. Two methods, chosen by `passenger_spawn_method`:
//! - direct: every process is a fresh `<interpreter> <loader>` (see [`AppSpawner::spawn_direct`]);
//! - smart (Ruby's default): a preloader loads the app once and forks a ready child per
//!   spawn, the children sharing its memory copy-on-write (see [`smart`]).
//!
//! A generic app (`passenger_app_start_command`) has no loader: its command is run directly
//! and it is ready when it listens on the TCP port it was given (see [`generic`]).
//!
//! Either way a process starts from a clean slate ([`launch`]), as the user the
//! user-switching rules pick ([`identity`]), speaks the loader handshake ([`handshake`],
//! [`start`]), has its output logged ([`output`]) and is supervised until it exits
//! ([`process`]).

mod generic;
mod handshake;
mod identity;
mod launch;
mod output;
mod process;
mod smart;
mod start;

use crate::app_options::{AppOptions, SpawnMethod};
use crate::pool::{AppAddress, SpawnError, SpawnedProcess, Spawner};
use identity::Identity;
use launch::LaunchPlan;
use passenger_protocol::loader;
use passenger_protocol::options::AppType;
use process::{Handle, Kind};
use start::{Running, StartContext};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What every spawn needs to know about this instance.
pub struct SpawnConfig {
    pub passenger_root: PathBuf,
    /// `apps.s` of the instance directory: each process gets a private directory inside.
    pub socket_dir: PathBuf,
    pub log_level: u8,
}

impl SpawnConfig {
    fn script(&self, name: &str) -> PathBuf {
        self.passenger_root.join("loaders").join(name)
    }

    /// A fresh directory for one process's socket, only its user may enter. Its name is
    /// short: a unix socket path must fit in 108 bytes.
    fn private_dir(&self, prefix: &str, identity: &Identity) -> Result<PathBuf, String> {
        let dir = self
            .socket_dir
            .join(format!("{prefix}.{}", &random_password()[..8]));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create the socket directory {}: {e}", dir.display()))?;
        if identity.switch {
            nix::unistd::chown(&dir, Some(identity.uid), Some(identity.gid)).map_err(|e| {
                format!(
                    "cannot give {} to {}: {e}",
                    dir.display(),
                    identity.describe()
                )
            })?;
        }
        Ok(dir)
    }

    /// The options block of the handshake.
    fn handshake_options(
        &self,
        options: &AppOptions,
        password: &str,
        private_dir: &Path,
        extra: &[(&str, &str)],
    ) -> String {
        let root = self.passenger_root.to_string_lossy();
        let socket_dir = private_dir.to_string_lossy();
        let log_level = self.log_level.to_string();
        let thread_count = options.spawn.thread_count.to_string();
        loader::encode_options(
            [
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
                ("thread_count", thread_count.as_str()),
                (
                    "preload_bundler",
                    if options.spawn.preload_bundler {
                        "true"
                    } else {
                        "false"
                    },
                ),
            ]
            .into_iter()
            .chain(extra.iter().copied()),
        )
    }

    /// Starts `script` for the app and runs the handshake: a direct spawn, or a preloader.
    async fn launch(
        &self,
        options: &AppOptions,
        identity: Identity,
        script: &str,
        kind: Kind,
        password: &str,
        extra: &[(&str, &str)],
    ) -> Result<(Running, LaunchPlan), SpawnError> {
        let plan = LaunchPlan::new(options, identity, &self.script(script));
        let prefix = if kind == Kind::Preloader {
            "preloader"
        } else {
            "app"
        };
        let private_dir = match self.private_dir(prefix, &plan.identity) {
            Ok(dir) => dir,
            Err(e) => {
                let ctx = StartContext {
                    options,
                    plan: &plan,
                    kind,
                    private_dir: PathBuf::new(),
                };
                return Err(ctx.failure(e, String::new()));
            }
        };
        let ctx = StartContext {
            options,
            plan: &plan,
            kind,
            private_dir: private_dir.clone(),
        };
        let mut child = match plan.command().spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&private_dir);
                return Err(ctx.failure(exec_failure(options, &plan, &e), String::new()));
            }
        };
        tracing::debug!(
            "Started {} {} for {} as {}: {}",
            if kind == Kind::Preloader {
                "preloader"
            } else {
                "loader"
            },
            child.id().unwrap_or(0),
            options.app_root,
            plan.identity.describe(),
            plan.command_text()
        );
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let text = self.handshake_options(options, password, &private_dir, extra);
        let running = ctx
            .complete(Handle::Child(child), stdin, stdout, stderr, &text)
            .await?;
        Ok((running, plan))
    }
}

/// Why exec failed, with a hint.
fn exec_failure(options: &AppOptions, plan: &LaunchPlan, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        std::io::ErrorKind::NotFound if !Path::new(&options.app_root).is_dir() => format!(
            "the app root {} does not exist; check passenger_app_root / root",
            options.app_root
        ),
        std::io::ErrorKind::NotFound => format!(
            "the interpreter {:?} was not found; install it or set passenger_{}",
            plan.program,
            match options.app_type {
                AppType::Rack => "ruby",
                AppType::Wsgi => "python",
                AppType::Node => "nodejs",
                AppType::Generic => "app_start_command",
            }
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "{} may not enter the app root or run the interpreter; check their permissions",
            plan.identity.describe()
        ),
        _ => "check that the app root is accessible and the interpreter executable".into(),
    };
    format!("could not execute {}: {e}; {hint}", plan.program)
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

/// The spawner the core runs with.
pub struct AppSpawner {
    config: Arc<SpawnConfig>,
    preloaders: smart::Preloaders,
}

impl AppSpawner {
    pub fn new(config: SpawnConfig) -> AppSpawner {
        AppSpawner {
            config: Arc::new(config),
            preloaders: smart::Preloaders::default(),
        }
    }

    async fn spawn_direct(
        &self,
        options: &AppOptions,
        identity: Identity,
    ) -> Result<SpawnedProcess, SpawnError> {
        let began = std::time::Instant::now();
        let Some(loader) = options.app_type.loader() else {
            return generic::spawn(options, identity).await;
        };
        let password = random_password();
        let (running, _) = self
            .config
            .launch(options, identity, loader, Kind::App, &password, &[])
            .await?;
        Ok(into_spawned(running, password, "direct", began))
    }
}

/// The pool's view of a ready process; logs how long the spawn took since `began`.
fn into_spawned(
    running: Running,
    password: String,
    method: &str,
    began: std::time::Instant,
) -> SpawnedProcess {
    tracing::info!(
        "Started app {} in {:.1} ms ({method} spawn), listening on {}, concurrency {}, prefetch {}",
        running.pid,
        began.elapsed().as_secs_f64() * 1000.0,
        running.socket.path,
        running.socket.concurrency,
        running.socket.prefetch
    );
    SpawnedProcess {
        pid: running.pid,
        address: AppAddress::Unix(PathBuf::from(running.socket.path)),
        protocol: running.socket.protocol,
        concurrency: running.socket.concurrency,
        prefetch: running.socket.prefetch,
        password,
        stop: running.stop,
        exited: running.exited,
    }
}

impl Spawner for AppSpawner {
    async fn spawn(
        &self,
        options: &AppOptions,
        generation: u64,
    ) -> Result<SpawnedProcess, SpawnError> {
        let identity = match identity::resolve(options) {
            Ok(identity) => identity,
            Err(e) => {
                tracing::error!("Could not start the app in {}: {e}", options.app_root);
                return Err(SpawnError {
                    summary: e,
                    ..SpawnError::default()
                });
            }
        };
        match (options.spawn.method, options.app_type) {
            (SpawnMethod::Smart, AppType::Rack) => {
                self.preloaders
                    .spawn(&self.config, options, identity, generation)
                    .await
            }
            _ => self.spawn_direct(options, identity).await,
        }
    }
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
}
