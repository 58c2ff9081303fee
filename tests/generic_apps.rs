//! Generic apps (`passenger_app_start_command`, Phusion Passenger 6's "any language" apps):
//! the core runs the command through `/bin/sh -c` with `PORT` set, waits until the app
//! listens on 127.0.0.1:$PORT, and speaks HTTP/1.1 to it, against Debian's nginx 1.22 and
//! the bundled nginx. The app is tests/apps/generic/server.py (it has no config.ru,
//! passenger_wsgi.py or app.js: nothing is detected).

#[macro_use]
mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, SystemTime};

for_both_nginx! {
    a_generic_app_is_started_with_its_command_and_served,
    restart_txt_starts_a_new_generic_process,
    a_start_command_that_exits_at_once_is_a_spawn_error,
    min_instances_two_gives_two_processes_on_different_ports,
    stopping_nginx_leaves_no_generic_process_behind,
    a_generic_app_that_never_listens_times_out_and_is_killed,
    a_crashed_generic_app_is_replaced,
    a_killed_core_takes_its_generic_apps_with_it,
}

const START: &str = "passenger_app_start_command \"/usr/bin/python3 server.py\";";

fn generic_site(extra: &str) -> Site {
    Site {
        app: test_app("generic"),
        extra: format!("{START}\n{extra}"),
    }
}

/// The JSON string value of `"name": "..."` in the app's answer (no escapes in the tests'
/// values).
fn json_str(body: &str, name: &str) -> Option<String> {
    let start = body.find(&format!("\"{name}\": \""))? + name.len() + 5;
    Some(body[start..].split('"').next()?.to_string())
}

