//! Spawning end to end (issue 5), against Debian's nginx 1.22 and the bundled nginx: smart
//! spawning through a preloader and direct spawning, the environment and identity an app gets,
//! its output in the log, and what a request sees when the app cannot start.

#[macro_use]
mod common;

use common::*;
use std::collections::HashMap;

for_both_nginx! {
    smart_spawning_forks_every_process_from_one_preloader,
    direct_spawning_starts_each_process_from_scratch,
    the_environment_reaches_the_app,
    app_output_is_logged_with_its_pid,
    log_prefix_can_be_turned_off,
    a_boot_error_shows_the_friendly_page_in_development,
    a_boot_error_shows_a_generic_page_in_production,
    a_custom_error_page_and_status_replace_the_built_in_one,
    an_app_that_never_becomes_ready_fails_at_the_start_timeout,
    the_app_runs_as_its_startup_files_owner,
    the_fd_limit_and_signal_state_are_set_for_the_app,
    app_processes_run_under_the_scheduling_policy_set,
    an_idle_preloader_exits_and_the_next_spawn_starts_another,
}

/// The `key=value` lines the spawn app answers `/` with.
fn facts(nginx: &Nginx) -> HashMap<String, i64> {
    let r = nginx.get("/");
    assert_eq!(r.status, 200, "GET /: {r:?}\n{}", nginx.passenger_log());
    r.text()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

fn spawn_site(extra: &str) -> Site {
    Site {
        app: test_app("spawn"),
        extra: extra.to_string(),
    }
}

fn smart_spawning_forks_every_process_from_one_preloader(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[spawn_site("passenger_min_instances 3;")]);
    // Sequential requests go to the least recently used idle process: once the minimum is up,
    // three requests in a row see three processes.
    let mut seen: HashMap<i64, HashMap<String, i64>> = HashMap::new();
    wait_until("three app processes serving", || {
        let f = facts(&nginx);
        seen.insert(f["pid"], f);
        seen.len() >= 3
    });
    let core = nginx.core_pid();
    let preloaders: Vec<i64> = seen.values().map(|f| f["ppid"]).collect();
    let preloader = preloaders[0];
    assert!(
        preloaders.iter().all(|&p| p == preloader),
        "the processes have different parents: {seen:?}"
    );
    assert_ne!(
        preloader, core as i64,
        "smart-spawned processes must not be the core's children"
    );
    assert_eq!(
        parent_of(preloader as i32),
        Some(core),
        "the preloader {preloader} is not the core's child"
    );
    for f in seen.values() {
        // The app was loaded once, in the preloader, not in the process serving it.
        assert_eq!(f["loaded_in"], preloader, "{f:?}");
    }
    // Stopping nginx stops the preloader and every process it forked.
    let mut nginx = nginx;
    let mut pids: Vec<i32> = seen.keys().map(|&p| p as i32).collect();
    pids.push(preloader as i32);
    nginx.stop();
    wait_all_gone(
        &pids,
        "the preloader and its app processes after nginx stopped",
    );
}

fn direct_spawning_starts_each_process_from_scratch(flavour: Flavour) {
    let nginx = Nginx::start(
        flavour,
        &[spawn_site(
            "passenger_spawn_method direct; passenger_min_instances 2;",
        )],
    );
    let mut seen: HashMap<i64, HashMap<String, i64>> = HashMap::new();
    wait_until("two app processes serving", || {
        let f = facts(&nginx);
        seen.insert(f["pid"], f);
        seen.len() >= 2
    });
    let core = nginx.core_pid() as i64;
    for f in seen.values() {
        assert_eq!(f["ppid"], core, "a direct spawn is the core's child: {f:?}");
        assert_eq!(f["loaded_in"], f["pid"], "{f:?}");
    }
}

fn env_of(nginx: &Nginx, name: &str) -> String {
    let r = nginx.get(&format!("/env?{name}"));
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.passenger_log());
    r.text()
}

