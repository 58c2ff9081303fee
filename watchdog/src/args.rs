//! Command-line arguments, as the nginx module and `passenger start` pass them.

use passenger_protocol::instance::IntegrationMode;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Args {
    pub passenger_root: PathBuf,
    /// A pipe whose write end only the nginx master holds: EOF on it ends the instance.
    pub lifeline_fd: Option<i32>,
    /// Or: a process whose exit ends the instance (for tools that start the watchdog directly).
    pub master_pid: Option<i32>,
    /// Where to write the start-up report (a MessageChannel array message).
    pub report_fd: Option<i32>,
    pub integration_mode: IntegrationMode,
    pub server_software: String,
    pub log_level: u8,
    pub log_file: Option<PathBuf>,
    pub registry_dir: Option<PathBuf>,
    /// `passenger_socket_backlog`.
    pub socket_backlog: i32,
    /// `passenger_core_file_descriptor_ulimit` (None = inherited).
    pub core_fd_ulimit: Option<u64>,
    /// `passenger_pre_start` URLs.
    pub pre_start: Vec<String>,
}

impl Args {
    pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut args = Args {
            passenger_root: PathBuf::new(),
            lifeline_fd: None,
            master_pid: None,
            report_fd: None,
            integration_mode: IntegrationMode::Nginx,
            server_software: "nginx".into(),
            log_level: 3,
            log_file: None,
            registry_dir: None,
            socket_backlog: crate::core_agent::DEFAULT_SOCKET_BACKLOG,
            core_fd_ulimit: None,
            pre_start: Vec::new(),
        };
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--passenger-root" => args.passenger_root = value()?.into(),
                "--master-pid" => args.master_pid = Some(number(&flag, &value()?)?),
                "--lifeline-fd" => args.lifeline_fd = Some(number(&flag, &value()?)?),
                "--report-fd" => args.report_fd = Some(number(&flag, &value()?)?),
                "--integration-mode" => {
                    args.integration_mode = match value()?.as_str() {
                        "nginx" => IntegrationMode::Nginx,
                        "standalone" => IntegrationMode::Standalone,
                        other => return Err(format!("unknown integration mode {other:?}")),
                    }
                }
                "--server-software" => args.server_software = value()?,
                "--log-level" => args.log_level = number(&flag, &value()?)?,
                "--log-file" => args.log_file = Some(value()?.into()),
                "--registry-dir" => args.registry_dir = Some(value()?.into()),
                "--socket-backlog" => args.socket_backlog = number(&flag, &value()?)?,
                "--core-file-descriptor-ulimit" => {
                    args.core_fd_ulimit = Some(number(&flag, &value()?)?)
                }
                "--pre-start" => args.pre_start.push(value()?),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if args.passenger_root.as_os_str().is_empty() {
            return Err("--passenger-root is required".into());
        }
        if args.lifeline_fd.is_none() && args.master_pid.is_none_or(|p| p <= 0) {
            return Err("--lifeline-fd or --master-pid is required".into());
        }
        Ok(args)
    }
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} takes a number, not {v:?}"))
}
