//! The application pool end to end: scaling, queueing, crash recovery, recycling and rolling
//! restarts, with real nginx and real Ruby processes. Needs `scripts/build` to have run.

#[macro_use]
mod common;

use common::*;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

fn site(extra: &str) -> Site {
    let mut s = Site::app("pool");
    s.extra = extra.to_string();
    s
}

/// The app processes: the core's children.
/// Sets `path`'s mtime to `secs` after the epoch (creating the file), so each touch is a change
/// whatever the file system's timestamp granularity.
fn touch(path: &Path, secs: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// Clients that each send `GET /` in a loop, a new connection per request, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    clients: Vec<std::thread::JoinHandle<Vec<Response>>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let clients = (0..clients)
            .map(|_| {
                let (stop, served) = (stop.clone(), served.clone());
                std::thread::spawn(move || {
                    let mut responses = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        responses.push(http(port, "GET", "/", &[], b""));
                        served.fetch_add(1, Ordering::SeqCst);
                    }
                    responses
                })
            })
            .collect();
        Load {
            stop,
            served,
            clients,
        }
    }

    /// Waits until `n` more responses have come in.
    fn wait_for(&self, n: usize, what: &str) {
        let start = self.served.load(Ordering::SeqCst);
        wait_until(what, || self.served.load(Ordering::SeqCst) >= start + n);
    }

    /// Every response, each client's in the order they came.
    fn stop(self) -> Vec<Response> {
        self.stop.store(true, Ordering::SeqCst);
        self.clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    }
}

fn restart_txt_under_load_drops_no_request(flavour: Flavour) {
    restart_under_load(flavour, 1, "");
}

/// The same with six clients and room for one process: requests are sent ahead to it, and the
/// restart drains it with one of them waiting in it.
fn restart_txt_under_concurrent_load_on_a_full_pool_drops_no_request(flavour: Flavour) {
    restart_under_load(flavour, 6, "passenger_max_pool_size 1;");
}

fn restart_under_load(flavour: Flavour, clients: usize, http_extra: &str) {
    let restart = Scratch::new("restart");
    let nginx = Nginx::start_with(
        flavour,
        &[site(&format!(
            "passenger_restart_dir {};",
            restart.0.display()
        ))],
        &format!("passenger_stat_throttle_rate 0; {http_extra}"),
    );
    let first = nginx.get("/");
    assert_eq!(first.status, 200, "{first:?}\n{}", nginx.passenger_log());
    let old = first.pid();

    let load = Load::start(nginx.port(), clients);
    load.wait_for(5, "a few requests served before the restart");
    touch(&restart.0.join("restart.txt"), 1_000_000);
    wait_until(
        "a request served by a new process after restart.txt",
        || {
            let r = nginx.get("/");
            r.status == 200 && r.pid() != old
        },
    );
    // Keep the loop going until the old process is gone too.
    wait_until("the old process stopped after the restart", || !alive(old));
    load.wait_for(5, "more requests after the restart");
    let (pids, failures): (Vec<Response>, Vec<Response>) =
        load.stop().into_iter().partition(|r| r.status == 200);
    let pids: Vec<i32> = pids.iter().map(Response::pid).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the restart: {:?}\n{}",
        failures.len(),
        failures.len() + pids.len(),
        failures.first(),
        nginx.passenger_log()
    );
    assert_ne!(
        pids.last(),
        Some(&old),
        "the last requests went to the new process"
    );
}

fn min_instances_exist_after_the_first_request(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("passenger_min_instances 3;")]);
    assert_eq!(nginx.get("/").status, 200);
    wait_until("3 app processes (passenger_min_instances 3)", || {
        nginx.app_pids().len() == 3
    });
    // Sequential requests spread over them (least recently used first).
    let mut seen = std::collections::BTreeSet::new();
    wait_until("sequential requests reach all 3 processes", || {
        seen.insert(nginx.get("/").pid());
        seen.len() == 3
    });
}