fn the_environment_reaches_the_app(flavour: Flavour) {
    for method in ["smart", "direct"] {
        let nginx = Nginx::start(
            flavour,
            &[spawn_site(&format!(
                "passenger_spawn_method {method};\n\
                 passenger_app_env staging;\n\
                 passenger_env_var GREETING \"hello world\";\n\
                 passenger_env_var RAILS_ENV overridden;\n"
            ))],
        );
        assert_eq!(env_of(&nginx, "GREETING"), "hello world", "{method}");
        // passenger_env_var is applied last, so it can override the app environment.
        assert_eq!(env_of(&nginx, "RAILS_ENV"), "overridden", "{method}");
        for name in ["RACK_ENV", "WSGI_ENV", "NODE_ENV", "PASSENGER_APP_ENV"] {
            assert_eq!(env_of(&nginx, name), "staging", "{method}: {name}");
        }
        assert_eq!(env_of(&nginx, "IN_PASSENGER"), "1");
        assert_eq!(env_of(&nginx, "PYTHONUNBUFFERED"), "1");
        // The agents' own secrets and nginx's internals stay out.
        assert_eq!(env_of(&nginx, "PASSENGER_CORE_PASSWORD"), "(unset)");
        assert_eq!(env_of(&nginx, "NGINX"), "(unset)");
        // USER, LOGNAME, HOME and SHELL are the app user's.
        let uid = facts(&nginx)["uid"];
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        let entry: Vec<&str> = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 7 && f[2] == uid.to_string())
            .unwrap_or_else(|| panic!("uid {uid} is not in /etc/passwd"));
        assert_eq!(env_of(&nginx, "USER"), entry[0], "{method}");
        assert_eq!(env_of(&nginx, "LOGNAME"), entry[0]);
        assert_eq!(env_of(&nginx, "HOME"), entry[5]);
        assert_eq!(env_of(&nginx, "SHELL"), entry[6]);
    }
}

fn app_output_is_logged_with_its_pid(flavour: Flavour) {
    for method in ["smart", "direct"] {
        let nginx = Nginx::start(
            flavour,
            &[spawn_site(&format!("passenger_spawn_method {method};"))],
        );
        let f = facts(&nginx);
        let r = nginx.get("/log");
        assert_eq!(r.text(), "logged");
        let pid = f["pid"];
        for stream in ["stdout", "stderr"] {
            let line = format!("App {pid} output: spawn app {pid} says hello on {stream}");
            wait_until(&format!("{method}: `{line}` in the log"), || {
                nginx.passenger_log().contains(&line)
            });
        }
        // What the app printed while loading is logged with the pid of the process that
        // loaded it (the preloader, when smart).
        let line = format!("App {} output: spawn app: loading", f["loaded_in"]);
        wait_until(&format!("{method}: `{line}` in the log"), || {
            nginx.passenger_log().contains(&line)
        });
    }
}

fn log_prefix_can_be_turned_off(flavour: Flavour) {
    let nginx = Nginx::start_with(
        flavour,
        &[spawn_site("")],
        "passenger_disable_log_prefix on;",
    );
    let pid = facts(&nginx)["pid"];
    nginx.get("/log");
    let text = format!("spawn app {pid} says hello on stdout");
    wait_until("the app's line in the log", || {
        nginx.passenger_log().contains(&text)
    });
    let log = nginx.passenger_log();
    assert!(
        !log.contains(&format!("output: {text}")),
        "the line still has its prefix:\n{log}"
    );
}

fn broken_site(extra: &str) -> Site {
    Site {
        app: test_app("broken"),
        extra: extra.to_string(),
    }
}

fn a_boot_error_shows_the_friendly_page_in_development(flavour: Flavour) {
    for method in ["smart", "direct"] {
        let nginx = Nginx::start(
            flavour,
            &[broken_site(&format!(
                "passenger_app_env development; passenger_spawn_method {method};\n\
                 passenger_env_var SOME_SETTING visible-in-development;"
            ))],
        );
        let r = nginx.get("/");
        assert_eq!(r.status, 500, "{method}: {r:?}");
        let page = r.text();
        for needle in [
            "Web application could not be started",
            "boom: this app is broken on purpose",
            "ArgumentError",
            "config.ru",
            "SOME_SETTING=visible-in-development",
        ] {
            assert!(
                page.contains(needle),
                "{method}: {needle:?} missing from:\n{page}"
            );
        }
    }
}

fn a_boot_error_shows_a_generic_page_in_production(flavour: Flavour) {
    let nginx = Nginx::start(
        flavour,
        &[broken_site("passenger_env_var SECRET_TOKEN hunter2;")],
    );
    let r = nginx.get("/");
    assert_eq!(r.status, 500, "{r:?}");
    let page = r.text();
    assert!(page.contains("something went wrong"), "{page}");
    for secret in ["hunter2", "SECRET_TOKEN", "boom", "ArgumentError"] {
        assert!(
            !page.contains(secret),
            "{secret:?} shown on the generic page:\n{page}"
        );
    }
    // The details are in the log instead.
    assert!(
        nginx
            .passenger_log()
            .contains("boom: this app is broken on purpose"),
        "{}",
        nginx.passenger_log()
    );
}

