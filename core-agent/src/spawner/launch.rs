//! What a spawn executes: the command line (through the app user's login shell when
//! `passenger_load_shell_envvars` is on), the environment, the working directory, the
//! identity and limits, and the clean slate every app process starts from.

use super::identity::Identity;
use crate::app_options::AppOptions;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Stdio;
use tokio::process::Command;

/// Variables of the agents' environment that are theirs alone, not the app's.
const AGENT_ONLY_ENV: [&str; 6] = [
    "PASSENGER_CORE_PASSWORD",
    // nginx's inherited listening sockets (binary upgrades).
    "NGINX",
    "LISTEN_FDS",
    "LISTEN_PID",
    "NOTIFY_SOCKET",
    "RUST_LOG",
];

/// Login shells that take `-l -c` and read the user's profile.
const LOGIN_SHELLS: [&str; 3] = ["bash", "zsh", "ksh"];

pub struct LaunchPlan {
    pub program: String,
    pub args: Vec<String>,
    /// The complete environment of the process.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: String,
    pub identity: Identity,
    pub fd_ulimit: Option<u64>,
    /// Run under SCHED_BATCH (`passenger_app_scheduling_policy`, see [`batch_policy`]).
    pub batch_scheduling: bool,
}

impl LaunchPlan {
    /// The plan for running `script` (a loader or preloader) for the app.
    pub fn new(options: &AppOptions, identity: Identity, script: &Path) -> LaunchPlan {
        let interpreter = options.interpreter().to_string();
        let script = script.to_string_lossy().into_owned();
        LaunchPlan::with_argv(options, identity, interpreter, vec![script])
    }

    /// The plan for a generic app: `/bin/sh -c <command>` (`passenger_app_start_command`),
    /// with `PORT` set to the port the app is to listen on (nothing may override it).
    pub fn start_command(
        options: &AppOptions,
        identity: Identity,
        command: &str,
        port: u16,
    ) -> LaunchPlan {
        let mut plan = LaunchPlan::with_argv(
            options,
            identity,
            "/bin/sh".to_string(),
            vec!["-c".to_string(), exec_form(command)],
        );
        plan.env.retain(|(name, _)| name.as_bytes() != b"PORT");
        plan.env.push(("PORT".into(), port.to_string().into()));
        plan
    }

    /// Runs `interpreter args...`, through the login shell when that applies.
    fn with_argv(
        options: &AppOptions,
        identity: Identity,
        interpreter: String,
        script_args: Vec<String>,
    ) -> LaunchPlan {
        let shell_name = Path::new(&identity.shell)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (program, args) =
            if options.spawn.load_shell_envvars && LOGIN_SHELLS.contains(&shell_name.as_str()) {
                // `exec "$@"`: the login shell reads the profile, then becomes the loader.
                let args = ["-l", "-c", "exec \"$@\"", "passenger-spawn"]
                    .into_iter()
                    .map(String::from)
                    .chain(std::iter::once(interpreter))
                    .chain(script_args)
                    .collect();
                (identity.shell.clone(), args)
            } else {
                (interpreter, script_args)
            };
        LaunchPlan {
            program,
            args,
            env: app_environment(options, &identity),
            cwd: options.app_root.clone(),
            identity,
            fd_ulimit: options.spawn.fd_ulimit,
            batch_scheduling: options.spawn.batch_scheduling,
        }
    }

    /// The command line, shell-quoted, for logs and error pages.
    pub fn command_text(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The environment as text, for the friendly error page.
    pub fn environment_text(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect()
    }

    /// The command, with stdin/stdout/stderr piped, in its own process group.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C meant for the core does not hit the app, and a
            // stop can reach the app's own children too.
            .process_group(0)
            // Until it is ready the spawn may be abandoned; then it must not linger.
            .kill_on_drop(true);
        let switch = self.identity.switch.then(|| {
            (
                self.identity.uid,
                self.identity.gid,
                self.identity.groups.clone(),
            )
        });
        let fd_ulimit = self.fd_ulimit;
        let batch_scheduling = self.batch_scheduling;
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls; everything it needs was computed before the fork.
        unsafe {
            cmd.pre_exec(move || {
                reset_signals();
                if batch_scheduling {
                    batch_policy();
                }
                if let Some((uid, gid, groups)) = &switch {
                    nix::unistd::setgroups(groups)?;
                    nix::unistd::setgid(*gid)?;
                    nix::unistd::setuid(*uid)?;
                }
                // If the core dies without stopping it (SIGKILL), the process gets SIGTERM: a
                // loader would notice its stdin close anyway, a generic app would not. Set
                // after the identity change, which clears it. (The signal follows the thread
                // that forked: the core's one runtime thread, which lives as long as the core.)
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                if let Some(limit) = fd_ulimit {
                    let rl = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        // Beyond the hard limit an unprivileged user may not go: keep the soft
                        // limit within it instead of failing the spawn.
                        let mut cur = libc::rlimit {
                            rlim_cur: 0,
                            rlim_max: 0,
                        };
                        libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
                        cur.rlim_cur = limit.min(cur.rlim_max);
                        libc::setrlimit(libc::RLIMIT_NOFILE, &cur);
                    }
                }
                close_inherited_fds();
                Ok(())
            });
        }
        cmd
    }
}

