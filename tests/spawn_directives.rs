//! The directives of spawning, environment, identity and error pages, in the nginx module:
//! `nginx -t` refuses each one's bad values (naming the directive, the value, the file and the
//! line) and accepts them all with good values; and the `PASSENGER_*` keys the module sends for
//! them, inherited http → server → location → if, as a stand-in core receives them. Against
//! Debian's nginx 1.22 and the bundled nginx. Needs `scripts/build` to have run.

#[macro_use]
mod common;

use common::config_check::*;
use common::fake_core::*;
use common::*;
use passenger_protocol::options;

const BAD: &[Bad] = &[
    in_server(
        "passenger_spawn_method fast;",
        &["passenger_spawn_method", "\"fast\"", "smart", "direct"],
    ),
    in_server(
        "passenger_app_scheduling_policy idle;",
        &[
            "passenger_app_scheduling_policy",
            "\"idle\"",
            "batch",
            "normal",
        ],
    ),
    in_server(
        "rails_spawn_method forking;",
        &["rails_spawn_method", "\"forking\""],
    ),
    in_server(
        "passenger_start_timeout 0;",
        &["passenger_start_timeout", "\"0\"", "whole number"],
    ),
    in_server(
        "passenger_start_timeout 90s;",
        &["passenger_start_timeout", "\"90s\""],
    ),
    in_server(
        "passenger_max_preloader_idle_time forever;",
        &["passenger_max_preloader_idle_time", "\"forever\""],
    ),
    in_http(
        "passenger_max_preloader_idle_time -1;",
        &["passenger_max_preloader_idle_time", "\"-1\""],
    ),
    in_server(
        "rails_app_spawner_idle_time soon;",
        &["rails_app_spawner_idle_time", "\"soon\""],
    ),
    in_server(
        "passenger_env_var \"\" value;",
        &["passenger_env_var", "invalid variable \"\"", "empty"],
    ),
    in_server(
        "location /sub { passenger_env_var A=B value; }",
        &["passenger_env_var", "\"A=B\"", "NAME=VALUE"],
    ),
    in_server(
        "passenger_env_var ONLY_A_NAME;",
        &["passenger_env_var", "invalid number of arguments"],
    ),
    in_server(
        "passenger_load_shell_envvars maybe;",
        &["passenger_load_shell_envvars", "\"maybe\""],
    ),
    in_server(
        "passenger_app_file_descriptor_ulimit 0;",
        &["passenger_app_file_descriptor_ulimit", "\"0\""],
    ),
    in_server(
        "passenger_app_file_descriptor_ulimit lots;",
        &["passenger_app_file_descriptor_ulimit", "\"lots\""],
    ),
    in_server(
        "passenger_user root;",
        &["passenger_user", "\"root\"", "never run as root"],
    ),
    in_server(
        "passenger_user 0;",
        &["passenger_user", "\"0\"", "never run as root"],
    ),
    in_server(
        "passenger_user \"\";",
        &["passenger_user", "invalid user name \"\""],
    ),
    in_server(
        "passenger_group root;",
        &["passenger_group", "\"root\"", "never run as root"],
    ),
    in_http(
        "passenger_user_switching sometimes;",
        &["passenger_user_switching", "\"sometimes\""],
    ),
    in_server(
        "passenger_user_switching off;",
        &["passenger_user_switching", "not allowed here"],
    ),
    in_http(
        "passenger_default_user root;",
        &["passenger_default_user", "\"root\"", "never run as root"],
    ),
    in_server(
        "passenger_default_user www-data;",
        &["passenger_default_user", "not allowed here"],
    ),
    in_http(
        "passenger_default_group root;",
        &["passenger_default_group", "\"root\"", "never run as root"],
    ),
    in_http(
        "passenger_disable_log_prefix 1;",
        &["passenger_disable_log_prefix", "\"1\""],
    ),
    in_server(
        "passenger_friendly_error_pages yes;",
        &["passenger_friendly_error_pages", "\"yes\""],
    ),
    in_server(
        "passenger_custom_error_page missing/spawn-error.html;",
        &[
            "passenger_custom_error_page",
            "missing/spawn-error.html\"",
            "No such file",
        ],
    ),
    in_server(
        "passenger_spawn_exception_status_code 600;",
        &["passenger_spawn_exception_status_code", "\"600\""],
    ),
    in_server(
        "passenger_spawn_exception_status_code 99;",
        &["passenger_spawn_exception_status_code", "\"99\""],
    ),
    in_server(
        "passenger_python \"\";",
        &["passenger_python", "invalid interpreter \"\""],
    ),
    in_server(
        "passenger_nodejs \"\";",
        &["passenger_nodejs", "invalid interpreter \"\""],
    ),
    // In an if block, and twice in one block.
    in_server(
        "location /sub { if ($arg_x) { passenger_spawn_method fast; } }",
        &["passenger_spawn_method", "\"fast\""],
    ),
    Bad {
        http: "",
        server: "passenger_start_timeout 10;\n        passenger_start_timeout 20;",
        at: "passenger_start_timeout 20;",
        says: &["passenger_start_timeout", "is duplicate"],
    },
];

