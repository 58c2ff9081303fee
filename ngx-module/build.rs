//! Passes nginx-sys's view of the nginx tree to the compiler as cfg values, the way the `ngx`
//! crate's own build script does: `ngx_feature = "..."`, `ngx_os = "..."`, and version cfgs.
//!
//! This only works because `nginx-sys` is a direct dependency: cargo hands `DEP_NGINX_*` to the
//! build scripts of direct dependents only.

use std::env;

/// Version cfgs: (minimum `nginx_version` number, cfg name).
const VERSION_CHECKS: &[(u64, &str)] = &[
    // `ngx_table_elt_t.next` (linked duplicate headers) and the reworked header handlers.
    (1_023_000, "nginx1_23_0"),
];

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_feature, values({}))",
        env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or_else(|_| "any()".to_string())
    );
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");
    if let Ok(features) = env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }

    println!("cargo::rerun-if-env-changed=DEP_NGINX_OS_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_os, values({}))",
        env::var("DEP_NGINX_OS_CHECK").unwrap_or_else(|_| "any()".to_string())
    );
    println!("cargo::rerun-if-env-changed=DEP_NGINX_OS");
    if let Ok(os) = env::var("DEP_NGINX_OS") {
        println!("cargo::rustc-cfg=ngx_os=\"{os}\"");
    }

    for (_, name) in VERSION_CHECKS {
        println!("cargo::rustc-check-cfg=cfg({name})");
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    // A missing or unparsable number leaves every version cfg off: the oldest layout.
    let version: u64 = env::var("DEP_NGINX_VERSION_NUMBER")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    for (min, name) in VERSION_CHECKS {
        if version >= *min {
            println!("cargo::rustc-cfg={name}");
        }
    }
}