/// A start command the shell runs in its own place (`exec COMMAND`) when it is one simple
/// command, so that the app is the process the core started: it gets the core's parent-death
/// signal, and its stop signals, directly (dash forks for `sh -c` otherwise). A list, a
/// pipeline, a leading assignment or a shell keyword is run as written.
fn exec_form(command: &str) -> String {
    let first = command.split_whitespace().next().unwrap_or("");
    let compound = command.contains([';', '&', '|', '\n'])
        || first.contains('=')
        || [
            "if", "for", "while", "until", "case", "{", "(", "!", "exec", "cd", "export", "set",
        ]
        .contains(&first);
    if compound || first.is_empty() {
        command.to_string()
    } else {
        format!("exec {command}")
    }
}

/// The app's environment: the agents' own minus their internals, then the app's identity and
/// environment name, then `passenger_env_var` (which may override any of it).
fn app_environment(options: &AppOptions, identity: &Identity) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !AGENT_ONLY_ENV.iter().any(|n| k.as_bytes() == n.as_bytes()))
        .collect();
    let mut set = |k: &str, v: &str| {
        env.retain(|(name, _)| name.as_bytes() != k.as_bytes());
        env.push((k.into(), v.into()));
    };
    set("USER", &identity.user);
    set("LOGNAME", &identity.user);
    set("HOME", &identity.home);
    set("SHELL", &identity.shell);
    for name in [
        "RAILS_ENV",
        "RACK_ENV",
        "WSGI_ENV",
        "NODE_ENV",
        "PASSENGER_APP_ENV",
    ] {
        set(name, &options.app_env);
    }
    if !options.base_uri.is_empty() && options.base_uri != "/" {
        set("PASSENGER_BASE_URI", &options.base_uri);
    }
    set("IN_PASSENGER", "1");
    set("PYTHONUNBUFFERED", "1");
    for (k, v) in &options.spawn.env_vars {
        set(k, v);
    }
    env
}

/// SCHED_BATCH for the process, and what it forks (a preloader's app processes): woken up, it
/// waits for the task running on that CPU to block or use up its time slice instead of
/// preempting it. The core, woken by nginx, is then not cut off by the app process each
/// request it forwards wakes: it forwards what it has read and sleeps, and the app runs. Under
/// load that saves about a fifth of the context switches per request (in nginx, the core and
/// the apps); with a CPU to spare, the woken process runs there at once as before.
/// Where the kernel refuses (a seccomp filter), the process keeps the normal policy.
fn batch_policy() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: a system call on this process with a valid parameter block; async-signal-safe.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_BATCH, &param);
    }
}

