//! The core's side of the pool, request and spawning directives, end to end: real nginx
//! (both builds) with the directives by name, the `directives` test app (tests/apps), and the
//! effects a user would see (pids, statuses, cookies, log lines).

#[macro_use]
mod common;

use common::websocket_frames::{client_frame, open_websocket, read_frame};
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

for_both_nginx! {
    response_buffer_high_watermark_bounds_what_a_slow_client_holds,
    max_instances_caps_the_app_below_min_instances_and_demand,
    force_max_concurrent_requests_per_process_overrides_the_thread_count,
    max_request_time_kills_the_process_and_answers_504,
    memory_limit_recycles_a_process_that_grew_past_it,
    rolling_restarts_off_waits_for_the_old_process_before_new_ones_serve,
    sticky_sessions_route_a_client_to_its_process,
    abort_websockets_on_process_shutdown_closes_or_keeps_upgraded_connections,
    preload_bundler_loads_bundler_before_the_app,
}

fn site(extra: &str) -> Site {
    Site {
        app: test_app("directives"),
        extra: extra.into(),
    }
}

/// Sends a request and returns the connection without reading the response.
fn send(port: u16, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    s
}

fn read_response(mut s: TcpStream) -> Response {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading the response");
    parse_response(&raw)
}

/// A negative can only be observed over a while: `path` must not appear for this long.
const STAYS_ABSENT: Duration = Duration::from_secs(2);

