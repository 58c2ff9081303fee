//! `passenger_ctl NAME VALUE` in the nginx module: raw settings for the agents, http block only.
//! `nginx -t` refuses an unknown name (listing the known ones) and a bad value (naming the
//! value, the file and the line); `integration_mode` reaches the watchdog, which records it in
//! the instance's `properties.json` (`nginx` unless set; `passenger start`'s template sets
//! `standalone`, see tests/standalone.rs). Against Debian's nginx 1.22 and the bundled nginx.
//! Needs `scripts/build` to have run.

#[macro_use]
mod common;

use common::config_check::*;
use common::*;

const BAD: &[Bad] = &[
    in_http(
        "passenger_ctl integration_mode apache;",
        &[
            "passenger_ctl integration_mode",
            "invalid value \"apache\"",
            "use nginx or standalone",
        ],
    ),
    in_http(
        "passenger_ctl integration_mode Standalone;",
        &["passenger_ctl integration_mode", "\"Standalone\""],
    ),
    in_http(
        "passenger_ctl integration_mode \"\";",
        &["passenger_ctl integration_mode", "invalid value \"\""],
    ),
    in_http(
        "passenger_ctl frobnicate 1;",
        &[
            "passenger_ctl",
            "unknown setting \"frobnicate\"",
            "known: integration_mode",
        ],
    ),
    in_http(
        "passenger_ctl integration_mode;",
        &["passenger_ctl", "invalid number of arguments"],
    ),
    in_http(
        "passenger_ctl integration_mode nginx standalone;",
        &["passenger_ctl", "invalid number of arguments"],
    ),
    // A setting for the agents as a whole: not per server.
    in_server(
        "passenger_ctl integration_mode standalone;",
        &["passenger_ctl", "is not allowed here"],
    ),
    Bad {
        http: "passenger_ctl integration_mode standalone;\n    passenger_ctl integration_mode nginx;",
        server: "",
        at: "passenger_ctl integration_mode nginx;",
        says: &["passenger_ctl integration_mode is duplicate"],
    },
];

fn bad_values_fail_nginx_t_naming_value_file_and_line(flavour: Flavour) {
    assert_bad_values_fail_nginx_t(flavour, "ctl-bad", BAD);
}

fn good_values_pass_nginx_t(flavour: Flavour) {
    for mode in ["nginx", "standalone"] {
        let dir = Scratch::new("ctl-good");
        assert_nginx_t_passes(
            flavour,
            &dir.0,
            &format!("passenger_ctl integration_mode {mode};"),
            "",
        );
    }
}

/// `integration_mode` in the `properties.json` of `nginx`'s instance, as tools read it.
fn integration_mode(nginx: &Nginx) -> String {
    let path = nginx.instance_dir().join("properties.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()));
    json["integration_mode"]
        .as_str()
        .unwrap_or_else(|| panic!("no integration_mode in {}: {text}", path.display()))
        .to_string()
}

fn properties_json_records_the_integration_mode(flavour: Flavour) {
    // A plain nginx configuration: nginx.
    let nginx = Nginx::start(flavour, &[Site::app("echo")]);
    assert_eq!(nginx.get("/").status, 200, "{}", nginx.error_log());
    assert_eq!(integration_mode(&nginx), "nginx");
    drop(nginx);
    // Set explicitly, either way.
    for mode in ["standalone", "nginx"] {
        let nginx = Nginx::start_with(
            flavour,
            &[Site::app("echo")],
            &format!("passenger_ctl integration_mode {mode};"),
        );
        assert_eq!(nginx.get("/").status, 200, "{}", nginx.error_log());
        assert_eq!(integration_mode(&nginx), mode);
    }
}

for_both_nginx! {
    bad_values_fail_nginx_t_naming_value_file_and_line,
    good_values_pass_nginx_t,
    properties_json_records_the_integration_mode,
}
