//! Builds the bundled nginx (the "WebHelper" that `passenger start` runs) from the source the
//! `nginx-src` crate ships, stripped of modules an app server in front of one app doesn't need,
//! and `--with-compat` so the bundled flavour of the module loads into it.
//! `scripts/build` copies `$OUT_DIR/webhelper/objs/nginx` into the install tree and builds the
//! module against that configured tree.

use std::path::PathBuf;

const STRIPPED_MODULES: &[&str] = &[
    "--without-http_ssi_module",
    "--without-http_userid_module",
    "--without-http_autoindex_module",
    "--without-http_geo_module",
    "--without-http_split_clients_module",
    "--without-http_memcached_module",
    "--without-http_empty_gif_module",
    "--without-http_browser_module",
    "--without-http_mirror_module",
    "--without-http_grpc_module",
    "--without-http_uwsgi_module",
    "--without-http_fastcgi_module",
    "--without-http_scgi_module",
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut args = std::env::var("NGX_CONFIGURE_ARGS").unwrap_or_default();
    for flag in STRIPPED_MODULES {
        args.push(' ');
        args.push_str(flag);
    }
    // SAFETY: build scripts are single-threaded; nginx_src::build reads this variable.
    unsafe { std::env::set_var("NGX_CONFIGURE_ARGS", args.trim()) };
    nginx_src::print_cargo_metadata();
    match nginx_src::build(out_dir.join("webhelper/objs")) {
        // The module's bindings need the source tree as well as the configured objs.
        Ok((source_dir, _)) => std::fs::write(
            out_dir.join("webhelper/source-dir"),
            source_dir.to_string_lossy().as_bytes(),
        )
        .expect("OUT_DIR is writable"),
        Err(e) => panic!(
            "building the bundled nginx failed: {e}; it needs libpcre2-dev libssl-dev zlib1g-dev \
             (see the README's set-up command)"
        ),
    }
}