fn a_custom_error_page_and_status_replace_the_built_in_one(flavour: Flavour) {
    let scratch = Scratch::new("custom-page");
    let page_path = scratch.0.join("sorry.html");
    std::fs::write(&page_path, "<h1>We'll be right back</h1>\n").unwrap();
    let nginx = Nginx::start(
        flavour,
        &[broken_site(&format!(
            "passenger_app_env development;\n\
             passenger_spawn_exception_status_code 503;\n\
             passenger_custom_error_page {};",
            page_path.display()
        ))],
    );
    let r = nginx.get("/");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.text(), "<h1>We'll be right back</h1>\n");
}

fn an_app_that_never_becomes_ready_fails_at_the_start_timeout(flavour: Flavour) {
    let app = Scratch::new("hanging-app");
    std::fs::write(
        app.0.join("config.ru"),
        "$stdout.puts 'about to hang'\n$stdout.flush\nsleep\n",
    )
    .unwrap();
    for method in ["smart", "direct"] {
        let nginx = Nginx::start(
            flavour,
            &[Site {
                app: app.0.clone(),
                extra: format!(
                    "passenger_start_timeout 2; passenger_app_env development; \
                     passenger_spawn_method {method};"
                ),
            }],
        );
        let r = nginx.get("/");
        assert_eq!(r.status, 500, "{method}: {r:?}");
        let page = r.text();
        assert!(page.contains("within 2 s"), "{method}: {page}");
        assert!(page.contains("passenger_start_timeout"), "{page}");
        assert!(
            page.contains("about to hang"),
            "the output so far is shown: {page}"
        );
        // The hanging process was killed.
        let core = nginx.core_pid();
        wait_until(
            &format!("{method}: no app process left below the core"),
            || descendants(core).is_empty(),
        );
    }
}

fn uid_of_user(name: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f[0] == name)
        .unwrap_or_else(|| panic!("no user {name}"))[2]
        .parse()
        .unwrap()
}

fn the_app_runs_as_its_startup_files_owner(flavour: Flavour) {
    let me = nix_uid();
    if me != 0 {
        // Not root: no switching, the app runs as us.
        let nginx = Nginx::start(flavour, &[spawn_site("")]);
        assert_eq!(facts(&nginx)["uid"], me as i64);
        return;
    }
    let daemon = uid_of_user("daemon");
    let nobody = uid_of_user("nobody");
    // A startup file owned by `daemon`: the app runs as daemon, smart or direct.
    let owned = copy_app("spawn");
    std::os::unix::fs::chown(owned.0.join("config.ru"), Some(daemon), None).unwrap();
    // A root-owned copy: the app runs as nobody.
    let root_owned = copy_app("spawn");
    // Root-owned too, with passenger_user (its own app root: options are per group).
    let explicit = copy_app("spawn");
    for method in ["smart", "direct"] {
        let extra = format!("passenger_spawn_method {method};");
        let nginx = Nginx::start(
            flavour,
            &[
                Site {
                    app: owned.0.clone(),
                    extra: extra.clone(),
                },
                Site {
                    app: root_owned.0.clone(),
                    extra: extra.clone(),
                },
                Site {
                    app: explicit.0.clone(),
                    extra: format!("{extra} passenger_user daemon;"),
                },
            ],
        );
        let get = |port: u16| {
            let r = http(port, "GET", "/", &[], b"");
            assert_eq!(r.status, 200, "{r:?}\n{}", nginx.passenger_log());
            let pid: i32 = r
                .text()
                .lines()
                .find_map(|l| l.strip_prefix("pid="))
                .unwrap()
                .parse()
                .unwrap();
            (pid, uid_of(pid).unwrap())
        };
        let (_, uid) = get(nginx.ports[0]);
        assert_eq!(uid, daemon, "{method}: startup file owned by daemon");
        let (_, uid) = get(nginx.ports[1]);
        assert_eq!(uid, nobody, "{method}: a root-owned app runs as nobody");
        let (_, uid) = get(nginx.ports[2]);
        assert_eq!(uid, daemon, "{method}: passenger_user daemon");
        // Each process's socket lives in a directory only its user may enter; the directory
        // above may be traversed but not listed by others.
        use std::os::unix::fs::MetadataExt;
        let apps_dir = nginx.instance_dir().join("apps.s");
        assert_eq!(std::fs::metadata(&apps_dir).unwrap().mode() & 0o777, 0o711);
        let mut owners: Vec<u32> = std::fs::read_dir(&apps_dir)
            .unwrap()
            .map(|e| {
                let meta = e.unwrap().metadata().unwrap();
                assert_eq!(meta.mode() & 0o777, 0o700, "{method}: a private socket dir");
                meta.uid()
            })
            .collect();
        owners.sort();
        owners.dedup();
        assert_eq!(
            owners,
            vec![daemon.min(nobody), daemon.max(nobody)],
            "{method}"
        );
    }
}

fn nix_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

