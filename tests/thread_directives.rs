//! `passenger_thread_count` and `passenger_concurrency_model` in the nginx module: `nginx -t`
//! refuses bad values naming the directive, the value, the file and the line; and the module
//! sends `PASSENGER_THREAD_COUNT` as a stand-in core receives it: when the count is above 1
//! whatever the model, with the `thread` model even at 1, and never otherwise; inherited
//! http → server → location → if. Against Debian's nginx 1.22 and the bundled nginx. Needs
//! `scripts/build` to have run.

#[macro_use]
mod common;

use common::config_check::*;
use common::fake_core::*;
use common::*;
use passenger_protocol::options;

const BAD: &[Bad] = &[
    in_server(
        "passenger_thread_count 0;",
        &["passenger_thread_count", "\"0\"", "from 1 to 1024"],
    ),
    in_server(
        "passenger_thread_count -4;",
        &["passenger_thread_count", "\"-4\""],
    ),
    in_server(
        "passenger_thread_count many;",
        &["passenger_thread_count", "\"many\""],
    ),
    in_server(
        "passenger_thread_count 4x;",
        &["passenger_thread_count", "\"4x\""],
    ),
    // More than the core accepts: refused here rather than on every request.
    in_server(
        "passenger_thread_count 1025;",
        &["passenger_thread_count", "\"1025\"", "1024"],
    ),
    in_server(
        "passenger_thread_count 4 8;",
        &["passenger_thread_count", "invalid number of arguments"],
    ),
    in_server(
        "passenger_concurrency_model fiber;",
        &[
            "passenger_concurrency_model",
            "\"fiber\"",
            "process",
            "thread",
        ],
    ),
    in_server(
        "passenger_concurrency_model Thread;",
        &["passenger_concurrency_model", "\"Thread\""],
    ),
    in_server(
        "passenger_concurrency_model;",
        &["passenger_concurrency_model", "invalid number of arguments"],
    ),
    in_http(
        "passenger_thread_count none;",
        &["passenger_thread_count", "\"none\""],
    ),
    in_server(
        "location /sub { if ($arg_x) { passenger_concurrency_model green; } }",
        &["passenger_concurrency_model", "\"green\""],
    ),
    Bad {
        http: "",
        server: "passenger_thread_count 2;\n        passenger_thread_count 3;",
        at: "passenger_thread_count 3;",
        says: &["passenger_thread_count", "is duplicate"],
    },
    Bad {
        http: "",
        server: "passenger_concurrency_model thread;\n        passenger_concurrency_model process;",
        at: "passenger_concurrency_model process;",
        says: &["passenger_concurrency_model", "is duplicate"],
    },
];

fn bad_values_fail_nginx_t_naming_value_file_and_line(flavour: Flavour) {
    assert_bad_values_fail_nginx_t(flavour, "threads-bad", BAD);
}

fn good_values_pass_nginx_t_at_every_level(flavour: Flavour) {
    let dir = Scratch::new("threads-good");
    assert_nginx_t_passes(
        flavour,
        &dir.0,
        "passenger_thread_count 1;\n    passenger_concurrency_model process;",
        "
        passenger_thread_count 1024;
        passenger_concurrency_model thread;
        location /a {
            passenger_thread_count 16;
            if ($arg_x) {
                passenger_thread_count 2;
                passenger_concurrency_model process;
            }
        }
",
    );
}

// ---------------------------------------------------------------------------------------------
// What the module sends

/// nginx with the stand-in core that answers with the SCGI header it received.
fn fake_core(flavour: Flavour, http_extra: &str, server_extra: &str) -> FakeCoreNginx {
    FakeCoreNginx::start(
        flavour,
        &FakeCore {
            label: "threads-keys",
            core: ECHO_HEADER_CORE,
            http_extra,
            server_extra,
            files: &[],
        },
    )
}

impl FakeCoreNginx {
    /// The `PASSENGER_THREAD_COUNT` the module sent for a GET of `path` (checking it was sent
    /// at most once).
    fn thread_count(&self, path: &str) -> Option<String> {
        let r = self.get_ok(path);
        let found: Vec<String> = scgi_pairs(&r.text())
            .into_iter()
            .filter(|(k, _)| k == options::THREAD_COUNT)
            .map(|(_, v)| v)
            .collect();
        assert!(found.len() <= 1, "sent {} times: {r:?}", found.len());
        found.into_iter().next()
    }
}

fn by_default_no_thread_count_is_sent(flavour: Flavour) {
    let nginx = fake_core(flavour, "", "");
    assert_eq!(nginx.thread_count("/"), None);
}

fn thread_count_follows_the_count_and_the_model(flavour: Flavour) {
    let server_extra = "
        location /count4 { passenger_thread_count 4; }
        location /count4-process {
            passenger_thread_count 4;
            passenger_concurrency_model process;
        }
        location /count1 { passenger_thread_count 1; }
        location /model-thread { passenger_concurrency_model thread; }
        location /model-thread-count1 {
            passenger_concurrency_model thread;
            passenger_thread_count 1;
        }
        location /model-thread-count8 {
            passenger_concurrency_model thread;
            passenger_thread_count 8;
        }
        location /model-process { passenger_concurrency_model process; }
";
    let nginx = fake_core(flavour, "", server_extra);
    for (path, want) in [
        ("/", None),
        // A count above 1 means threads, whatever the model says.
        ("/count4", Some("4")),
        ("/count4-process", Some("4")),
        ("/count1", None),
        // The thread model with no count: Passenger's default of one thread.
        ("/model-thread", Some("1")),
        ("/model-thread-count1", Some("1")),
        ("/model-thread-count8", Some("8")),
        ("/model-process", None),
    ] {
        assert_eq!(
            nginx.thread_count(path).as_deref(),
            want,
            "GET {path}\n{}",
            nginx.error_log()
        );
    }
}

fn thread_count_is_inherited_http_server_location_if(flavour: Flavour) {
    let http_extra = "    passenger_thread_count 6;";
    let server_extra = "
        location /own { passenger_thread_count 3; }
        location /single { passenger_thread_count 1; }
        location /threaded {
            passenger_concurrency_model thread;
            passenger_thread_count 1;
            if ($arg_more) {
                passenger_thread_count 12;
            }
            if ($arg_inherit) {
                passenger_concurrency_model process;
            }
        }
";
    let nginx = fake_core(flavour, http_extra, server_extra);
    for (path, want) in [
        ("/", Some("6")),
        ("/own", Some("3")),
        ("/single", None),
        ("/threaded", Some("1")),
        ("/threaded?more=1", Some("12")),
        // The if block keeps the location's count (1) and sets the process model.
        ("/threaded?inherit=1", None),
    ] {
        assert_eq!(
            nginx.thread_count(path).as_deref(),
            want,
            "GET {path}\n{}",
            nginx.error_log()
        );
    }
}

for_both_nginx! {
    bad_values_fail_nginx_t_naming_value_file_and_line,
    good_values_pass_nginx_t_at_every_level,
    by_default_no_thread_count_is_sent,
    thread_count_follows_the_count_and_the_model,
    thread_count_is_inherited_http_server_location_if,
}
