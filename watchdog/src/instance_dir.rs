//! The instance directory (layout in `passenger_protocol::instance`): created at start,
//! locked while the watchdog lives, removed when it stops.

use crate::process::random_token;
use passenger_protocol::instance::{self as layout, IntegrationMode, Properties};
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub struct InstanceDir {
    pub path: PathBuf,
    /// Held open with an exclusive flock for as long as the instance lives.
    _lock: fs::File,
}

impl InstanceDir {
    pub fn create(
        registry: &Path,
        mode: IntegrationMode,
        server_software: &str,
    ) -> Result<InstanceDir, String> {
        fs::create_dir_all(registry).map_err(|e| {
            format!(
                "cannot create the instance registry dir {}: {e}",
                registry.display()
            )
        })?;
        let template = registry.join(format!("{}XXXXXXX", layout::DIR_PREFIX));
        let path = nix::unistd::mkdtemp(&template).map_err(|e| {
            format!(
                "cannot create an instance directory in {}: {e}",
                registry.display()
            )
        })?;
        let dir = || -> std::io::Result<InstanceDir> {
            // nginx workers (often another user) must reach agents.s/core: traversable, and
            // the socket itself is password-protected.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
            fs::create_dir(path.join(layout::AGENTS_DIR))?;
            fs::set_permissions(
                path.join(layout::AGENTS_DIR),
                fs::Permissions::from_mode(0o755),
            )?;
            // App users must reach their own private directory inside apps.s, but not list
            // the others'.
            fs::create_dir(path.join(layout::APPS_DIR))?;
            fs::set_permissions(
                path.join(layout::APPS_DIR),
                fs::Permissions::from_mode(0o711),
            )?;
            let lock = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path.join(layout::LOCK))?;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let pid = std::process::id();
            fs::write(path.join(layout::WATCHDOG_PID), format!("{pid}\n"))?;
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let properties = Properties {
                instance_id: name.trim_start_matches(layout::DIR_PREFIX).to_string(),
                name,
                integration_mode: mode,
                server_software: server_software.to_string(),
                passenger_version: passenger_protocol::VERSION.to_string(),
                watchdog_pid: pid,
                created_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs(),
            };
            fs::write(
                path.join(layout::PROPERTIES),
                serde_json::to_vec_pretty(&properties)?,
            )?;
            for file in [
                layout::READ_ONLY_ADMIN_PASSWORD,
                layout::FULL_ADMIN_PASSWORD,
            ] {
                write_private(&path.join(file), &random_token(32))?;
            }
            Ok(InstanceDir {
                path: path.clone(),
                _lock: lock,
            })
        };
        dir().map_err(|e| {
            let _ = fs::remove_dir_all(&path);
            format!(
                "cannot set up the instance directory {}: {e}",
                path.display()
            )
        })
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn write_file(&self, name: &str, content: &str) {
        if let Err(e) = fs::write(self.join(name), content) {
            crate::log::error(&format!("cannot write {}: {e}", self.join(name).display()));
        }
    }

    pub fn remove(self) {
        passenger_protocol::instance::remove_short_apps_dir(&self.path);
        if let Err(e) = fs::remove_dir_all(&self.path) {
            crate::log::error(&format!(
                "cannot remove the instance directory {}: {e}",
                self.path.display()
            ));
        }
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)?
        .write_all(content.as_bytes())
}