/// Default dispositions and an empty mask: a handler or an ignored signal inherited from
/// the agents (exec keeps ignored ones) would change how the app reacts to signals.
fn reset_signals() {
    // SAFETY: plain system calls on a fresh sigset.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Marks every descriptor above stderr close-on-exec, so the app inherits none of the agents'
/// (the core's listening socket, other apps' pipes). Close-on-exec rather than closed: the
/// spawn machinery reports exec errors through such a descriptor.
fn close_inherited_fds() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: system calls on descriptor numbers only.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) == 0 {
            return;
        }
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        let max = rl.rlim_cur.min(1 << 16) as libc::c_int;
        for fd in 3..max {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app_options::{PoolOptions, SpawnOptions};
    use passenger_protocol::options::AppType;

    fn options() -> AppOptions {
        AppOptions {
            app_root: "/srv/app".into(),
            app_type: AppType::Rack,
            startup_file: "/srv/app/config.ru".into(),
            app_env: "staging".into(),
            group_name: "g".into(),
            ruby: "ruby".into(),
            python: "python3".into(),
            nodejs: "node".into(),
            base_uri: "/sub".into(),
            show_version_in_header: true,
            pool: PoolOptions::defaults("/srv/app"),
            spawn: SpawnOptions::defaults(AppType::Rack, "staging"),
        }
    }

    fn identity(shell: &str) -> Identity {
        Identity {
            user: "app".into(),
            uid: nix::unistd::Uid::from_raw(1000),
            gid: nix::unistd::Gid::from_raw(1000),
            groups: vec![],
            home: "/home/app".into(),
            shell: shell.into(),
            switch: false,
        }
    }

    fn get<'a>(plan: &'a LaunchPlan, name: &str) -> Option<&'a str> {
        plan.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn login_shell_wraps_the_loader() {
        let plan = LaunchPlan::new(
            &options(),
            identity("/bin/bash"),
            Path::new("/p/rack-loader.rb"),
        );
        assert_eq!(plan.program, "/bin/bash");
        assert_eq!(
            plan.command_text(),
            "/bin/bash -l -c 'exec \"$@\"' passenger-spawn ruby /p/rack-loader.rb"
        );
        let plan = LaunchPlan::new(
            &options(),
            identity("/usr/sbin/nologin"),
            Path::new("/p/rack-loader.rb"),
        );
        assert_eq!(plan.command_text(), "ruby /p/rack-loader.rb");
        let mut o = options();
        o.spawn.load_shell_envvars = false;
        let plan = LaunchPlan::new(&o, identity("/bin/bash"), Path::new("/p/rack-loader.rb"));
        assert_eq!(plan.command_text(), "ruby /p/rack-loader.rb");
    }

    #[test]
    fn environment() {
        let mut o = options();
        o.spawn.env_vars = vec![
            ("CUSTOM".into(), "x y".into()),
            ("RACK_ENV".into(), "mine".into()),
        ];
        let plan = LaunchPlan::new(&o, identity("/bin/sh"), Path::new("/p/l.rb"));
        assert_eq!(get(&plan, "USER"), Some("app"));
        assert_eq!(get(&plan, "LOGNAME"), Some("app"));
        assert_eq!(get(&plan, "HOME"), Some("/home/app"));
        assert_eq!(get(&plan, "SHELL"), Some("/bin/sh"));
        assert_eq!(get(&plan, "RAILS_ENV"), Some("staging"));
        assert_eq!(get(&plan, "WSGI_ENV"), Some("staging"));
        assert_eq!(get(&plan, "NODE_ENV"), Some("staging"));
        assert_eq!(get(&plan, "PASSENGER_APP_ENV"), Some("staging"));
        assert_eq!(get(&plan, "PASSENGER_BASE_URI"), Some("/sub"));
        assert_eq!(get(&plan, "IN_PASSENGER"), Some("1"));
        assert_eq!(get(&plan, "PYTHONUNBUFFERED"), Some("1"));
        assert_eq!(get(&plan, "CUSTOM"), Some("x y"));
        // passenger_env_var comes last and wins, once.
        assert_eq!(get(&plan, "RACK_ENV"), Some("mine"));
        assert_eq!(plan.env.iter().filter(|(k, _)| k == "RACK_ENV").count(), 1);
        assert!(get(&plan, "PASSENGER_CORE_PASSWORD").is_none());
    }

    #[test]
    fn start_command_runs_through_sh_with_port() {
        let mut o = options();
        o.app_type = AppType::Generic;
        o.spawn.env_vars = vec![("PORT".into(), "1".into())];
        let plan = LaunchPlan::start_command(&o, identity("/bin/bash"), "./run --x", 4242);
        assert_eq!(
            plan.command_text(),
            "/bin/bash -l -c 'exec \"$@\"' passenger-spawn /bin/sh -c 'exec ./run --x'"
        );
        // The port the core picked wins over passenger_env_var.
        assert_eq!(get(&plan, "PORT"), Some("4242"));
        assert_eq!(plan.env.iter().filter(|(k, _)| k == "PORT").count(), 1);
        assert_eq!(get(&plan, "IN_PASSENGER"), Some("1"));
        o.spawn.load_shell_envvars = false;
        let plan = LaunchPlan::start_command(&o, identity("/bin/bash"), "./run", 1);
        assert_eq!(plan.command_text(), "/bin/sh -c 'exec ./run'");
        assert_eq!(plan.cwd, "/srv/app");
    }

    #[test]
    fn a_simple_start_command_is_execed_by_the_shell() {
        assert_eq!(
            exec_form("node app.js --port $PORT"),
            "exec node app.js --port $PORT"
        );
        assert_eq!(
            exec_form("bundle exec puma > log"),
            "exec bundle exec puma > log"
        );
        for as_written in [
            "cd web && node app.js",
            "a | b",
            "server &",
            "PORT2=1 node app.js",
            "if true; then node app.js; fi",
            "exec node app.js",
            "export X=1",
            "",
        ] {
            assert_eq!(exec_form(as_written), as_written);
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/usr/bin/ruby"), "/usr/bin/ruby");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