fn two_apps_share_a_full_pool(flavour: Flavour) {
    let mut one = site("passenger_min_instances 2;");
    one.extra.push_str("passenger_max_request_queue_time 30;");
    let nginx = Nginx::start_with(
        flavour,
        &[one, Site::app("second")],
        "passenger_max_pool_size 2;",
    );
    let a = http(nginx.ports[0], "GET", "/", &[], b"");
    assert_eq!(a.status, 200);
    wait_until("the first app fills the pool (2 processes)", || {
        nginx.app_pids().len() == 2
    });
    let b = http(nginx.ports[1], "GET", "/", &[], b"");
    assert_eq!(b.status, 200, "{b:?}\n{}", nginx.passenger_log());
    assert_eq!(b.text(), "hello from the second app\n");
    let a = http(nginx.ports[0], "GET", "/", &[], b"");
    assert_eq!(a.status, 200);
    // The evicted process may take a moment to exit; then two are left.
    wait_until("at most passenger_max_pool_size (2) processes", || {
        nginx.app_pids().len() <= 2
    });
}

fn a_full_queue_answers_the_overflow_status(flavour: Flavour) {
    const QUEUE: usize = 3;
    let scratch = Scratch::writable_by_apps("queue");
    let release = scratch.0.join("release");
    let started = scratch.0.join("started");
    let nginx = Nginx::start_with(
        flavour,
        &[site(&format!(
            "passenger_max_request_queue_size {QUEUE}; passenger_request_queue_overflow_status_code 429;"
        ))],
        "passenger_max_pool_size 1;",
    );
    let port = nginx.port();
    let wait_path = format!(
        "/wait?file={}&started={}",
        release.display(),
        started.display()
    );
    let busy = {
        let p = wait_path.clone();
        std::thread::spawn(move || http(port, "GET", &p, &[], b""))
    };
    wait_until("the first slow request in the app", || started.exists());
    // The only process is busy: N+1 more requests, N fit in the queue.
    let others: Vec<_> = (0..=QUEUE)
        .map(|_| {
            let p = format!("/wait?file={}", release.display());
            std::thread::spawn(move || http(port, "GET", &p, &[], b""))
        })
        .collect();
    // Bounded like wait_until, but a timeout shows the core's and nginx's logs: this once
    // timed out in CI without reproducing locally, and the logs are what would explain it.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !others.iter().any(|t| t.is_finished()) {
        assert!(
            std::time::Instant::now() < deadline,
            "no request answered at once after {PATIENCE:?}\n--- passenger log:\n{}\n--- error log:\n{}",
            nginx.passenger_log(),
            nginx.error_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    touch(&release, 1);
    assert_eq!(busy.join().unwrap().status, 200);
    let mut statuses: Vec<u16> = others
        .into_iter()
        .map(|t| t.join().unwrap().status)
        .collect();
    statuses.sort();
    let mut expected = vec![200; QUEUE];
    expected.push(429);
    assert_eq!(statuses, expected, "{}", nginx.passenger_log());
}

/// Sends `GET /`: its status if answered within 2 s, else `None`: it waits in the queue (and
/// leaves it as this closes the connection).
fn probe(port: u16) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => Some(parse_response(&raw).status),
        Err(_) if raw.is_empty() => None,
        Err(e) => panic!("reading a probe's response: {e}"),
    }
}

fn a_waiting_request_whose_client_left_leaves_the_queue(flavour: Flavour) {
    use std::io::Write;
    let scratch = Scratch::writable_by_apps("leave");
    let release = scratch.0.join("release");
    let started = scratch.0.join("started");
    let left_started = scratch.0.join("left-started");
    let nginx = Nginx::start_with(
        flavour,
        &[site(
            "passenger_max_request_queue_size 1; passenger_request_queue_overflow_status_code 429;",
        )],
        "passenger_max_pool_size 1;",
    );
    let port = nginx.port();
    let busy = {
        let p = format!(
            "/wait?file={}&started={}",
            release.display(),
            started.display()
        );
        std::thread::spawn(move || http(port, "GET", &p, &[], b""))
    };
    wait_until("the first slow request in the app", || started.exists());
    let send_leaving = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(
            format!(
                "GET /wait?file={}&started={} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                release.display(),
                left_started.display()
            )
            .as_bytes(),
        )
        .unwrap();
        s.set_nonblocking(true).unwrap();
        s
    };
    let mut leaving = send_leaving();
    wait_until(
        "the request waits in the queue (a probe is refused with 429)",
        || {
            if probe(port) == Some(429) {
                return true;
            }
            // The probe came first and took the queue's place: the request was refused (or is
            // still on its way). Once it has its answer, send it again.
            let mut buf = [0u8; 1];
            if !matches!(leaving.peek(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            {
                leaving = send_leaving();
            }
            false
        },
    );
    drop(leaving);
    wait_until(
        "the request left the queue (a probe waits instead of being refused)",
        || probe(port).is_none(),
    );
    touch(&release, 1);
    assert_eq!(busy.join().unwrap().status, 200);
    // Requests are served in arrival order: had it stayed queued, the app would have seen it
    // before this one.
    assert_eq!(nginx.get("/").status, 200);
    assert!(
        !left_started.exists(),
        "the request whose client left was served anyway"
    );
}

fn killed_app_process_is_replaced(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("")]);
    let pid = nginx.get("/").pid();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_all_gone(&[pid], "the killed app process");
    for _ in 0..3 {
        let r = nginx.get("/");
        assert_eq!(r.status, 200, "{r:?}\n{}", nginx.passenger_log());
        assert_ne!(r.pid(), pid);
    }
}