fn assert_stays_absent(path: &Path, what: &str) {
    let until = Instant::now() + STAYS_ABSENT;
    while Instant::now() < until {
        assert!(!path.exists(), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With the default watermark (128 MiB) the core takes a 32 MiB response from the app while
/// the client reads nothing, so the app finishes; with a 1 MiB watermark the core stops
/// reading, and the app finishes only once the client reads.
fn response_buffer_high_watermark_bounds_what_a_slow_client_holds(flavour: Flavour) {
    let scratch = Scratch::writable_by_apps("hwm");
    for (http_extra, held) in [
        ("", false),
        ("passenger_response_buffer_high_watermark 1048576;", true),
    ] {
        let nginx = Nginx::start_with(flavour, &[site("")], http_extra);
        let progress = scratch.0.join(format!("progress-{held}"));
        let done = scratch.0.join(format!("done-{held}"));
        let conn = send(
            nginx.port(),
            &format!(
                "/big?mb=32&progress={}&done={}",
                progress.display(),
                done.display()
            ),
        );
        wait_until("the app started sending its response", || progress.exists());
        if held {
            assert_stays_absent(
                &done,
                "with a 1 MiB watermark, the app finished a 32 MiB response the client did not read",
            );
        } else {
            wait_until(
                "with the default watermark, the app finishes while the client reads nothing",
                || done.exists(),
            );
        }
        let response = read_response(conn);
        assert_eq!(response.status, 200);
        assert_eq!(response.body.len(), 32 * 1024 * 1024);
        wait_until("the app finished once the client read", || done.exists());
    }
}

/// Starts `n` requests to `/wait`, each on a thread (the response comes with `join`): each
/// writes its process's pid to its `started` file, then waits until the `release` file exists.
fn hold_requests(
    nginx: &Nginx,
    scratch: &Path,
    n: usize,
) -> (
    PathBuf,
    Vec<PathBuf>,
    Vec<std::thread::JoinHandle<Response>>,
) {
    let release = scratch.join("release");
    let started: Vec<_> = (0..n)
        .map(|i| scratch.join(format!("started-{i}")))
        .collect();
    let requests = started
        .iter()
        .map(|s| {
            let (port, path) = (
                nginx.port(),
                format!("/wait?file={}&started={}", release.display(), s.display()),
            );
            std::thread::spawn(move || http(port, "GET", &path, &[], b""))
        })
        .collect();
    (release, started, requests)
}

fn pid_in(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `passenger_max_instances 2` with `passenger_min_instances 3`: two processes; of three
/// requests held at once, two run (one per process) and the third waits for one of them.
fn max_instances_caps_the_app_below_min_instances_and_demand(flavour: Flavour) {
    let scratch = Scratch::writable_by_apps("maxinst");
    let nginx = Nginx::start(
        flavour,
        &[site(
            "passenger_min_instances 3; passenger_max_instances 2;",
        )],
    );
    assert_eq!(nginx.get("/").status, 200);
    wait_until("two processes (min_instances 3, capped at 2)", || {
        nginx.app_pids().len() == 2
    });
    let (release, started, requests) = hold_requests(&nginx, &scratch.0, 3);
    let mut running = Vec::new();
    wait_until("two of the three requests run", || {
        running = started.iter().filter_map(|s| pid_in(s)).collect::<Vec<_>>();
        running.len() == 2
    });
    assert_ne!(running[0], running[1], "one request per process");
    let waiting = started.iter().find(|s| !s.exists()).unwrap();
    assert_stays_absent(waiting, "a third request ran: a third process served it");
    assert_eq!(nginx.app_pids().len(), 2, "{:?}", nginx.app_pids());
    std::fs::write(&release, "").unwrap();
    for r in requests {
        let r = r.join().unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        let pid: i32 = r.header("x-pid").unwrap().parse().unwrap();
        assert!(running.contains(&pid), "{pid} is not one of {running:?}");
    }
    assert_eq!(nginx.app_pids().len(), 2, "{:?}", nginx.app_pids());
}

/// Holds two requests at once; returns the pids that run them.
fn two_held_requests(nginx: &Nginx, scratch: &Path) -> (i32, i32) {
    let (release, started, requests) = hold_requests(nginx, scratch, 2);
    wait_until("both requests run", || started.iter().all(|s| s.exists()));
    let pids = (pid_in(&started[0]).unwrap(), pid_in(&started[1]).unwrap());
    std::fs::write(&release, "").unwrap();
    for r in requests {
        assert_eq!(r.join().unwrap().status, 200);
    }
    pids
}

/// A process with two threads takes two requests at once; forced to one request at a time,
/// the second request gets a second process.
fn force_max_concurrent_requests_per_process_overrides_the_thread_count(flavour: Flavour) {
    for (extra, same_process) in [
        ("passenger_thread_count 2;", true),
        (
            "passenger_thread_count 2; passenger_force_max_concurrent_requests_per_process 1;",
            false,
        ),
    ] {
        let scratch = Scratch::writable_by_apps("forcemax");
        let nginx = Nginx::start(flavour, &[site(extra)]);
        let (a, b) = two_held_requests(&nginx, &scratch.0);
        assert_eq!(a == b, same_process, "{extra}: requests ran in {a} and {b}");
    }
}

/// `passenger_max_request_time 1`: a request that sleeps 30 s is answered 504, its process is
/// killed and replaced, and the log says so with the app, the pid and the limit.
fn max_request_time_kills_the_process_and_answers_504(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("passenger_max_request_time 1;")]);
    let first = nginx.get("/");
    assert_eq!(first.status, 200);
    let old = first.pid();
    let slow = nginx.get("/sleep?secs=30");
    assert_eq!(slow.status, 504, "{slow:?}");
    wait_until("the process that ran too long is gone", || !alive(old));
    let next = nginx.get("/");
    assert_eq!(next.status, 200);
    assert_ne!(next.pid(), old, "a new process serves");
    let line = format!("App {old} of group");
    let log = nginx.passenger_log();
    let logged = log
        .lines()
        .find(|l| l.contains(&line) && l.contains("passenger_max_request_time (1 s)"))
        .unwrap_or_else(|| panic!("no log line about {old} and the limit in:\n{log}"));
    assert!(
        logged.contains(&test_app("directives").display().to_string()),
        "{logged}"
    );
    // A request within the limit is not affected.
    assert_eq!(nginx.get("/sleep?secs=0.1").status, 200);
}

/// `passenger_memory_limit 100`: a process that grows by 150 MB during a request is shut down
/// gracefully after it, with a log line saying why, and a new process serves the next request;
/// one that stays small is kept.
fn memory_limit_recycles_a_process_that_grew_past_it(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("passenger_memory_limit 100;")]);
    let first = nginx.get("/");
    assert_eq!(first.status, 200);
    let small = first.pid();
    assert_eq!(nginx.get("/").pid(), small, "a small process is kept");
    let grown = nginx.get("/grow?mb=150");
    assert_eq!(grown.status, 200, "the request that grew it completes");
    assert_eq!(grown.pid(), small);
    wait_until("the grown process is gone", || !alive(small));
    let next = nginx.get("/");
    assert_eq!(next.status, 200);
    assert_ne!(next.pid(), small);
    let log = nginx.passenger_log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("App {small} of group"))
                && l.contains("passenger_memory_limit (100 MB)")),
        "no log line about {small} and the limit in:\n{log}"
    );
}