fn the_fd_limit_and_signal_state_are_set_for_the_app(flavour: Flavour) {
    for method in ["smart", "direct"] {
        let nginx = Nginx::start(
            flavour,
            &[spawn_site(&format!(
                "passenger_spawn_method {method}; passenger_app_file_descriptor_ulimit 1234;"
            ))],
        );
        let r = nginx.get("/limits");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.text(),
            "1234 1234",
            "{method}: RLIMIT_NOFILE soft and hard"
        );
        // No signal blocked, and none of the standard ones ignored (nginx and the agents ignore
        // some, and exec keeps ignored dispositions). Signals above 31 belong to the C library.
        let signals = nginx.get("/signals").text();
        let mask = |name: &str| {
            let line = signals
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in {signals}"));
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{method}: {signals}");
        assert_eq!(mask("SigIgn:") & 0x7fff_ffff, 0, "{method}: {signals}");
        // None of the core's descriptors leaked into the app: not its listening socket (fd 3),
        // nor anything else it has open but the app's own pipes.
        let core = nginx.core_pid();
        let core_fds: Vec<String> = std::fs::read_dir(format!("/proc/{core}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
            .map(|t| t.to_string_lossy().into_owned())
            .filter(|t| t.starts_with("socket:"))
            .collect();
        let listener = std::fs::read_link(format!("/proc/{core}/fd/3")).unwrap();
        assert!(listener.to_string_lossy().starts_with("socket:"));
        let app_fds = nginx.get("/fds").text();
        for line in app_fds.lines() {
            let target = line.split_once(' ').unwrap().1;
            assert!(
                !core_fds.iter().any(|c| c == target),
                "{method}: the app has the core's {target} open:\n{app_fds}"
            );
        }
    }
}

/// The scheduling policy of each thread of `pid` (field 41 of /proc/PID/task/TID/stat:
/// 0 = SCHED_OTHER, 3 = SCHED_BATCH). A thread that ends while they are read is left out.
fn scheduling_policies(pid: i64) -> Vec<u32> {
    let policies: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("threads of {pid}: {e}"))
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .map(|stat| {
            stat_field(&stat, 41)
                .and_then(|policy| policy.parse().ok())
                .unwrap_or_else(|| panic!("no policy (field 41) in {stat:?}"))
        })
        .collect();
    assert!(!policies.is_empty(), "no thread of {pid} could be read");
    policies
}

fn app_processes_run_under_the_scheduling_policy_set(flavour: Flavour) {
    const SCHED_OTHER: u32 = 0;
    const SCHED_BATCH: u32 = 3;
    // The default, batch: set at exec, so a smart-spawned process has it from its preloader.
    let nginx = Nginx::start(flavour, &[spawn_site("")]);
    let f = facts(&nginx);
    for (what, pid) in [("app process", f["pid"]), ("preloader", f["ppid"])] {
        let policies = scheduling_policies(pid);
        assert!(
            policies.iter().all(|&p| p == SCHED_BATCH),
            "the {what} {pid} runs under policies {policies:?}, not SCHED_BATCH (3) throughout"
        );
    }
    let core = scheduling_policies(nginx.core_pid() as i64);
    assert!(
        core.iter().all(|&p| p == SCHED_OTHER),
        "the core keeps the normal policy: {core:?}"
    );
    drop(nginx);
    let nginx = Nginx::start(
        flavour,
        &[spawn_site(
            "passenger_spawn_method direct; passenger_app_scheduling_policy normal;",
        )],
    );
    let pid = facts(&nginx)["pid"];
    let policies = scheduling_policies(pid);
    assert!(
        policies.iter().all(|&p| p == SCHED_OTHER),
        "the app process {pid} runs under policies {policies:?}, not SCHED_OTHER (0) throughout"
    );
}

fn an_idle_preloader_exits_and_the_next_spawn_starts_another(flavour: Flavour) {
    let app = copy_app("spawn");
    let nginx = Nginx::start(
        flavour,
        &[Site {
            app: app.0.clone(),
            extra: "passenger_max_preloader_idle_time 1;".into(),
        }],
    );
    let first = facts(&nginx);
    let preloader = first["ppid"] as i32;
    wait_until("the idle preloader exits", || !alive(preloader));
    // Its child serves on.
    assert_eq!(facts(&nginx)["pid"], first["pid"]);
    // A restart needs a new process: a new preloader is started for it.
    std::fs::create_dir_all(app.0.join("tmp")).unwrap();
    std::fs::write(app.0.join("tmp/restart.txt"), "").unwrap();
    let mut after = facts(&nginx);
    wait_until("a process of the new generation serves", || {
        after = facts(&nginx);
        after["pid"] != first["pid"]
    });
    assert_ne!(after["ppid"] as i32, preloader);
    assert_eq!(after["loaded_in"], after["ppid"], "{after:?}");
}