/// The JSON number value of `"name": N` in the app's answer.
fn json_num(body: &str, name: &str) -> Option<u64> {
    let start = body.find(&format!("\"{name}\": "))? + name.len() + 4;
    body[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The pid of the process that answered (from its body, which the app wrote itself).
fn app_pid(r: &Response) -> i32 {
    assert_eq!(r.status, 200, "{r:?}");
    json_num(&r.text(), "pid").unwrap_or_else(|| panic!("no pid in {r:?}")) as i32
}

fn touch(path: &Path, secs: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

fn a_generic_app_is_started_with_its_command_and_served(flavour: Flavour) {
    let nginx = Nginx::start(
        flavour,
        &[generic_site(
            "passenger_app_env staging; passenger_env_var GREETING hi;",
        )],
    );
    let r = http(
        nginx.port(),
        "GET",
        "/some/path?GREETING&PORT&IN_PASSENGER&PASSENGER_APP_ENV",
        &[("X-Custom", "custom value")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", nginx.passenger_log());
    let body = r.text();
    assert!(
        r.header("x-powered-by")
            .unwrap_or("")
            .starts_with("Passenger-rs"),
        "{r:?}"
    );
    assert_eq!(
        json_str(&body, "path").as_deref(),
        Some("/some/path?GREETING&PORT&IN_PASSENGER&PASSENGER_APP_ENV"),
        "{body}"
    );
    for needle in [
        "\"x-custom\": \"custom value\"",
        "\"x-forwarded-proto\": \"http\"",
        "\"x-forwarded-for\": \"127.0.0.1\"",
        "\"GREETING\": \"hi\"",
        "\"IN_PASSENGER\": \"1\"",
        "\"PASSENGER_APP_ENV\": \"staging\"",
    ] {
        assert!(body.contains(needle), "{needle} not in {body}");
    }
    // It runs in the app root and listens on the port the core gave it in $PORT.
    assert_eq!(
        json_str(&body, "cwd").map(std::path::PathBuf::from),
        Some(test_app("generic")),
        "{body}"
    );
    let port = json_num(&body, "port").unwrap();
    assert_eq!(
        json_str(&body, "PORT").map(|p| p.parse::<u64>().unwrap()),
        Some(port),
        "{body}"
    );
    assert_ne!(port, u64::from(nginx.port()));
    // A process the core started.
    let pid = app_pid(&r);
    assert!(
        descendants(nginx.core_pid()).contains(&pid),
        "app {pid} is not below the core {}: {:?}",
        nginx.core_pid(),
        with_cmdlines(&descendants(nginx.core_pid()))
    );
    assert_eq!(r.header("x-pid"), Some(pid.to_string().as_str()));
    // Later requests go to the same process.
    for _ in 0..10 {
        assert_eq!(app_pid(&nginx.get("/")), pid);
    }
    // Its output (both streams) reaches the log, after the core's note of the start.
    let started = format!("(generic app), listening on tcp://127.0.0.1:{port}");
    assert!(
        nginx.passenger_log().contains(&started),
        "{}",
        nginx.passenger_log()
    );
    for line in [
        format!("output: generic app {pid} listening on port {port}"),
        format!("output: generic app {pid} says hello on stderr"),
    ] {
        wait_until(&format!("`{line}` in the log"), || {
            nginx.passenger_log().contains(&line)
        });
    }
}

fn restart_txt_starts_a_new_generic_process(flavour: Flavour) {
    let restart = Scratch::new("generic-restart");
    let nginx = Nginx::start_with(
        flavour,
        &[generic_site(&format!(
            "passenger_restart_dir {};",
            restart.0.display()
        ))],
        "passenger_stat_throttle_rate 0;",
    );
    let first = nginx.get("/");
    assert_eq!(first.status, 200, "{first:?}\n{}", nginx.passenger_log());
    let old = app_pid(&first);
    touch(&restart.0.join("restart.txt"), 1_000_000);
    wait_until(
        "a request served by a new process after restart.txt",
        || {
            let r = nginx.get("/");
            r.status == 200 && app_pid(&r) != old
        },
    );
    wait_all_gone(&[old], "the old generic process after the restart");
}

fn a_start_command_that_exits_at_once_is_a_spawn_error(flavour: Flavour) {
    let nginx = Nginx::start(
        flavour,
        &[Site {
            app: test_app("generic"),
            extra: "passenger_app_env development;\n\
                    passenger_app_start_command \"echo cannot boot: no database >&2; exit 3\";"
                .into(),
        }],
    );
    let r = nginx.get("/");
    assert_eq!(r.status, 500, "{r:?}");
    let page = r.text();
    assert!(page.contains("cannot boot: no database"), "{page}");
    assert!(page.contains("exit status 3"), "{page}");
    let log = nginx.passenger_log();
    assert!(
        log.contains("echo cannot boot: no database >&2; exit 3"),
        "the command is not in the log:\n{log}"
    );
    assert!(
        log.contains("App output for") && log.contains(": cannot boot: no database"),
        "the app's output is not in the log:\n{log}"
    );
    assert!(log.contains("exit status 3"), "{log}");
}

fn min_instances_two_gives_two_processes_on_different_ports(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[generic_site("passenger_min_instances 2;")]);
    let first = nginx.get("/");
    assert_eq!(first.status, 200, "{first:?}\n{}", nginx.passenger_log());
    // Sequential requests spread over the processes once both are up.
    let mut seen = std::collections::BTreeMap::new();
    wait_until("requests answered by two generic processes", || {
        let r = nginx.get("/");
        let body = r.text();
        seen.insert(app_pid(&r), json_num(&body, "port").unwrap());
        seen.len() >= 2
    });
    assert_eq!(seen.len(), 2, "{seen:?}");
    let ports: std::collections::BTreeSet<u64> = seen.values().copied().collect();
    assert_eq!(ports.len(), 2, "two processes share a port: {seen:?}");
    let below_core = descendants(nginx.core_pid());
    for pid in seen.keys() {
        assert!(below_core.contains(pid), "{pid} not below the core");
    }
}

fn stopping_nginx_leaves_no_generic_process_behind(flavour: Flavour) {
    let mut nginx = Nginx::start(flavour, &[generic_site("passenger_min_instances 2;")]);
    assert_eq!(nginx.get("/").status, 200, "{}", nginx.passenger_log());
    let mut pids = std::collections::BTreeSet::new();
    wait_until("two generic processes", || {
        pids.insert(app_pid(&nginx.get("/")));
        pids.len() >= 2
    });
    // Everything the core started: the apps, and any shell in between.
    let agents = nginx.agent_pids();
    for pid in &pids {
        assert!(agents.contains(pid), "{pid} not among {agents:?}");
    }
    nginx.stop();
    wait_all_gone(&agents, "the agents and generic apps after nginx -s stop");
}

fn a_generic_app_that_never_listens_times_out_and_is_killed(flavour: Flavour) {
    let nginx = Nginx::start(
        flavour,
        &[Site {
            app: test_app("generic"),
            extra: "passenger_start_timeout 1;\n\
                    passenger_app_start_command \"echo sleeping instead; exec sleep 600\";"
                .into(),
        }],
    );
    let r = nginx.get("/");
    assert_eq!(r.status, 500, "{r:?}");
    let log = nginx.passenger_log();
    assert!(log.contains("passenger_start_timeout"), "{log}");
    assert!(log.contains(": sleeping instead"), "{log}");
    // The process that never listened is gone: nothing is left below the core.
    let core = nginx.core_pid();
    wait_until("no process below the core after the start timeout", || {
        descendants(core).into_iter().all(|p| !alive(p))
    });
}

fn a_crashed_generic_app_is_replaced(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[generic_site("")]);
    let first = nginx.get("/");
    assert_eq!(first.status, 200, "{first:?}\n{}", nginx.passenger_log());
    let old = app_pid(&first);
    // SAFETY: a plain kill(2) of the app process the test just saw.
    assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
    wait_all_gone(&[old], "the killed generic app");
    wait_until("a new process serving after the crash", || {
        let r = nginx.get("/");
        r.status == 200 && app_pid(&r) != old
    });
    let log = nginx.passenger_log();
    assert!(log.contains("exited unexpectedly"), "{log}");
}

/// A core killed without its shutdown (SIGKILL) leaves no generic app behind: they get the
/// parent-death signal (a loader would see its stdin close; a generic app would not). The
/// watchdog's new core serves with new processes.
fn a_killed_core_takes_its_generic_apps_with_it(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[generic_site("")]);
    let first = nginx.get("/");
    assert_eq!(first.status, 200, "{first:?}\n{}", nginx.passenger_log());
    let old = app_pid(&first);
    let core = nginx.core_pid();
    // SAFETY: a plain kill(2) of the core the test just looked up.
    assert_eq!(unsafe { libc::kill(core, libc::SIGKILL) }, 0);
    wait_all_gone(&[old], "the generic app of the killed core");
    wait_until("the watchdog's new core serves with a new process", || {
        let r = nginx.get("/");
        r.status == 200 && app_pid(&r) != old
    });
}