fn touch(path: &Path, unix_secs: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(unix_secs))
        .unwrap();
}

/// A scratch dir the app may write to, holding the app's restart.txt (touched once), and the
/// server directives that make it the restart dir, followed by `more`.
fn with_restart_dir(label: &str, more: &str) -> (Scratch, std::path::PathBuf, String) {
    let scratch = Scratch::writable_by_apps(label);
    let restart = scratch.0.join("restart.txt");
    touch(&restart, 1_000_000);
    let extra = format!("passenger_restart_dir {}; {more}", scratch.0.display());
    (scratch, restart, extra)
}

/// A restart (restart.txt) while the only process runs a held request. Rolling (the default):
/// a new process serves the next request at once. `passenger_rolling_restarts off`: the next
/// request waits until the old process finished its request and stopped, and no new process
/// starts before that.
fn rolling_restarts_off_waits_for_the_old_process_before_new_ones_serve(flavour: Flavour) {
    for rolling in [true, false] {
        let (scratch, restart, extra) = with_restart_dir(
            "rolling",
            if rolling {
                ""
            } else {
                "passenger_rolling_restarts off;"
            },
        );
        let nginx = Nginx::start_with(flavour, &[site(&extra)], "passenger_stat_throttle_rate 0;");
        let (release, started, mut held) = hold_requests(&nginx, &scratch.0, 1);
        let (started, held) = (&started[0], held.remove(0));
        wait_until("the held request runs", || started.exists());
        let old = pid_in(started).unwrap();
        touch(&restart, 2_000_000);
        let (tx, rx) = std::sync::mpsc::channel();
        let port = nginx.port();
        let next = std::thread::spawn(move || {
            let r = http(port, "GET", "/", &[], b"");
            let _ = tx.send(());
            r
        });
        if rolling {
            rx.recv_timeout(PATIENCE)
                .expect("rolling: the next request is served during the restart");
        } else {
            let until = Instant::now() + STAYS_ABSENT;
            while Instant::now() < until {
                assert!(
                    rx.try_recv().is_err(),
                    "rolling off: a request was served while the old process still ran"
                );
                assert_eq!(nginx.app_pids(), vec![old], "no new process yet");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        std::fs::write(&release, "").unwrap();
        assert_eq!(
            held.join().unwrap().status,
            200,
            "the held request completes"
        );
        let next = next.join().unwrap();
        assert_eq!(next.status, 200);
        assert_ne!(next.pid(), old, "a new process serves after the restart");
        wait_until("the old process is gone", || !alive(old));
    }
}

/// The `name=<id>` part of a Set-Cookie header for cookie `name`, and the rest.
/// `passenger_sticky_sessions on` with two processes: a response without a valid cookie sets
/// one naming its process, and every request carrying it goes to that process; an unknown id
/// is ignored (and replaced). The cookie name and attributes follow their directives.
fn sticky_sessions_route_a_client_to_its_process(flavour: Flavour) {
    let nginx = Nginx::start(
        flavour,
        &[
            site("passenger_sticky_sessions on; passenger_min_instances 2;"),
            site(
                "passenger_sticky_sessions on; passenger_min_instances 2; \
                 passenger_sticky_sessions_cookie_name route; \
                 passenger_sticky_sessions_cookie_attributes \"Path=/; HttpOnly\";",
            ),
        ],
    );
    assert_eq!(nginx.get("/").status, 200);
    wait_until("two processes", || nginx.app_pids().len() == 2);
    for (port, name, attributes) in [
        (nginx.ports[0], "_passenger_route", "SameSite=Lax; Secure;"),
        (nginx.ports[1], "route", "Path=/; HttpOnly"),
    ] {
        // Without a cookie, requests spread over both processes, each one setting a cookie.
        let mut cookies = std::collections::HashMap::new();
        for _ in 0..4 {
            let r = http(port, "GET", "/", &[], b"");
            let (cookie, rest) = r
                .set_cookie(name)
                .unwrap_or_else(|| panic!("no {name} cookie set in {r:?}"));
            assert_eq!(rest, attributes);
            cookies.insert(r.pid(), cookie.to_string());
        }
        assert_eq!(cookies.len(), 2, "both processes served: {cookies:?}");
        for (pid, cookie) in &cookies {
            for _ in 0..4 {
                let r = http(
                    port,
                    "GET",
                    "/",
                    &[("Cookie", &format!("a=b; {cookie}"))],
                    b"",
                );
                assert_eq!(r.pid(), *pid, "{cookie} goes to {pid}");
                assert!(
                    r.set_cookie(name).is_none(),
                    "a valid cookie is kept: {r:?}"
                );
            }
        }
        let r = http(
            port,
            "GET",
            "/",
            &[("Cookie", &format!("{name}=12345"))],
            b"",
        );
        assert_eq!(r.status, 200);
        let (cookie, _) = r.set_cookie(name).expect("an unknown id is replaced");
        assert_eq!(cookie, cookies.get(&r.pid()).unwrap());
    }
}

/// A restart replaces the process that holds a WebSocket. By default the WebSocket is closed
/// when the process shuts down; with `passenger_abort_websockets_on_process_shutdown off` it
/// keeps working, and the old process stops once it is closed.
fn abort_websockets_on_process_shutdown_closes_or_keeps_upgraded_connections(flavour: Flavour) {
    for abort in [true, false] {
        let (_scratch, restart, extra) = with_restart_dir(
            "ws",
            if abort {
                ""
            } else {
                "passenger_abort_websockets_on_process_shutdown off;"
            },
        );
        let nginx = Nginx::start_with(
            flavour,
            &[Site {
                app: test_app("node-ws"),
                extra,
            }],
            "passenger_stat_throttle_rate 0;",
        );
        assert_eq!(nginx.get("/").status, 200);
        wait_until("one app process", || nginx.app_pids().len() == 1);
        let old = nginx.app_pids()[0];
        let mut ws = open_websocket(nginx.port());
        ws.write_all(&client_frame("one")).unwrap();
        assert_eq!(read_frame(&mut ws), "echo: one");

        touch(&restart, 2_000_000);
        assert_eq!(
            nginx.get("/").status,
            200,
            "the request that notices the restart"
        );
        let replaced = format!("App {old} of group");
        wait_until("the old process is being replaced", || {
            nginx
                .passenger_log()
                .lines()
                .any(|l| l.contains(&replaced) && l.contains("replaced by a restart"))
        });
        if abort {
            let mut rest = Vec::new();
            // EOF, or a reset: either way the connection is closed.
            let _ = ws.read_to_end(&mut rest);
            assert!(rest.is_empty(), "nothing but the end: {rest:?}");
            wait_until("the old process stops", || !alive(old));
        } else {
            ws.write_all(&client_frame("two")).unwrap();
            assert_eq!(
                read_frame(&mut ws),
                "echo: two",
                "the WebSocket keeps working"
            );
            assert!(alive(old), "the old process lives while its WebSocket does");
            // A close frame (masked, empty): the app ends the connection.
            ws.write_all(&[0x88, 0x80, 1, 2, 3, 4]).unwrap();
            let mut rest = Vec::new();
            let _ = ws.read_to_end(&mut rest);
            drop(ws);
            wait_until("the old process stops once its WebSocket closed", || {
                !alive(old)
            });
        }
    }
}

/// `passenger_preload_bundler on`: Bundler is loaded before the app (which has no Gemfile, so
/// nothing else loads it), with both spawn methods; when Bundler cannot be loaded, the spawn
/// fails and the log names the directive and Bundler.
fn preload_bundler_loads_bundler_before_the_app(flavour: Flavour) {
    let no_bundler = test_app("directives").join("no-bundler");
    let nginx = Nginx::start(
        flavour,
        &[
            site("passenger_app_group_name plain;"),
            site("passenger_app_group_name smart; passenger_preload_bundler on;"),
            site(
                "passenger_app_group_name direct; passenger_preload_bundler on; \
                 passenger_spawn_method direct;",
            ),
            site(&format!(
                "passenger_app_group_name missing; passenger_preload_bundler on; \
                 passenger_env_var RUBYLIB {};",
                no_bundler.display()
            )),
        ],
    );
    let bundler = |i: usize| http(nginx.ports[i], "GET", "/bundler", &[], b"");
    assert_eq!(bundler(0).text(), "not loaded");
    assert_eq!(bundler(1).text(), "loaded", "smart spawning");
    assert_eq!(bundler(2).text(), "loaded", "direct spawning");
    let failed = bundler(3);
    assert_eq!(failed.status, 500, "{failed:?}");
    let log = nginx.passenger_log();
    assert!(
        log.contains("passenger_preload_bundler is on but Bundler cannot be loaded"),
        "{log}"
    );
}