fn bad_values_fail_nginx_t_naming_value_file_and_line(flavour: Flavour) {
    assert_bad_values_fail_nginx_t(flavour, "spawn-bad", BAD);
}

/// Every directive with good values, at every level it is allowed at.
const GOOD_HTTP: &str = "\
    passenger_user_switching off;
    passenger_default_user nobody;
    passenger_default_group nogroup;
    passenger_disable_log_prefix on;
    passenger_spawn_method direct;
    passenger_app_scheduling_policy normal;
    passenger_max_preloader_idle_time 0;
    passenger_start_timeout 120;
    passenger_env_var FROM_HTTP http;
    passenger_load_shell_envvars off;
    passenger_app_file_descriptor_ulimit 1024;
    passenger_friendly_error_pages off;
    passenger_spawn_exception_status_code 503;
    passenger_python /usr/bin/python3;
    passenger_nodejs /usr/bin/node;
";

const GOOD_SERVER: &str = "
        passenger_spawn_method smart-lv2;
        passenger_app_scheduling_policy batch;
        passenger_start_timeout 30;
        passenger_max_preloader_idle_time 600;
        passenger_env_var GREETING \"hello world\";
        passenger_env_var EMPTY \"\";
        passenger_env_var WITH_EQUALS a=b;
        passenger_load_shell_envvars on;
        passenger_app_file_descriptor_ulimit 4096;
        passenger_user nobody;
        passenger_group nogroup;
        passenger_friendly_error_pages on;
        passenger_custom_error_page errors/spawn.html;
        passenger_spawn_exception_status_code 502;
        passenger_python python3;
        passenger_nodejs node;
        location /direct {
            passenger_spawn_method conservative;
            passenger_app_scheduling_policy other;
            passenger_env_var ONLY_HERE 1;
            if ($arg_smart) {
                passenger_spawn_method smart;
                passenger_env_var IN_IF 1;
                passenger_user daemon;
                passenger_start_timeout 5;
            }
        }
        location /aliases {
            rails_spawn_method direct;
            rails_app_spawner_idle_time 60;
        }
";

fn good_values_pass_nginx_t(flavour: Flavour) {
    let dir = Scratch::new("spawn-good");
    std::fs::create_dir_all(dir.0.join("errors")).unwrap();
    std::fs::write(dir.0.join("errors/spawn.html"), "<h1>sorry</h1>").unwrap();
    assert_nginx_t_passes(flavour, &dir.0, GOOD_HTTP, GOOD_SERVER);
}

// ---------------------------------------------------------------------------------------------
// What the module sends

/// nginx with the stand-in core that answers with the SCGI header it received.
fn fake_core(flavour: Flavour, http_extra: &str, server_extra: &str) -> FakeCoreNginx {
    FakeCoreNginx::start(
        flavour,
        &FakeCore {
            label: "spawn-keys",
            core: ECHO_HEADER_CORE,
            http_extra,
            server_extra,
            // For `passenger_custom_error_page errors/spawn.html` (relative to nginx's prefix).
            files: &[("errors/spawn.html", "<h1>sorry</h1>")],
        },
    )
}

impl FakeCoreNginx {
    /// The `PASSENGER_*` pairs the module sent for a GET of `path`.
    fn keys(&self, path: &str) -> Vec<(String, String)> {
        scgi_pairs(&self.get_ok(path).text())
            .into_iter()
            .filter(|(k, _)| k.starts_with("PASSENGER_"))
            .collect()
    }
}

/// The value of `key` among `pairs`, checking it is there at most once.
fn value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    let found: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        found.len() <= 1,
        "{key} sent {} times: {pairs:?}",
        found.len()
    );
    found.first().copied()
}

fn env_vars(pairs: &[(String, String)]) -> Option<Vec<(String, String)>> {
    value(pairs, options::ENV_VARS)
        .map(|v| options::decode_env_vars(v).unwrap_or_else(|| panic!("undecodable {v:?}")))
}