fn a_request_in_flight_on_a_killed_process_gets_502(flavour: Flavour) {
    let scratch = Scratch::writable_by_apps("inflight");
    let started = scratch.0.join("started");
    let nginx = Nginx::start(flavour, &[site("")]);
    let port = nginx.port();
    let path = format!(
        "/wait?file={}&started={}",
        scratch.0.join("never").display(),
        started.display()
    );
    let in_flight = std::thread::spawn(move || http(port, "GET", &path, &[], b""));
    wait_until("the slow request in the app", || {
        std::fs::read_to_string(&started).is_ok_and(|s| !s.is_empty())
    });
    let pid: i32 = std::fs::read_to_string(&started).unwrap().parse().unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let r = in_flight.join().unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    let next = nginx.get("/");
    assert_eq!(next.status, 200, "{next:?}\n{}", nginx.passenger_log());
    assert_ne!(next.pid(), pid);
}

/// Under concurrent load on a one-process app the core sends the busy process its next request
/// ahead (the Rack and WSGI loaders take one). Killing the process then fails at most the
/// request it was serving, as without requests sent ahead: the one waiting in it goes to the new
/// process.
fn a_request_sent_ahead_to_a_killed_process_goes_to_another(flavour: Flavour) {
    killed_under_load_fails_at_most_one_request(flavour, site(""));
}

fn a_request_sent_ahead_to_a_killed_wsgi_process_goes_to_another(flavour: Flavour) {
    killed_under_load_fails_at_most_one_request(flavour, Site::app("wsgi"));
}

fn killed_under_load_fails_at_most_one_request(flavour: Flavour, site: Site) {
    let nginx = Nginx::start_with(flavour, &[site], "passenger_max_pool_size 1;");
    let first = nginx.get("/");
    assert_eq!(first.status, 200, "{first:?}\n{}", nginx.passenger_log());
    let old = first.pid();
    let load = Load::start(nginx.port(), 6);
    load.wait_for(300, "requests served before the kill");
    unsafe { libc::kill(old, libc::SIGKILL) };
    wait_all_gone(&[old], "the killed app process");
    load.wait_for(300, "requests served after the kill");
    let responses = load.stop();
    let failed: Vec<&Response> = responses.iter().filter(|r| r.status != 200).collect();
    assert!(
        failed.len() <= 1,
        "{} of {} requests failed when the process was killed (at most the one it was serving \
         may): {:?}\n{}",
        failed.len(),
        responses.len(),
        failed,
        nginx.passenger_log()
    );
    assert!(
        responses.iter().any(|r| r.status == 200 && r.pid() != old),
        "a new process served"
    );
}

fn max_requests_recycles_the_process(flavour: Flavour) {
    let nginx = Nginx::start(flavour, &[site("passenger_max_requests 3;")]);
    let pids: Vec<i32> = (0..3).map(|_| nginx.get("/").pid()).collect();
    assert!(pids.iter().all(|&p| p == pids[0]), "{pids:?}");
    let fourth = nginx.get("/").pid();
    assert_ne!(fourth, pids[0], "the fourth request goes to a new process");
    wait_all_gone(&[pids[0]], "the recycled process");
}

