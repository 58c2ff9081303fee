//! The instance directory: `passenger.XXXXXXX` under the registry dir, owned by one running
//! watchdog. Its layout follows Phusion Passenger's because tools and scripts rely on it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

pub const DIR_PREFIX: &str = "passenger.";
pub const PROPERTIES: &str = "properties.json";
pub const LOCK: &str = "lock";
pub const CREATION_FINALIZED: &str = "creation_finalized";
pub const WATCHDOG_PID: &str = "watchdog.pid";
pub const CORE_PID: &str = "core.pid";
pub const READ_ONLY_ADMIN_PASSWORD: &str = "read_only_admin_password.txt";
pub const FULL_ADMIN_PASSWORD: &str = "full_admin_password.txt";
pub const AGENTS_DIR: &str = "agents.s";
pub const APPS_DIR: &str = "apps.s";
/// When `<instance>/apps.s` is too long a path for the app sockets in it, the core puts them in
/// a short directory under /tmp instead and names it in this file, so that whoever removes the
/// instance removes that directory too.
pub const SHORT_APPS_DIR_NOTE: &str = "apps.s.elsewhere";
/// Where such short directories are made: `/tmp/prs.<8 random characters>`.
pub const SHORT_APPS_DIR_PREFIX: &str = "/tmp/prs.";

/// Removes the short app socket directory an instance names in [`SHORT_APPS_DIR_NOTE`], if any
/// (only a path with [`SHORT_APPS_DIR_PREFIX`] is touched), and the note.
pub fn remove_short_apps_dir(instance_dir: &std::path::Path) {
    let note = instance_dir.join(SHORT_APPS_DIR_NOTE);
    if let Ok(text) = std::fs::read_to_string(&note) {
        let dir = text.trim();
        if dir.starts_with(SHORT_APPS_DIR_PREFIX) && !dir.contains("..") {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = std::fs::remove_file(&note);
    }
}
pub const CORE_SOCKET: &str = "agents.s/core";
pub const CORE_API_SOCKET: &str = "agents.s/core_api";
pub const WATCHDOG_API_SOCKET: &str = "agents.s/watchdog_api";

/// The registry dir: the configured one, else `$PASSENGER_INSTANCE_REGISTRY_DIR`, `$TMPDIR`,
/// `/tmp`.
pub fn registry_dir(configured: Option<&Path>) -> PathBuf {
    configured
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PASSENGER_INSTANCE_REGISTRY_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("TMPDIR").map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// How the instance was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationMode {
    Nginx,
    Standalone,
}

/// `properties.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Properties {
    pub instance_id: String,
    pub name: String,
    pub integration_mode: IntegrationMode,
    pub server_software: String,
    pub passenger_version: String,
    pub watchdog_pid: u32,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

/// Why a start-up report could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("start-up report has no item {index}")]
    MissingItem { index: usize },
    #[error("start-up report has unknown status {status:?} (expected \"ok\" or \"error\")")]
    UnknownStatus { status: String },
    #[error("start-up report has {count} items, more than its status {status:?} takes")]
    ExtraItems { status: String, count: usize },
}

/// The start-up report the watchdog sends the nginx module (a MessageChannel array):
/// `["ok", instance_dir, core_socket, core_password]` or `["error", message]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupReport {
    Ok {
        instance_dir: String,
        core_socket: String,
        core_password: String,
    },
    Error(String),
}

impl StartupReport {
    pub fn to_items(&self) -> Vec<&str> {
        match self {
            StartupReport::Ok {
                instance_dir,
                core_socket,
                core_password,
            } => {
                vec!["ok", instance_dir, core_socket, core_password]
            }
            StartupReport::Error(msg) => vec!["error", msg],
        }
    }

    pub fn from_items(items: &[Vec<u8>]) -> Result<StartupReport, ReportError> {
        let text = |index: usize| {
            items
                .get(index)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .ok_or(ReportError::MissingItem { index })
        };
        let status = text(0)?;
        let (report, count) = match status.as_str() {
            "ok" => (
                StartupReport::Ok {
                    instance_dir: text(1)?,
                    core_socket: text(2)?,
                    core_password: text(3)?,
                },
                4,
            ),
            "error" => (StartupReport::Error(text(1)?), 2),
            _ => return Err(ReportError::UnknownStatus { status }),
        };
        if items.len() > count {
            return Err(ReportError::ExtraItems {
                status,
                count: items.len(),
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trip() {
        let r = StartupReport::Ok {
            instance_dir: "/tmp/passenger.x".into(),
            core_socket: "/tmp/passenger.x/agents.s/core".into(),
            core_password: "pw".into(),
        };
        let msg = crate::channel::encode_array(&r.to_items()).unwrap();
        let (items, _) = crate::channel::decode_array(&msg).unwrap().unwrap();
        assert_eq!(StartupReport::from_items(&items).unwrap(), r);
        assert_eq!(
            StartupReport::from_items(&[b"bogus".to_vec()]),
            Err(ReportError::UnknownStatus {
                status: "bogus".into()
            })
        );
        assert_eq!(
            StartupReport::from_items(&[b"ok".to_vec(), b"/d".to_vec()]),
            Err(ReportError::MissingItem { index: 2 })
        );
        assert_eq!(
            StartupReport::from_items(&[]),
            Err(ReportError::MissingItem { index: 0 })
        );
    }
}