fn env(list: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
    Some(
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn defaults_send_the_documented_keys_and_leave_out_the_unset_ones(flavour: Flavour) {
    let nginx = fake_core(flavour, "", "");
    let keys = nginx.keys("/");
    let expect: &[(&str, Option<&str>)] = &[
        (options::PYTHON, Some("python3")),
        (options::NODEJS, Some("node")),
        (options::SPAWN_METHOD, None),
        (options::APP_SCHEDULING_POLICY, None),
        (options::MAX_PRELOADER_IDLE_TIME, Some("300")),
        (options::START_TIMEOUT, Some("90")),
        (options::ENV_VARS, None),
        (options::LOAD_SHELL_ENVVARS, Some("1")),
        (options::APP_FILE_DESCRIPTOR_ULIMIT, None),
        (options::USER, None),
        (options::GROUP, None),
        (options::FRIENDLY_ERROR_PAGES, None),
        (options::CUSTOM_ERROR_PAGE, None),
        (options::SPAWN_EXCEPTION_STATUS_CODE, Some("500")),
        (options::USER_SWITCHING, Some("1")),
        (options::DEFAULT_USER, Some("nobody")),
        (options::DEFAULT_GROUP, None),
        (options::DISABLE_LOG_PREFIX, Some("0")),
    ];
    for (key, want) in expect {
        assert_eq!(value(&keys, key), *want, "{key} in {keys:?}");
    }
}

fn keys_follow_inheritance_http_server_location_if(flavour: Flavour) {
    let http_extra = "\
    passenger_user_switching off;
    passenger_default_user nobody;
    passenger_default_group nogroup;
    passenger_disable_log_prefix on;
    passenger_env_var FROM_HTTP http;
    passenger_start_timeout 30;
    passenger_friendly_error_pages off;
    passenger_app_scheduling_policy normal;
";
    let server_extra = "
        location /all {
            passenger_spawn_method smart-lv2;
            passenger_max_preloader_idle_time 0;
            passenger_start_timeout 5;
            passenger_env_var A 1;
            passenger_env_var B \"two words\";
            passenger_env_var A 3;
            passenger_load_shell_envvars off;
            passenger_app_file_descriptor_ulimit 4096;
            passenger_user nobody;
            passenger_group nogroup;
            passenger_friendly_error_pages on;
            passenger_custom_error_page errors/spawn.html;
            passenger_spawn_exception_status_code 503;
            passenger_python /usr/bin/python3;
            passenger_nodejs /usr/bin/node;
        }
        location /direct {
            passenger_spawn_method conservative;
            if ($arg_smart) {
                passenger_spawn_method smart;
                passenger_env_var IN_IF yes;
                passenger_app_scheduling_policy batch;
            }
        }
";
    let nginx = fake_core(flavour, http_extra, server_extra);

    // Inherited from http; the rest at their defaults.
    let root = nginx.keys("/");
    assert_eq!(env_vars(&root), env(&[("FROM_HTTP", "http")]));
    assert_eq!(value(&root, options::START_TIMEOUT), Some("30"));
    assert_eq!(value(&root, options::FRIENDLY_ERROR_PAGES), Some("0"));
    assert_eq!(value(&root, options::SPAWN_METHOD), None);
    assert_eq!(value(&root, options::APP_SCHEDULING_POLICY), Some("normal"));
    assert_eq!(value(&root, options::USER_SWITCHING), Some("0"));
    assert_eq!(value(&root, options::DEFAULT_USER), Some("nobody"));
    assert_eq!(value(&root, options::DEFAULT_GROUP), Some("nogroup"));
    assert_eq!(value(&root, options::DISABLE_LOG_PREFIX), Some("1"));

    // Everything set in the location; its own env var list replaces http's, the last value of
    // a name wins.
    let all = nginx.keys("/all");
    let page = nginx.dir.0.join("errors/spawn.html").display().to_string();
    for (key, want) in [
        (options::SPAWN_METHOD, "smart"),
        (options::MAX_PRELOADER_IDLE_TIME, "0"),
        (options::START_TIMEOUT, "5"),
        (options::LOAD_SHELL_ENVVARS, "0"),
        (options::APP_FILE_DESCRIPTOR_ULIMIT, "4096"),
        (options::USER, "nobody"),
        (options::GROUP, "nogroup"),
        (options::FRIENDLY_ERROR_PAGES, "1"),
        (options::CUSTOM_ERROR_PAGE, page.as_str()),
        (options::SPAWN_EXCEPTION_STATUS_CODE, "503"),
        (options::PYTHON, "/usr/bin/python3"),
        (options::NODEJS, "/usr/bin/node"),
        // The http-level settings travel with every location.
        (options::USER_SWITCHING, "0"),
        (options::DISABLE_LOG_PREFIX, "1"),
    ] {
        assert_eq!(value(&all, key), Some(want), "{key} in {all:?}");
    }
    assert_eq!(env_vars(&all), env(&[("A", "3"), ("B", "two words")]));

    // An alias in a location, and an if block inside it overriding it again.
    let direct = nginx.keys("/direct");
    assert_eq!(value(&direct, options::SPAWN_METHOD), Some("direct"));
    assert_eq!(
        value(&direct, options::APP_SCHEDULING_POLICY),
        Some("normal")
    );
    assert_eq!(env_vars(&direct), env(&[("FROM_HTTP", "http")]));
    let in_if = nginx.keys("/direct?smart=1");
    assert_eq!(value(&in_if, options::SPAWN_METHOD), Some("smart"));
    assert_eq!(env_vars(&in_if), env(&[("IN_IF", "yes")]));
    assert_eq!(value(&in_if, options::START_TIMEOUT), Some("30"));
    assert_eq!(value(&in_if, options::APP_SCHEDULING_POLICY), Some("batch"));
}

for_both_nginx! {
    bad_values_fail_nginx_t_naming_value_file_and_line,
    good_values_pass_nginx_t,
    defaults_send_the_documented_keys_and_leave_out_the_unset_ones,
    keys_follow_inheritance_http_server_location_if,
}