/// Serves a copy of the pool app, breaks its config.ru and touches restart.txt. Returns nginx,
/// the old pid and the scratch dir (which must outlive nginx).
fn break_a_deploy(flavour: Flavour, resist: &str) -> (Nginx, i32, Scratch) {
    let scratch = Scratch::new("deploy");
    let app = scratch.0.join("app");
    std::fs::create_dir_all(app.join("public")).unwrap();
    std::fs::create_dir_all(app.join("tmp")).unwrap();
    std::fs::copy(test_app("pool").join("config.ru"), app.join("config.ru")).unwrap();
    let site = Site {
        app: app.clone(),
        extra: format!(
            "passenger_resist_deployment_errors {resist}; passenger_max_requests 1000; \
             passenger_max_requests_jitter 10;"
        ),
    };
    let nginx = Nginx::start_with(flavour, &[site], "passenger_stat_throttle_rate 0;");
    let first = nginx.get("/");
    assert_eq!(first.status, 200, "{first:?}\n{}", nginx.passenger_log());
    std::fs::write(
        app.join("config.ru"),
        "raise 'this deploy is broken on purpose'\n",
    )
    .unwrap();
    touch(&app.join("tmp/restart.txt"), 1_000_000);
    (nginx, first.pid(), scratch)
}

fn a_failed_deploy_stops_the_old_version_and_shows_the_error(flavour: Flavour) {
    let (nginx, old, _scratch) = break_a_deploy(flavour, "off");
    wait_until("requests answered with the deploy's error", || {
        nginx.get("/").status == 500
    });
    wait_all_gone(&[old], "the old version after a failed deploy");
    assert!(
        nginx
            .passenger_log()
            .contains("this deploy is broken on purpose"),
        "{}",
        nginx.passenger_log()
    );
}

fn resist_deployment_errors_keeps_the_old_version_serving(flavour: Flavour) {
    let (nginx, old, _scratch) = break_a_deploy(flavour, "on");
    // The first request after the touch starts the restart; the new version's failure is
    // logged; the old process goes on serving.
    assert_eq!(nginx.get("/").pid(), old);
    wait_until("the new version's failure logged", || {
        nginx
            .passenger_log()
            .contains("this deploy is broken on purpose")
    });
    for _ in 0..3 {
        let r = nginx.get("/");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.pid(), old, "the old version serves on");
    }
}

fn invalid_pool_directives_are_refused(flavour: Flavour) {
    for (http_extra, server_extra, named) in [
        ("passenger_max_pool_size 0;", "", "\"0\""),
        ("", "passenger_min_instances many;", "\"many\""),
        (
            "",
            "passenger_request_queue_overflow_status_code 99;",
            "\"99\"",
        ),
    ] {
        let dir = Scratch::new("badconf");
        std::fs::create_dir_all(dir.0.join("registry")).unwrap();
        let s = site(server_extra);
        std::fs::write(
            dir.0.join("nginx.conf"),
            Nginx::config_with(flavour, &dir.0, &[(free_port(), &s)], http_extra),
        )
        .unwrap();
        let out = nginx_command(flavour, &dir.0).arg("-t").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "nginx -t accepted {http_extra}{server_extra}"
        );
        assert!(
            err.contains(named) && err.contains("whole number"),
            "the error should name the value {named}: {err}"
        );
    }
}

for_both_nginx! {
    restart_txt_under_load_drops_no_request,
    restart_txt_under_concurrent_load_on_a_full_pool_drops_no_request,
    min_instances_exist_after_the_first_request,
    two_apps_share_a_full_pool,
    a_full_queue_answers_the_overflow_status,
    killed_app_process_is_replaced,
    a_waiting_request_whose_client_left_leaves_the_queue,
    a_request_in_flight_on_a_killed_process_gets_502,
    a_request_sent_ahead_to_a_killed_process_goes_to_another,
    a_request_sent_ahead_to_a_killed_wsgi_process_goes_to_another,
    max_requests_recycles_the_process,
    a_failed_deploy_stops_the_old_version_and_shows_the_error,
    resist_deployment_errors_keeps_the_old_version_serving,
    invalid_pool_directives_are_refused,
}
