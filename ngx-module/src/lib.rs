//! `ngx_http_passenger_module`: the nginx side of passenger-rs.
//!
//! - [`config`]: the `passenger_*` directives and their merging;
//! - [`agents`]: starting the watchdog in the master and holding the core's address;
//! - [`handler`]: the content handler (static files vs. apps) and the upstream set-up;
//! - [`sub_uri`], [`detect`]: which app a request is for (base URIs, autodetection);
//! - [`headers`]: the request headers the app sees (`passenger_set_header`, forwarding);
//! - [`scgi_request`]: the modified-SCGI request to the core;
//! - [`response`]: parsing the core's HTTP response header.
//!
//! Every `extern "C"` entry point contains panics ([`util::guard`]): none unwinds into nginx.

use std::ffi::c_void;

use nginx_sys::{NGX_HTTP_MODULE, ngx_http_module_t, ngx_module_t, ngx_uint_t};

mod agents;
mod config;
mod detect;
mod handler;
mod headers;
mod keepalive;
mod response;
mod scgi_request;
mod sub_uri;
mod util;

static mut MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: None,
    create_main_conf: Some(config::create_main_conf),
    init_main_conf: Some(config::init_main_conf),
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(config::create_loc_conf),
    merge_loc_conf: Some(config::merge_loc_conf),
};

/// The module, as nginx sees it.
#[unsafe(no_mangle)]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_passenger_module: ngx_module_t = ngx_module_t {
    ctx: &raw mut MODULE_CTX as *mut c_void,
    commands: &raw mut config::COMMANDS as *mut _,
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    init_module: Some(agents::init_module),
    init_process: Some(agents::init_process),
    ..ngx_module_t::default()
};

// The table a dynamic module exports: `ngx_modules`, `ngx_module_names`, `ngx_module_order`.
ngx::ngx_modules!(ngx_http_passenger_module);
