//! The `passenger_*` directives: the main (http) and location configuration structs, their
//! creation, validation and merging (http → server → location → if-in-location).

use std::ffi::{CStr, c_char, c_void};
use std::mem::offset_of;
use std::os::unix::ffi::OsStrExt;
use std::ptr;

use nginx_sys::{
    NGX_CONF_1MORE, NGX_CONF_ANY, NGX_CONF_BITMASK_SET, NGX_CONF_FLAG, NGX_CONF_TAKE1,
    NGX_CONF_TAKE2, NGX_CONF_TAKE1234, NGX_HTTP_LIF_CONF, NGX_HTTP_LOC_CONF,
    NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET, NGX_HTTP_SRV_CONF,
    NGX_HTTP_UPSTREAM_FT_ERROR, NGX_HTTP_UPSTREAM_FT_OFF, NGX_HTTP_UPSTREAM_FT_TIMEOUT,
    NGX_LOG_EMERG, NGX_LOG_WARN, NGX_OK, ngx_array_create, ngx_array_push, ngx_array_t,
    ngx_command_t, ngx_conf_check_num_bounds, ngx_conf_full_name, ngx_conf_merge_path_value,
    ngx_conf_num_bounds_t, ngx_conf_set_bitmask_slot, ngx_conf_set_bufs_slot,
    ngx_conf_set_flag_slot, ngx_conf_set_msec_slot, ngx_conf_set_num_slot, ngx_conf_set_path_slot,
    ngx_conf_set_size_slot, ngx_conf_set_str_array_slot, ngx_conf_set_str_slot, ngx_conf_t,
    ngx_flag_t, ngx_hash_init_t, ngx_http_core_loc_conf_t, ngx_http_core_module,
    ngx_http_upstream_conf_t, ngx_http_upstream_hide_headers_hash,
    ngx_http_upstream_ignore_headers_masks, ngx_int_t, ngx_keyval_t, ngx_msec_t, ngx_path_init_t,
    ngx_pool_cleanup_add, ngx_str_t, ngx_uint_t,
};
use passenger_protocol::options::{self, AppType, DEFAULT_APP_ENV};

use crate::util::{
    CONF_ERROR, CONF_OK, bytes, conf_loc_conf, conf_log, conf_main_conf, guard, static_cstr,
    static_str,
};

const UNSET: ngx_int_t = -1;
const UNSET_UINT: ngx_uint_t = ngx_uint_t::MAX;
const UNSET_SIZE: usize = usize::MAX;
const UNSET_MSEC: ngx_msec_t = ngx_msec_t::MAX;
const UNSET_PTR: *mut c_void = usize::MAX as *mut c_void;

/// `passenger_socket_backlog`'s default, as in Passenger.
const DEFAULT_SOCKET_BACKLOG: ngx_int_t = 2048;

/// Configuration of the http block (`passenger_root` and the other global directives).
#[repr(C)]
pub struct MainConf {
    /// `passenger_root`, made absolute against nginx's prefix; empty = the module is inert.
    pub root: ngx_str_t,
    pub log_level: ngx_int_t,
    pub log_file: ngx_str_t,
    pub registry_dir: ngx_str_t,
    // Global pool settings, sent with every request (the core applies the latest).
    pub max_pool_size: ngx_int_t,
    pub max_instances_per_app: ngx_int_t,
    pub pool_idle_time: ngx_int_t,
    pub stat_throttle_rate: ngx_int_t,
    // Global spawning settings, sent with every request like the pool's.
    pub user_switching: ngx_flag_t,
    /// `passenger_default_user` (never root; default `nobody`).
    pub default_user: ngx_str_t,
    /// `passenger_default_group` (never root); unset = the default user's primary group.
    pub default_group: ngx_str_t,
    pub disable_log_prefix: ngx_flag_t,
    /// `passenger_ctl integration_mode`: index into [`INTEGRATION_MODES`].
    pub integration_mode: ngx_int_t,
    /// Directories checked at load; the core keeps spawn scratch data in its instance directory
    /// and buffers bodies in memory up to the high watermark, so they are not written to.
    pub spawn_dir: ngx_str_t,
    pub data_buffer_dir: ngx_str_t,
    /// Listen backlog of the core's socket (the watchdog binds it).
    pub socket_backlog: ngx_int_t,
    /// RLIMIT_NOFILE of the core (`UNSET` = nginx's).
    pub core_file_descriptor_ulimit: ngx_int_t,
    pub show_version_in_header: ngx_flag_t,
    /// Bytes; `UNSET_SIZE` until merged.
    pub response_buffer_high_watermark: usize,
    /// `passenger_pre_start` URLs (`ngx_str_t`s), or `UNSET_PTR`.
    pub pre_start: *mut ngx_array_t,
    pub abort_on_startup_error: ngx_flag_t,
}

impl MainConf {
    pub fn root(&self) -> &[u8] {
        // SAFETY: set by ngx_conf_set_str_slot / ngx_conf_full_name from config memory.
        unsafe { bytes(&self.root) }
    }
    pub fn log_file(&self) -> &[u8] {
        unsafe { bytes(&self.log_file) }
    }
    pub fn registry_dir(&self) -> &[u8] {
        unsafe { bytes(&self.registry_dir) }
    }
    pub fn default_user(&self) -> &[u8] {
        unsafe { bytes(&self.default_user) }
    }
    pub fn default_group(&self) -> &[u8] {
        unsafe { bytes(&self.default_group) }
    }
    /// The `passenger_pre_start` URLs in the order written.
    pub fn pre_start(&self) -> Vec<&[u8]> {
        // SAFETY: an array of ngx_str_t made by ngx_conf_set_str_array_slot.
        unsafe { str_array(self.pre_start) }
    }
    /// How the agents were started, for the instance's `properties.json`.
    pub fn integration_mode(&self) -> &'static str {
        usize::try_from(self.integration_mode)
            .ok()
            .and_then(|i| INTEGRATION_MODES.get(i).copied())
            .unwrap_or(INTEGRATION_MODES[0])
    }
}

/// The values of `passenger_ctl integration_mode`, in index order (the first is the default):
/// how the agents were started (by a site's own nginx, or by `passenger start`), which the
/// watchdog records in the instance's `properties.json`.
const INTEGRATION_MODES: [&str; 2] = ["nginx", "standalone"];

/// The settings `passenger_ctl NAME VALUE` knows: each name, the values it accepts, and the
/// setting a value (by its index) makes.
type CtlSetting = (&'static str, &'static [&'static str], fn(ngx_int_t) -> Ctl);
const CTL_SETTINGS: [CtlSetting; 1] =
    [("integration_mode", &INTEGRATION_MODES, Ctl::IntegrationMode)];

/// A `passenger_ctl` setting, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Ctl {
    /// Index into [`INTEGRATION_MODES`].
    IntegrationMode(ngx_int_t),
}

/// Parses `passenger_ctl NAME VALUE`; the error is the message for the error log.
fn parse_ctl(name: &[u8], value: &[u8]) -> Result<Ctl, String> {
    let Some((known, values, make)) = CTL_SETTINGS.iter().find(|(n, ..)| n.as_bytes() == name)
    else {
        let names: Vec<&str> = CTL_SETTINGS.iter().map(|(n, ..)| *n).collect();
        return Err(format!(
            "passenger_ctl: unknown setting \"{}\"; known: {}",
            String::from_utf8_lossy(name).escape_debug(),
            names.join(", ")
        ));
    };
    let Some(index) = values.iter().position(|v| v.as_bytes() == value) else {
        let (last, rest) = values.split_last().unwrap_or((&"", &[]));
        let choices = if rest.is_empty() {
            last.to_string()
        } else {
            format!("{} or {last}", rest.join(", "))
        };
        return Err(format!(
            "passenger_ctl {known}: invalid value \"{}\"; use {choices}",
            String::from_utf8_lossy(value).escape_debug()
        ));
    };
    Ok(make(index as ngx_int_t))
}

/// Configuration of a location (also of the http and server blocks, merged downwards).
#[repr(C)]
pub struct LocConf {
    /// nginx's upstream settings used to talk to the core.
    pub upstream: ngx_http_upstream_conf_t,
    pub enabled: ngx_flag_t,
    pub ruby: ngx_str_t,
    pub app_root: ngx_str_t,
    /// Index into [`APP_TYPES`], or `UNSET` for autodetection.
    pub app_type: ngx_int_t,
    pub startup_file: ngx_str_t,
    pub app_env: ngx_str_t,
    // Per-app pool settings.
    pub min_instances: ngx_int_t,
    pub max_requests: ngx_int_t,
    pub max_requests_jitter: ngx_int_t,
    pub resist_deployment_errors: ngx_flag_t,
    pub max_request_queue_size: ngx_int_t,
    pub request_queue_overflow_status_code: ngx_int_t,
    pub max_request_queue_time: ngx_int_t,
    pub restart_dir: ngx_str_t,
    // Spawning and error pages.
    pub python: ngx_str_t,
    pub nodejs: ngx_str_t,
    /// Index into [`SPAWN_METHODS`], or `UNSET`: the core picks (smart for Ruby, else direct).
    pub spawn_method: ngx_int_t,
    pub max_preloader_idle_time: ngx_int_t,
    pub start_timeout: ngx_int_t,
    /// `passenger_env_var` pairs ([`ngx_keyval_t`] in the configuration pool): `UNSET_PTR`
    /// until set or merged, null when there are none. A block with its own list replaces the
    /// inherited one, as nginx does for its array directives.
    pub env_vars: *mut ngx_array_t,
    pub load_shell_envvars: ngx_flag_t,
    /// `UNSET` = the core's limit.
    pub app_file_descriptor_ulimit: ngx_int_t,
    /// `passenger_user` / `passenger_group` (never root); unset = the user-switching rules.
    pub user: ngx_str_t,
    pub group: ngx_str_t,
    /// `UNSET` = the core decides by the app environment.
    pub friendly_error_pages: ngx_flag_t,
    /// Absolute path (made so against nginx's prefix); unset = the built-in page.
    pub custom_error_page: ngx_str_t,
    pub spawn_exception_status_code: ngx_int_t,
    /// `passenger_thread_count`: threads per Ruby/Python process (1 to [`MAX_THREAD_COUNT`]).
    pub thread_count: ngx_int_t,
    /// `passenger_concurrency_model`: index into [`CONCURRENCY_MODELS`].
    pub concurrency_model: ngx_int_t,
    /// `passenger_app_scheduling_policy`: index into [`SCHEDULING_POLICIES`], or `UNSET`: the
    /// core's default (batch).
    pub app_scheduling_policy: ngx_int_t,
    /// `passenger_base_uri` values (`ngx_str_t`, no trailing slash), or `UNSET_PTR`.
    pub base_uris: *mut ngx_array_t,
    /// Absolute (made so against nginx's prefix); empty = root + base URI.
    pub document_root: ngx_str_t,
    pub app_group_name: ngx_str_t,
    pub app_start_command: ngx_str_t,
    pub max_instances: ngx_int_t,
    /// `UNSET` (and Passenger's -1) = what the app advertises.
    pub force_max_concurrent_requests_per_process: ngx_int_t,
    pub memory_limit: ngx_int_t,
    pub max_request_time: ngx_int_t,
    pub rolling_restarts: ngx_flag_t,
    pub sticky_sessions: ngx_flag_t,
    pub sticky_sessions_cookie_name: ngx_str_t,
    pub sticky_sessions_cookie_attributes: ngx_str_t,
    pub abort_websockets_on_process_shutdown: ngx_flag_t,
    pub preload_bundler: ngx_flag_t,
    /// `passenger_set_header` entries ([`crate::headers::SetHeader`]), or `UNSET_PTR`.
    pub set_headers: *mut ngx_array_t,
    pub headers_hash_max_size: ngx_int_t,
    pub headers_hash_bucket_size: ngx_int_t,
    /// [`pool_options`] of this location, built once when the configuration is merged (null
    /// until then); freed with the configuration's pool.
    pub pool_options: *const PoolOptionPairs,
}

/// The app types in `passenger_app_type`'s index order.
const APP_TYPES: [AppType; 3] = [AppType::Rack, AppType::Wsgi, AppType::Node];

/// The values of `passenger_spawn_method`, in its index order, as sent to the core.
const SPAWN_METHODS: [&str; 2] = ["smart", "direct"];

/// The names `passenger_spawn_method` accepts (Phusion Passenger's aliases included), as an
/// index into [`SPAWN_METHODS`].
fn parse_spawn_method(name: &[u8]) -> Option<ngx_int_t> {
    match name {
        b"smart" | b"smart-lv2" => Some(0),
        b"direct" | b"conservative" => Some(1),
        _ => None,
    }
}

/// The values of `passenger_concurrency_model`, in its index order (the first is the default).
const CONCURRENCY_MODELS: [&str; 2] = ["process", "thread"];

/// A `passenger_concurrency_model` name, as an index into [`CONCURRENCY_MODELS`].
fn parse_concurrency_model(name: &[u8]) -> Option<ngx_int_t> {
    CONCURRENCY_MODELS
        .iter()
        .position(|m| m.as_bytes() == name)
        .map(|i| i as ngx_int_t)
}

/// The values of `passenger_app_scheduling_policy`, in its index order, as sent to the core.
const SCHEDULING_POLICIES: [&str; 2] = ["batch", "normal"];

/// The names `passenger_app_scheduling_policy` accepts (`other`: the POSIX name of `normal`), as
/// an index into [`SCHEDULING_POLICIES`].
fn parse_scheduling_policy(name: &[u8]) -> Option<ngx_int_t> {
    match name {
        b"batch" => Some(0),
        b"normal" | b"other" => Some(1),
        _ => None,
    }
}

/// The most threads a process may have: the core refuses more (`PASSENGER_THREAD_COUNT`).
const MAX_THREAD_COUNT: ngx_int_t = 1024;

/// The names `passenger_app_type` accepts (Phusion Passenger's aliases included).
fn parse_app_type(name: &[u8]) -> Option<AppType> {
    match name {
        b"rack" | b"ruby" => Some(AppType::Rack),
        b"wsgi" | b"python" => Some(AppType::Wsgi),
        b"node" | b"nodejs" => Some(AppType::Node),
        _ => None,
    }
}

impl LocConf {
    pub fn enabled(&self) -> bool {
        self.enabled == 1
    }
    pub fn app_type(&self) -> Option<AppType> {
        usize::try_from(self.app_type)
            .ok()
            .and_then(|i| APP_TYPES.get(i).copied())
    }
    pub fn app_root(&self) -> &[u8] {
        unsafe { bytes(&self.app_root) }
    }
    pub fn startup_file(&self) -> &[u8] {
        unsafe { bytes(&self.startup_file) }
    }
    pub fn restart_dir(&self) -> &[u8] {
        unsafe { bytes(&self.restart_dir) }
    }
    pub fn document_root(&self) -> &[u8] {
        unsafe { bytes(&self.document_root) }
    }
    /// The `passenger_base_uri` values, longest first (so the most specific one matches; sorted
    /// once, in `merge`).
    pub fn base_uris(&self) -> Vec<&[u8]> {
        // SAFETY: an array of ngx_str_t made by `set_base_uri`.
        unsafe { str_array(self.base_uris) }
    }
    pub fn spawn_method(&self) -> Option<&'static str> {
        usize::try_from(self.spawn_method)
            .ok()
            .and_then(|i| SPAWN_METHODS.get(i).copied())
    }
    pub fn app_scheduling_policy(&self) -> Option<&'static str> {
        usize::try_from(self.app_scheduling_policy)
            .ok()
            .and_then(|i| SCHEDULING_POLICIES.get(i).copied())
    }
    /// The count to send as `PASSENGER_THREAD_COUNT`, if any (see [`thread_count_option`]).
    pub fn thread_count_option(&self) -> Option<ngx_int_t> {
        let model = usize::try_from(self.concurrency_model)
            .ok()
            .and_then(|i| CONCURRENCY_MODELS.get(i).copied())
            .unwrap_or(CONCURRENCY_MODELS[0]);
        thread_count_option(model, self.thread_count)
    }
    /// The `passenger_env_var` pairs in the order written (empty when there are none).
    pub fn env_vars(&self) -> Vec<(&[u8], &[u8])> {
        if self.env_vars.is_null() || self.env_vars as *mut c_void == UNSET_PTR {
            return Vec::new();
        }
        // SAFETY: an array of ngx_keyval_t made by `set_env_var` in the configuration pool.
        unsafe {
            let a = &*self.env_vars;
            if a.nelts == 0 || a.elts.is_null() {
                return Vec::new();
            }
            std::slice::from_raw_parts(a.elts as *const ngx_keyval_t, a.nelts)
                .iter()
                .map(|kv| (bytes(&kv.key), bytes(&kv.value)))
                .collect()
        }
    }
}

/// What `passenger_concurrency_model` and `passenger_thread_count` send, as merged (`count` is
/// 1 when unset): `PASSENGER_THREAD_COUNT` is sent when the count is above 1, whatever the
/// model says (Passenger users often set only the count, and mean threads by it); with the
/// `thread` model it is sent even at 1 (Passenger's default count: one thread, served by the
/// loader's threaded server); with `process` and a count of 1 nothing is sent (the core's
/// default, one request at a time per process).
fn thread_count_option(model: &str, count: ngx_int_t) -> Option<ngx_int_t> {
    (count > 1 || model == "thread").then_some(count.max(1))
}

/// The env var pairs to send: one per name, with the value written last (at the place of the
/// name's first appearance).
fn dedup_env_vars<'a>(pairs: &[(&'a [u8], &'a [u8])]) -> Vec<(&'a [u8], &'a [u8])> {
    let mut out: Vec<(&[u8], &[u8])> = Vec::with_capacity(pairs.len());
    for &(name, value) in pairs {
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some(existing) => existing.1 = value,
            None => out.push((name, value)),
        }
    }
    out
}

/// The strings of an array of `ngx_str_t` in the configuration pool (empty when unset).
///
/// # Safety
/// `a` must be null, `UNSET_PTR` or an array of `ngx_str_t` that outlives the result.
unsafe fn str_array<'a>(a: *mut ngx_array_t) -> Vec<&'a [u8]> {
    if a.is_null() || a as *mut c_void == UNSET_PTR {
        return Vec::new();
    }
    unsafe {
        let a = &*a;
        if a.nelts == 0 || a.elts.is_null() {
            return Vec::new();
        }
        std::slice::from_raw_parts(a.elts as *const ngx_str_t, a.nelts)
            .iter()
            .map(|s| bytes(s))
            .collect()
    }
}

/// `PASSENGER_*` SCGI keys and their values.
pub type PoolOptionPairs = Vec<(&'static str, Vec<u8>)>;

impl LocConf {
    /// The pool options serialised at configuration time, if this location has them.
    pub fn pool_options(&self) -> Option<&PoolOptionPairs> {
        // SAFETY: set in `merge` from a Box that lives as long as the configuration.
        unsafe { self.pool_options.as_ref() }
    }
}

/// The pool options of a request's location, as the `PASSENGER_*` SCGI keys and values the
/// core reads (see `passenger_protocol::options`).
pub fn pool_options(mcf: &MainConf, lcf: &LocConf) -> PoolOptionPairs {
    let num = |v: ngx_int_t| v.to_string().into_bytes();
    let mut pairs: PoolOptionPairs = vec![
        (options::MAX_POOL_SIZE, num(mcf.max_pool_size)),
        (
            options::MAX_INSTANCES_PER_APP,
            num(mcf.max_instances_per_app),
        ),
        (options::POOL_IDLE_TIME, num(mcf.pool_idle_time)),
        (options::STAT_THROTTLE_RATE, num(mcf.stat_throttle_rate)),
        (options::MIN_INSTANCES, num(lcf.min_instances)),
        (options::MAX_REQUESTS, num(lcf.max_requests)),
        (options::MAX_REQUESTS_JITTER, num(lcf.max_requests_jitter)),
        (
            options::RESIST_DEPLOYMENT_ERRORS,
            num(lcf.resist_deployment_errors),
        ),
        (
            options::MAX_REQUEST_QUEUE_SIZE,
            num(lcf.max_request_queue_size),
        ),
        (
            options::REQUEST_QUEUE_OVERFLOW_STATUS_CODE,
            num(lcf.request_queue_overflow_status_code),
        ),
        (
            options::MAX_REQUEST_QUEUE_TIME,
            num(lcf.max_request_queue_time),
        ),
        (options::RESTART_DIR, lcf.restart_dir().to_vec()),
        (
            options::SHOW_VERSION_IN_HEADER,
            flag_value(mcf.show_version_in_header),
        ),
        (
            options::RESPONSE_BUFFER_HIGH_WATERMARK,
            mcf.response_buffer_high_watermark.to_string().into_bytes(),
        ),
    ];
    // Sent only when set: absent means the core's default.
    let text = |s: &ngx_str_t| unsafe { bytes(s) }.to_vec();
    for (key, value) in [
        (options::MAX_INSTANCES, lcf.max_instances),
        (
            options::FORCE_MAX_CONCURRENT_REQUESTS_PER_PROCESS,
            lcf.force_max_concurrent_requests_per_process,
        ),
        (options::MEMORY_LIMIT, lcf.memory_limit),
        (options::MAX_REQUEST_TIME, lcf.max_request_time),
    ] {
        if value != UNSET {
            pairs.push((key, num(value)));
        }
    }
    for (key, value) in [
        (options::ROLLING_RESTARTS, lcf.rolling_restarts),
        (options::STICKY_SESSIONS, lcf.sticky_sessions),
        (
            options::ABORT_WEBSOCKETS_ON_PROCESS_SHUTDOWN,
            lcf.abort_websockets_on_process_shutdown,
        ),
        (options::PRELOAD_BUNDLER, lcf.preload_bundler),
    ] {
        if value != UNSET {
            pairs.push((key, flag_value(value)));
        }
    }
    for (key, value) in [
        (
            options::STICKY_SESSIONS_COOKIE_NAME,
            &lcf.sticky_sessions_cookie_name,
        ),
        (
            options::STICKY_SESSIONS_COOKIE_ATTRIBUTES,
            &lcf.sticky_sessions_cookie_attributes,
        ),
        (options::APP_START_COMMAND, &lcf.app_start_command),
    ] {
        if !value.data.is_null() {
            pairs.push((key, text(value)));
        }
    }
    pairs.extend(spawn_options(mcf, lcf));
    pairs
}

fn flag_value(v: ngx_flag_t) -> Vec<u8> {
    if v == 1 { b"1".to_vec() } else { b"0".to_vec() }
}

/// The spawning and error-page options of a location (and the global spawning settings).
fn spawn_options(mcf: &MainConf, lcf: &LocConf) -> PoolOptionPairs {
    let num = |v: ngx_int_t| v.to_string().into_bytes();
    let flag = flag_value;
    // SAFETY (all `bytes` below): strings set from the configuration, which outlives this.
    let text = |s: &ngx_str_t| unsafe { bytes(s) }.to_vec();
    let mut pairs: PoolOptionPairs = vec![
        (options::PYTHON, text(&lcf.python)),
        (options::NODEJS, text(&lcf.nodejs)),
    ];
    if let Some(method) = lcf.spawn_method() {
        pairs.push((options::SPAWN_METHOD, method.as_bytes().to_vec()));
    }
    if let Some(policy) = lcf.app_scheduling_policy() {
        pairs.push((options::APP_SCHEDULING_POLICY, policy.as_bytes().to_vec()));
    }
    pairs.extend([
        (
            options::MAX_PRELOADER_IDLE_TIME,
            num(lcf.max_preloader_idle_time),
        ),
        (options::START_TIMEOUT, num(lcf.start_timeout)),
        (options::LOAD_SHELL_ENVVARS, flag(lcf.load_shell_envvars)),
    ]);
    let env_vars = dedup_env_vars(&lcf.env_vars());
    if !env_vars.is_empty() {
        pairs.push((
            options::ENV_VARS,
            options::encode_env_vars(env_vars).into_bytes(),
        ));
    }
    if lcf.app_file_descriptor_ulimit != UNSET {
        pairs.push((
            options::APP_FILE_DESCRIPTOR_ULIMIT,
            num(lcf.app_file_descriptor_ulimit),
        ));
    }
    if lcf.user.len > 0 {
        pairs.push((options::USER, text(&lcf.user)));
    }
    if lcf.group.len > 0 {
        pairs.push((options::GROUP, text(&lcf.group)));
    }
    if lcf.friendly_error_pages != UNSET {
        pairs.push((
            options::FRIENDLY_ERROR_PAGES,
            flag(lcf.friendly_error_pages),
        ));
    }
    if lcf.custom_error_page.len > 0 {
        pairs.push((options::CUSTOM_ERROR_PAGE, text(&lcf.custom_error_page)));
    }
    if let Some(count) = lcf.thread_count_option() {
        pairs.push((options::THREAD_COUNT, num(count)));
    }
    pairs.extend([
        (
            options::SPAWN_EXCEPTION_STATUS_CODE,
            num(lcf.spawn_exception_status_code),
        ),
        (options::USER_SWITCHING, flag(mcf.user_switching)),
        (options::DEFAULT_USER, mcf.default_user().to_vec()),
    ]);
    if !mcf.default_group().is_empty() {
        pairs.push((options::DEFAULT_GROUP, mcf.default_group().to_vec()));
    }
    pairs.push((options::DISABLE_LOG_PREFIX, flag(mcf.disable_log_prefix)));
    pairs
}

// ---------------------------------------------------------------------------------------------
// Directives

const ANY_CONF: u32 =
    NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_HTTP_LIF_CONF;

static mut LOG_LEVEL_BOUNDS: ngx_conf_num_bounds_t = ngx_conf_num_bounds_t {
    post_handler: Some(ngx_conf_check_num_bounds),
    low: 0,
    high: 7,
};

/// The values a numeric directive accepts (its `post`).
#[repr(C)]
pub struct NumRange {
    low: ngx_int_t,
    high: ngx_int_t,
}

static mut AT_LEAST_ONE: NumRange = NumRange {
    low: 1,
    high: u32::MAX as ngx_int_t,
};
static mut COUNT: NumRange = NumRange {
    low: 0,
    high: u32::MAX as ngx_int_t,
};
static mut SECONDS: NumRange = NumRange {
    low: 0,
    high: 100 * 365 * 24 * 3600,
};
static mut REQUESTS: NumRange = NumRange {
    low: 0,
    high: ngx_int_t::MAX,
};
/// A time that must not be zero (the core's limit for `passenger_start_timeout`: a year).
static mut POSITIVE_SECONDS: NumRange = NumRange {
    low: 1,
    high: 365 * 24 * 3600,
};
static mut THREADS: NumRange = NumRange {
    low: 1,
    high: MAX_THREAD_COUNT,
};
static mut BACKLOG: NumRange = NumRange {
    low: 1,
    high: 65535,
};
/// `passenger_force_max_concurrent_requests_per_process`: -1 (what the app says), 0
/// (unlimited) or a count.
static mut CONCURRENCY: NumRange = NumRange {
    low: -1,
    high: u32::MAX as ngx_int_t,
};
static mut HTTP_STATUS: NumRange = NumRange {
    low: 100,
    high: 599,
};

/// A directive's setter (`ngx_command_t.set`).
type Setter = unsafe extern "C" fn(*mut ngx_conf_t, *mut ngx_command_t, *mut c_void) -> *mut c_char;

/// A directive of the main (`http`) conf when `main`, else of any level down to `if` in
/// location (the location conf); `args` is what it takes (`NGX_CONF_TAKE1`, `NGX_CONF_FLAG`,
/// ...), `set` stores it in the field at `offset`, with `post` as its extra data.
const fn command(
    name: &'static CStr,
    main: bool,
    args: u32,
    set: Setter,
    offset: usize,
    post: *mut c_void,
) -> ngx_command_t {
    let scope = if main { NGX_HTTP_MAIN_CONF } else { ANY_CONF };
    ngx_command_t {
        name: static_cstr(name),
        type_: (scope | args) as ngx_uint_t,
        set: Some(set),
        conf: if main {
            NGX_HTTP_MAIN_CONF_OFFSET
        } else {
            NGX_HTTP_LOC_CONF_OFFSET
        },
        offset,
        post,
    }
}

/// A numeric directive in the main (`http`) or location conf, validated against `range`.
const fn number(
    name: &'static CStr,
    main: bool,
    offset: usize,
    range: *mut NumRange,
) -> ngx_command_t {
    command(
        name,
        main,
        NGX_CONF_TAKE1,
        set_number,
        offset,
        range as *mut c_void,
    )
}

/// Parses a directive's value as a whole number within the range in `cmd.post`.
fn parse_number(text: &[u8], low: ngx_int_t, high: ngx_int_t) -> Option<ngx_int_t> {
    std::str::from_utf8(text)
        .ok()
        .filter(|t| {
            let digits = if low < 0 {
                t.strip_prefix('-').unwrap_or(t)
            } else {
                t
            };
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        })
        .and_then(|t| t.parse::<ngx_int_t>().ok())
        .filter(|n| (low..=high).contains(n))
}

unsafe extern "C" fn set_number(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: every `number()` directive's `post` is a `NumRange` static.
    let range = unsafe { &*((*cmd).post as *const NumRange) };
    unsafe {
        set_once(cf, cmd, conf, |_, value| {
            let text = bytes(&value);
            parse_number(text, range.low, range.high).ok_or_else(|| {
                Refusal::from(format!(
                    "invalid value \"{}\"; use a whole number from {} to {}",
                    String::from_utf8_lossy(text),
                    range.low,
                    range.high
                ))
            })
        })
    }
}

const fn main_str(name: &'static CStr, offset: usize) -> ngx_command_t {
    command(
        name,
        true,
        NGX_CONF_TAKE1,
        ngx_conf_set_str_slot,
        offset,
        ptr::null_mut(),
    )
}

const fn loc_str(name: &'static CStr, offset: usize) -> ngx_command_t {
    command(
        name,
        false,
        NGX_CONF_TAKE1,
        ngx_conf_set_str_slot,
        offset,
        ptr::null_mut(),
    )
}

/// An `on|off` directive in the main (`http`) or location conf.
const fn flag(name: &'static CStr, main: bool, offset: usize) -> ngx_command_t {
    command(
        name,
        main,
        NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        offset,
        ptr::null_mut(),
    )
}

/// A user or group name directive (`kind` is `USER` or `GROUP`) that refuses root.
const fn identity(
    name: &'static CStr,
    main: bool,
    offset: usize,
    kind: *mut Identity,
) -> ngx_command_t {
    command(
        name,
        main,
        NGX_CONF_TAKE1,
        set_identity,
        offset,
        kind as *mut c_void,
    )
}

/// `passenger_python` / `passenger_nodejs`: a command name or path, not empty.
const fn interpreter(name: &'static CStr, offset: usize) -> ngx_command_t {
    command(
        name,
        false,
        NGX_CONF_TAKE1,
        set_interpreter,
        offset,
        ptr::null_mut(),
    )
}

/// A location directive whose value is one of a few `names` (its `post`, see [`set_named`]).
const fn named(name: &'static CStr, offset: usize, names: &'static Names) -> ngx_command_t {
    command(
        name,
        false,
        NGX_CONF_TAKE1,
        set_named,
        offset,
        names as *const Names as *mut c_void,
    )
}

/// The values a [`named`] directive takes: `parse` gives a name's index (what the location
/// keeps), `what` and `choices` word the refusal of any other value.
struct Names {
    parse: fn(&[u8]) -> Option<ngx_int_t>,
    what: &'static str,
    choices: &'static str,
}

static SPAWN_METHOD_NAMES: Names = Names {
    parse: parse_spawn_method,
    what: "spawn method",
    choices: "smart (a preloader forks each process; also smart-lv2) or direct (each process \
              starts afresh; also conservative)",
};
static CONCURRENCY_MODEL_NAMES: Names = Names {
    parse: parse_concurrency_model,
    what: "model",
    choices: "process (one request at a time per process) or thread (passenger_thread_count \
              threads per process)",
};
static SCHEDULING_POLICY_NAMES: Names = Names {
    parse: parse_scheduling_policy,
    what: "scheduling policy",
    choices: "batch (an app process woken up waits for the running task's turn to end) or \
              normal (it may preempt that task; also other)",
};

pub static mut COMMANDS: [ngx_command_t; 113] = [
    main_str(c"passenger_root", offset_of!(MainConf, root)),
    command(
        c"passenger_log_level",
        true,
        NGX_CONF_TAKE1,
        ngx_conf_set_num_slot,
        offset_of!(MainConf, log_level),
        &raw mut LOG_LEVEL_BOUNDS as *mut c_void,
    ),
    main_str(c"passenger_log_file", offset_of!(MainConf, log_file)),
    main_str(
        c"passenger_instance_registry_dir",
        offset_of!(MainConf, registry_dir),
    ),
    flag(c"passenger_enabled", false, offset_of!(LocConf, enabled)),
    loc_str(c"passenger_ruby", offset_of!(LocConf, ruby)),
    loc_str(c"passenger_app_root", offset_of!(LocConf, app_root)),
    command(
        c"passenger_app_type",
        false,
        NGX_CONF_TAKE1,
        set_app_type,
        offset_of!(LocConf, app_type),
        ptr::null_mut(),
    ),
    loc_str(c"passenger_startup_file", offset_of!(LocConf, startup_file)),
    loc_str(c"passenger_app_env", offset_of!(LocConf, app_env)),
    loc_str(c"rails_env", offset_of!(LocConf, app_env)),
    loc_str(c"rack_env", offset_of!(LocConf, app_env)),
    number(
        c"passenger_max_pool_size",
        true,
        offset_of!(MainConf, max_pool_size),
        &raw mut AT_LEAST_ONE,
    ),
    number(
        c"passenger_max_instances_per_app",
        true,
        offset_of!(MainConf, max_instances_per_app),
        &raw mut COUNT,
    ),
    number(
        c"passenger_pool_idle_time",
        true,
        offset_of!(MainConf, pool_idle_time),
        &raw mut SECONDS,
    ),
    number(
        c"passenger_stat_throttle_rate",
        true,
        offset_of!(MainConf, stat_throttle_rate),
        &raw mut SECONDS,
    ),
    number(
        c"passenger_min_instances",
        false,
        offset_of!(LocConf, min_instances),
        &raw mut COUNT,
    ),
    number(
        c"passenger_max_requests",
        false,
        offset_of!(LocConf, max_requests),
        &raw mut REQUESTS,
    ),
    number(
        c"passenger_max_requests_jitter",
        false,
        offset_of!(LocConf, max_requests_jitter),
        &raw mut REQUESTS,
    ),
    flag(
        c"passenger_resist_deployment_errors",
        false,
        offset_of!(LocConf, resist_deployment_errors),
    ),
    number(
        c"passenger_max_request_queue_size",
        false,
        offset_of!(LocConf, max_request_queue_size),
        &raw mut COUNT,
    ),
    number(
        c"passenger_request_queue_overflow_status_code",
        false,
        offset_of!(LocConf, request_queue_overflow_status_code),
        &raw mut HTTP_STATUS,
    ),
    number(
        c"passenger_max_request_queue_time",
        false,
        offset_of!(LocConf, max_request_queue_time),
        &raw mut SECONDS,
    ),
    loc_str(c"passenger_restart_dir", offset_of!(LocConf, restart_dir)),
    // Spawning and environment.
    interpreter(c"passenger_python", offset_of!(LocConf, python)),
    interpreter(c"passenger_nodejs", offset_of!(LocConf, nodejs)),
    named(
        c"passenger_spawn_method",
        offset_of!(LocConf, spawn_method),
        &SPAWN_METHOD_NAMES,
    ),
    named(
        c"rails_spawn_method",
        offset_of!(LocConf, spawn_method),
        &SPAWN_METHOD_NAMES,
    ),
    number(
        c"passenger_max_preloader_idle_time",
        false,
        offset_of!(LocConf, max_preloader_idle_time),
        &raw mut SECONDS,
    ),
    number(
        c"rails_app_spawner_idle_time",
        false,
        offset_of!(LocConf, max_preloader_idle_time),
        &raw mut SECONDS,
    ),
    number(
        c"passenger_start_timeout",
        false,
        offset_of!(LocConf, start_timeout),
        &raw mut POSITIVE_SECONDS,
    ),
    command(
        c"passenger_env_var",
        false,
        NGX_CONF_TAKE2,
        set_env_var,
        offset_of!(LocConf, env_vars),
        ptr::null_mut(),
    ),
    // Off by default, as in Passenger: responses stream to the client, and the core itself
    // buffers for slow clients, so apps are released either way.
    flag(
        c"passenger_buffer_response",
        false,
        offset_of!(LocConf, upstream) + offset_of!(ngx_http_upstream_conf_t, buffering),
    ),
    flag(
        c"passenger_load_shell_envvars",
        false,
        offset_of!(LocConf, load_shell_envvars),
    ),
    number(
        c"passenger_app_file_descriptor_ulimit",
        false,
        offset_of!(LocConf, app_file_descriptor_ulimit),
        &raw mut AT_LEAST_ONE,
    ),
    identity(
        c"passenger_user",
        false,
        offset_of!(LocConf, user),
        &raw mut USER,
    ),
    identity(
        c"passenger_group",
        false,
        offset_of!(LocConf, group),
        &raw mut GROUP,
    ),
    flag(
        c"passenger_user_switching",
        true,
        offset_of!(MainConf, user_switching),
    ),
    identity(
        c"passenger_default_user",
        true,
        offset_of!(MainConf, default_user),
        &raw mut USER,
    ),
    identity(
        c"passenger_default_group",
        true,
        offset_of!(MainConf, default_group),
        &raw mut GROUP,
    ),
    flag(
        c"passenger_disable_log_prefix",
        true,
        offset_of!(MainConf, disable_log_prefix),
    ),
    // Error pages.
    flag(
        c"passenger_friendly_error_pages",
        false,
        offset_of!(LocConf, friendly_error_pages),
    ),
    command(
        c"passenger_custom_error_page",
        false,
        NGX_CONF_TAKE1,
        set_custom_error_page,
        offset_of!(LocConf, custom_error_page),
        ptr::null_mut(),
    ),
    number(
        c"passenger_spawn_exception_status_code",
        false,
        offset_of!(LocConf, spawn_exception_status_code),
        &raw mut HTTP_STATUS,
    ),
    // Concurrency. A count above 1 means threads whatever the model says; the `thread` model
    // with no count means Passenger's default of 1 thread (see `thread_count_option`).
    number(
        c"passenger_thread_count",
        false,
        offset_of!(LocConf, thread_count),
        &raw mut THREADS,
    ),
    named(
        c"passenger_concurrency_model",
        offset_of!(LocConf, concurrency_model),
        &CONCURRENCY_MODEL_NAMES,
    ),
    named(
        c"passenger_app_scheduling_policy",
        offset_of!(LocConf, app_scheduling_policy),
        &SCHEDULING_POLICY_NAMES,
    ),
    // Raw settings for the agents (repeatable, one name per line).
    command(
        c"passenger_ctl",
        true,
        NGX_CONF_TAKE2,
        set_ctl,
        0,
        ptr::null_mut(),
    ),
    main_str(c"passenger_debug_log_file", offset_of!(MainConf, log_file)),
    // Global agent settings.
    directory(c"passenger_spawn_dir", offset_of!(MainConf, spawn_dir)),
    directory(
        c"passenger_data_buffer_dir",
        offset_of!(MainConf, data_buffer_dir),
    ),
    number(
        c"passenger_socket_backlog",
        true,
        offset_of!(MainConf, socket_backlog),
        &raw mut BACKLOG,
    ),
    number(
        c"passenger_core_file_descriptor_ulimit",
        true,
        offset_of!(MainConf, core_file_descriptor_ulimit),
        &raw mut AT_LEAST_ONE,
    ),
    flag(
        c"passenger_show_version_in_header",
        true,
        offset_of!(MainConf, show_version_in_header),
    ),
    command(
        c"passenger_response_buffer_high_watermark",
        true,
        NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        offset_of!(MainConf, response_buffer_high_watermark),
        ptr::null_mut(),
    ),
    command(
        c"passenger_pre_start",
        true,
        NGX_CONF_TAKE1,
        set_pre_start,
        offset_of!(MainConf, pre_start),
        ptr::null_mut(),
    ),
    flag(
        c"passenger_abort_on_startup_error",
        true,
        offset_of!(MainConf, abort_on_startup_error),
    ),
    // App identity.
    command(
        c"passenger_base_uri",
        false,
        NGX_CONF_TAKE1,
        set_base_uri,
        offset_of!(LocConf, base_uris),
        ptr::null_mut(),
    ),
    loc_str(
        c"passenger_document_root",
        offset_of!(LocConf, document_root),
    ),
    loc_str(
        c"passenger_app_group_name",
        offset_of!(LocConf, app_group_name),
    ),
    loc_str(
        c"passenger_app_start_command",
        offset_of!(LocConf, app_start_command),
    ),
    // Pool and scaling.
    number(
        c"passenger_max_instances",
        false,
        offset_of!(LocConf, max_instances),
        &raw mut COUNT,
    ),
    number(
        c"passenger_force_max_concurrent_requests_per_process",
        false,
        offset_of!(LocConf, force_max_concurrent_requests_per_process),
        &raw mut CONCURRENCY,
    ),
    number(
        c"passenger_memory_limit",
        false,
        offset_of!(LocConf, memory_limit),
        &raw mut COUNT,
    ),
    number(
        c"passenger_max_request_time",
        false,
        offset_of!(LocConf, max_request_time),
        &raw mut SECONDS,
    ),
    flag(
        c"passenger_rolling_restarts",
        false,
        offset_of!(LocConf, rolling_restarts),
    ),
    flag(
        c"passenger_sticky_sessions",
        false,
        offset_of!(LocConf, sticky_sessions),
    ),
    command(
        c"passenger_sticky_sessions_cookie_name",
        false,
        NGX_CONF_TAKE1,
        set_cookie_name,
        offset_of!(LocConf, sticky_sessions_cookie_name),
        ptr::null_mut(),
    ),
    loc_str(
        c"passenger_sticky_sessions_cookie_attributes",
        offset_of!(LocConf, sticky_sessions_cookie_attributes),
    ),
    flag(
        c"passenger_abort_websockets_on_process_shutdown",
        false,
        offset_of!(LocConf, abort_websockets_on_process_shutdown),
    ),
    flag(
        c"passenger_preload_bundler",
        false,
        offset_of!(LocConf, preload_bundler),
    ),
    // Requests and responses: nginx's upstream settings, as scgi_* sets them.
    flag(
        c"passenger_request_buffering",
        false,
        offset_of!(LocConf, upstream) + offset_of!(ngx_http_upstream_conf_t, request_buffering),
    ),
    command(
        c"passenger_buffer_size",
        false,
        NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        offset_of!(LocConf, upstream) + offset_of!(ngx_http_upstream_conf_t, buffer_size),
        ptr::null_mut(),
    ),
    command(
        c"passenger_buffers",
        false,
        NGX_CONF_TAKE2,
        ngx_conf_set_bufs_slot,
        offset_of!(LocConf, upstream) + offset_of!(ngx_http_upstream_conf_t, bufs),
        ptr::null_mut(),
    ),
    command(
        c"passenger_busy_buffers_size",
        false,
        NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        offset_of!(LocConf, upstream)
            + offset_of!(ngx_http_upstream_conf_t, busy_buffers_size_conf),
        ptr::null_mut(),
    ),
    command(
        c"passenger_temp_path",
        false,
        NGX_CONF_TAKE1234,
        ngx_conf_set_path_slot,
        offset_of!(LocConf, upstream) + offset_of!(ngx_http_upstream_conf_t, temp_path),
        ptr::null_mut(),
    ),
    command(
        c"passenger_read_timeout",
        false,
        NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        offset_of!(LocConf, upstream) + offset_of!(ngx_http_upstream_conf_t, read_timeout),
        ptr::null_mut(),
    ),
    flag(
        c"passenger_ignore_client_abort",
        false,
        offset_of!(LocConf, upstream) + offset_of!(ngx_http_upstream_conf_t, ignore_client_abort),
    ),
    flag(
        c"passenger_intercept_errors",
        false,
        offset_of!(LocConf, upstream) + offset_of!(ngx_http_upstream_conf_t, intercept_errors),
    ),
    command(
        c"passenger_pass_header",
        false,
        NGX_CONF_TAKE1,
        ngx_conf_set_str_array_slot,
        offset_of!(LocConf, upstream) + offset_of!(ngx_http_upstream_conf_t, pass_headers),
        ptr::null_mut(),
    ),
    command(
        c"passenger_ignore_headers",
        false,
        NGX_CONF_1MORE,
        ngx_conf_set_bitmask_slot,
        offset_of!(LocConf, upstream) + offset_of!(ngx_http_upstream_conf_t, ignore_headers),
        (&raw mut ngx_http_upstream_ignore_headers_masks) as *mut c_void,
    ),
    command(
        c"passenger_set_header",
        false,
        NGX_CONF_TAKE2,
        crate::headers::set_header,
        offset_of!(LocConf, set_headers),
        ptr::null_mut(),
    ),
    number(
        c"passenger_headers_hash_max_size",
        false,
        offset_of!(LocConf, headers_hash_max_size),
        &raw mut AT_LEAST_ONE,
    ),
    number(
        c"passenger_headers_hash_bucket_size",
        false,
        offset_of!(LocConf, headers_hash_bucket_size),
        &raw mut AT_LEAST_ONE,
    ),
    // Obsolete: accepted with a warning, as Passenger's own later versions do.
    obsolete(c"passenger_turbocaching"),
    obsolete(c"passenger_vary_turbocache_by_cookie"),
    obsolete(c"passenger_use_global_queue"),
    obsolete(c"passenger_disable_security_update_check"),
    obsolete(c"passenger_security_update_check_proxy"),
    obsolete(c"passenger_disable_anonymous_telemetry"),
    obsolete(c"passenger_anonymous_telemetry_proxy"),
    obsolete(c"passenger_analytics_log_user"),
    obsolete(c"passenger_analytics_log_group"),
    obsolete(c"union_station_support"),
    obsolete(c"union_station_key"),
    obsolete(c"union_station_filter"),
    obsolete(c"union_station_gateway_address"),
    obsolete(c"union_station_gateway_port"),
    obsolete(c"union_station_gateway_cert"),
    obsolete(c"union_station_proxy_address"),
    obsolete(c"rails_framework_spawner_idle_time"),
    obsolete(c"passenger_fly_with"),
    obsolete(c"passenger_admin_panel_url"),
    obsolete(c"passenger_admin_panel_auth_type"),
    obsolete(c"passenger_admin_panel_username"),
    obsolete(c"passenger_admin_panel_password"),
    obsolete(c"passenger_app_rights"),
    obsolete(c"passenger_debugger"),
    obsolete(c"passenger_dump_config_manifest"),
    obsolete(c"passenger_file_descriptor_log_file"),
    obsolete(c"passenger_monitor_log_file"),
    obsolete(c"passenger_app_log_file"),
    ngx_command_t::empty(),
];

/// A directive that no longer does anything: any arguments, anywhere, and a warning.
const fn obsolete(name: &'static CStr) -> ngx_command_t {
    ngx_command_t {
        name: static_cstr(name),
        type_: (ANY_CONF | NGX_CONF_ANY) as ngx_uint_t,
        set: Some(warn_obsolete),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    }
}

unsafe extern "C" fn warn_obsolete(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || unsafe {
        conf_log(
            NGX_LOG_WARN,
            cf,
            &format!(
                "{} is obsolete and has no effect; it can be removed",
                String::from_utf8_lossy(bytes(&(*cmd).name))
            ),
        );
        CONF_OK
    })
}

/// A global directive naming an existing directory (made absolute against nginx's prefix).
const fn directory(name: &'static CStr, offset: usize) -> ngx_command_t {
    command(
        name,
        true,
        NGX_CONF_TAKE1,
        set_directory,
        offset,
        ptr::null_mut(),
    )
}

unsafe extern "C" fn set_directory(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    unsafe {
        set_once(cf, cmd, conf, |_, mut value| {
            if value.len == 0 || bytes(&value).contains(&0) {
                return Err(Refusal::from("give the path of a directory".to_string()));
            }
            if ngx_conf_full_name((*cf).cycle, &mut value, 0) != NGX_OK as ngx_int_t {
                return Err(Refusal::Logged);
            }
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(bytes(&value)));
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => Ok(value),
                Ok(_) => Err(Refusal::from(format!(
                    "{} is not a directory",
                    path.display()
                ))),
                Err(e) => Err(Refusal::from(format!("cannot use {}: {e}", path.display()))),
            }
        })
    }
}

/// `passenger_pre_start URL` (repeatable): an http:// URL, checked here so that a typo fails
/// `nginx -t` rather than going unnoticed at start.
unsafe extern "C" fn set_pre_start(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || unsafe {
        let url = bytes(&first_arg(cf));
        if let Err(problem) = passenger_protocol::pre_start::parse_url(url) {
            conf_log(
                NGX_LOG_EMERG,
                cf,
                &format!(
                    "passenger_pre_start: invalid URL \"{}\": {problem}",
                    String::from_utf8_lossy(url).escape_debug()
                ),
            );
            return CONF_ERROR;
        }
        ngx_conf_set_str_array_slot(cf, cmd, conf)
    })
}

/// `passenger_base_uri /PATH` (repeatable): stored without its trailing slash; `/` is the
/// root, which every location already is, so it adds nothing.
unsafe extern "C" fn set_base_uri(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || unsafe {
        let mut uri = first_arg(cf);
        let text = bytes(&uri);
        if !text.starts_with(b"/") || text.iter().any(|&b| b <= b' ' || b == b'?' || b == b'#') {
            conf_log(
                NGX_LOG_EMERG,
                cf,
                &format!(
                    "passenger_base_uri: invalid URI \"{}\"; give a path starting with / \
                     (like /app), without spaces, query or fragment",
                    String::from_utf8_lossy(text).escape_debug()
                ),
            );
            return CONF_ERROR;
        }
        while uri.len > 1 && *uri.data.add(uri.len - 1) == b'/' {
            uri.len -= 1;
        }
        if uri.len == 1 {
            return CONF_OK;
        }
        let field = (conf as *mut u8).add((*cmd).offset) as *mut *mut ngx_array_t;
        if *field as *mut c_void == UNSET_PTR || (*field).is_null() {
            *field = ngx_array_create((*cf).pool, 2, std::mem::size_of::<ngx_str_t>());
            if (*field).is_null() {
                return CONF_ERROR;
            }
        }
        let slot = ngx_array_push(*field) as *mut ngx_str_t;
        if slot.is_null() {
            return CONF_ERROR;
        }
        *slot = uri;
        CONF_OK
    })
}

/// `passenger_sticky_sessions_cookie_name NAME`: a cookie name (an HTTP token).
unsafe extern "C" fn set_cookie_name(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    unsafe {
        set_once(cf, cmd, conf, |_, value| {
            let name = bytes(&value);
            let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
            if name.is_empty() || !name.iter().all(token) {
                return Err(Refusal::from(format!(
                    "invalid cookie name \"{}\"; use letters, digits and -_.",
                    String::from_utf8_lossy(name).escape_debug()
                )));
            }
            Ok(value)
        })
    }
}

/// The directive's first argument.
unsafe fn first_arg(cf: *mut ngx_conf_t) -> ngx_str_t {
    unsafe { *((*(*cf).args).elts as *const ngx_str_t).add(1) }
}

/// A conf field a directive sets at most once: whether it has been set.
trait Slot {
    fn is_set(&self) -> bool;
}

impl Slot for ngx_int_t {
    fn is_set(&self) -> bool {
        *self != UNSET
    }
}

impl Slot for ngx_str_t {
    fn is_set(&self) -> bool {
        !self.data.is_null()
    }
}

/// Why a setter refused its value.
enum Refusal {
    /// Logged at `[emerg]` as "DIRECTIVE: message".
    Message(String),
    /// nginx has already said why.
    Logged,
}

impl From<String> for Refusal {
    fn from(message: String) -> Self {
        Refusal::Message(message)
    }
}

/// The shape of every one-argument setter: the field at `cmd.offset` may be set once ("is
/// duplicate" otherwise); `parse` gets the directive's name and its argument and returns the
/// value to store, or why it refuses it.
unsafe fn set_once<T: Slot>(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
    parse: impl FnOnce(&str, ngx_str_t) -> Result<T, Refusal>,
) -> *mut c_char {
    guard(CONF_ERROR, || unsafe {
        let field = (conf as *mut u8).add((*cmd).offset) as *mut T;
        if (*field).is_set() {
            return c"is duplicate".as_ptr() as *mut c_char;
        }
        let directive = String::from_utf8_lossy(bytes(&(*cmd).name));
        match parse(&directive, first_arg(cf)) {
            Ok(value) => {
                *field = value;
                CONF_OK
            }
            Err(Refusal::Message(message)) => {
                conf_log(NGX_LOG_EMERG, cf, &format!("{directive}: {message}"));
                CONF_ERROR
            }
            Err(Refusal::Logged) => CONF_ERROR,
        }
    })
}

/// `passenger_app_type rack|ruby|wsgi|python|node|nodejs`.
unsafe extern "C" fn set_app_type(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    unsafe {
        set_once(cf, cmd, conf, |_, value| {
            let name = bytes(&value);
            match parse_app_type(name) {
                Some(t) => Ok(APP_TYPES.iter().position(|x| *x == t).unwrap_or(0) as ngx_int_t),
                None => Err(Refusal::from(format!(
                    "unknown app type \"{}\"; use rack (or ruby), wsgi (or python), or node (or \
                     nodejs)",
                    String::from_utf8_lossy(name)
                ))),
            }
        })
    }
}

/// A directive whose value is one of a few names, kept as the index its [`Names`] (the
/// command's `post`) gives it; any other value is refused: "unknown WHAT "VALUE"; use CHOICES".
unsafe extern "C" fn set_named(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    unsafe {
        // SAFETY: `named` set `post` to a static `Names`.
        let names = &*((*cmd).post as *const Names);
        set_once(cf, cmd, conf, |_, value| {
            let name = bytes(&value);
            (names.parse)(name).ok_or_else(|| {
                Refusal::from(format!(
                    "unknown {} \"{}\"; use {}",
                    names.what,
                    String::from_utf8_lossy(name),
                    names.choices
                ))
            })
        })
    }
}

/// `passenger_ctl NAME VALUE` (repeatable; each name at most once).
unsafe extern "C" fn set_ctl(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || unsafe {
        let mcf = &mut *(conf as *mut MainConf);
        let args = (*(*cf).args).elts as *const ngx_str_t;
        let (name, value) = (bytes(&*args.add(1)), bytes(&*args.add(2)));
        let (setting, slot, parsed) = match parse_ctl(name, value) {
            Ok(Ctl::IntegrationMode(mode)) => ("integration_mode", &mut mcf.integration_mode, mode),
            Err(message) => {
                conf_log(NGX_LOG_EMERG, cf, &message);
                return CONF_ERROR;
            }
        };
        if *slot != UNSET {
            conf_log(
                NGX_LOG_EMERG,
                cf,
                &format!("passenger_ctl {setting} is duplicate; set it once"),
            );
            return CONF_ERROR;
        }
        *slot = parsed;
        CONF_OK
    })
}

/// `passenger_python PATH`, `passenger_nodejs PATH`.
unsafe extern "C" fn set_interpreter(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    unsafe {
        set_once(cf, cmd, conf, |directive, value| {
            let text = bytes(&value);
            if text.is_empty() || text.contains(&0) || text.iter().all(u8::is_ascii_whitespace) {
                let example = if directive.ends_with("python") {
                    "python3"
                } else {
                    "node"
                };
                return Err(Refusal::from(format!(
                    "invalid interpreter \"{}\"; give a command found in PATH (like {example}) \
                     or an absolute path",
                    String::from_utf8_lossy(text).escape_debug()
                )));
            }
            Ok(value)
        })
    }
}

/// `passenger_custom_error_page PATH`: an existing file, made absolute against nginx's prefix
/// here, so that every block inheriting it sends the same path.
unsafe extern "C" fn set_custom_error_page(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    unsafe {
        set_once(cf, cmd, conf, |_, mut value| {
            let problem = if value.len == 0 || bytes(&value).contains(&0) {
                "it is not a path".to_string()
            } else if ngx_conf_full_name((*cf).cycle, &mut value, 0) != NGX_OK as ngx_int_t {
                return Err(Refusal::Logged);
            } else {
                let path = std::path::Path::new(std::ffi::OsStr::from_bytes(bytes(&value)));
                match std::fs::metadata(path) {
                    Ok(m) if m.is_file() => return Ok(value),
                    Ok(_) => "it is not a regular file".to_string(),
                    Err(e) => e.to_string(),
                }
            };
            Err(Refusal::from(format!(
                "cannot use \"{}\": {problem}; give the path of a static HTML file (a relative \
                 path is relative to nginx's prefix)",
                String::from_utf8_lossy(bytes(&value)).escape_debug()
            )))
        })
    }
}

/// What is wrong with a `passenger_env_var` name or value, if anything: the core receives the
/// pairs as `NAME\0VALUE\0` text, and `execve` takes `NAME=VALUE`.
fn env_var_problem(name: &[u8], value: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("the name is empty; write passenger_env_var NAME VALUE")
    } else if name.contains(&b'=') {
        Some("the name contains \"=\"; write passenger_env_var NAME VALUE, not NAME=VALUE")
    } else if name.contains(&0) || value.contains(&0) {
        Some("it contains a NUL byte, which no environment variable can hold")
    } else if std::str::from_utf8(name).is_err() || std::str::from_utf8(value).is_err() {
        Some("it is not valid UTF-8")
    } else {
        None
    }
}

/// `passenger_env_var NAME VALUE` (repeatable).
unsafe extern "C" fn set_env_var(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || unsafe {
        let field = (conf as *mut u8).add((*cmd).offset) as *mut *mut ngx_array_t;
        let args = (*(*cf).args).elts as *const ngx_str_t;
        let (name, value) = (*args.add(1), *args.add(2));
        if let Some(problem) = env_var_problem(bytes(&name), bytes(&value)) {
            conf_log(
                NGX_LOG_EMERG,
                cf,
                &format!(
                    "passenger_env_var: invalid variable \"{}\" (value \"{}\"): {problem}",
                    String::from_utf8_lossy(bytes(&name)),
                    String::from_utf8_lossy(bytes(&value)).escape_debug()
                ),
            );
            return CONF_ERROR;
        }
        if *field as *mut c_void == UNSET_PTR || (*field).is_null() {
            *field = ngx_array_create((*cf).pool, 4, std::mem::size_of::<ngx_keyval_t>());
            if (*field).is_null() {
                return CONF_ERROR;
            }
        }
        let kv = ngx_array_push(*field) as *mut ngx_keyval_t;
        if kv.is_null() {
            return CONF_ERROR;
        }
        // The argument strings live in the configuration pool, as long as the array.
        *kv = ngx_keyval_t { key: name, value };
        CONF_OK
    })
}

/// Which kind of name an identity directive takes (its `post`).
#[repr(C)]
pub enum Identity {
    User,
    Group,
}

static mut USER: Identity = Identity::User;
static mut GROUP: Identity = Identity::Group;

/// Whether `name` names the superuser (or its group): `root`, id `0`, or a name the system
/// resolves to id 0.
fn names_root(name: &[u8], kind: &Identity) -> bool {
    if name == b"root" || (!name.is_empty() && name.iter().all(|&b| b == b'0')) {
        return true;
    }
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return false;
    };
    // At configuration load, in nginx's single-threaded master (as its `user` directive does).
    unsafe {
        match kind {
            Identity::User => {
                let pw = libc::getpwnam(c_name.as_ptr());
                !pw.is_null() && (*pw).pw_uid == 0
            }
            Identity::Group => {
                let gr = libc::getgrnam(c_name.as_ptr());
                !gr.is_null() && (*gr).gr_gid == 0
            }
        }
    }
}

/// `passenger_user`, `passenger_group`, `passenger_default_user`, `passenger_default_group`: a
/// name that is not root.
unsafe extern "C" fn set_identity(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    // SAFETY: every `identity()` directive's `post` is `USER` or `GROUP`.
    let kind = unsafe { &*((*cmd).post as *const Identity) };
    let what = match kind {
        Identity::User => "user",
        Identity::Group => "group",
    };
    unsafe {
        set_once(cf, cmd, conf, |_, value| {
            let name = bytes(&value);
            if name.is_empty() || name.contains(&0) {
                Err(Refusal::from(format!(
                    "invalid {what} name \"{}\"; name an existing {what}",
                    String::from_utf8_lossy(name).escape_debug()
                )))
            } else if names_root(name, kind) {
                Err(Refusal::from(format!(
                    "refusing {what} \"{}\": apps never run as root; name an unprivileged {what}",
                    String::from_utf8_lossy(name)
                )))
            } else {
                Ok(value)
            }
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Main conf

pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    guard(ptr::null_mut(), || unsafe {
        let mcf: *mut MainConf = crate::util::pool_zeroed((*cf).pool);
        if !mcf.is_null() {
            (*mcf).log_level = UNSET;
            (*mcf).max_pool_size = UNSET;
            (*mcf).max_instances_per_app = UNSET;
            (*mcf).pool_idle_time = UNSET;
            (*mcf).stat_throttle_rate = UNSET;
            (*mcf).user_switching = UNSET;
            (*mcf).disable_log_prefix = UNSET;
            (*mcf).integration_mode = UNSET;
            (*mcf).socket_backlog = UNSET;
            (*mcf).core_file_descriptor_ulimit = UNSET;
            (*mcf).show_version_in_header = UNSET;
            (*mcf).response_buffer_high_watermark = UNSET_SIZE;
            (*mcf).pre_start = UNSET_PTR as _;
            (*mcf).abort_on_startup_error = UNSET;
        }
        mcf as *mut c_void
    })
}

pub unsafe extern "C" fn init_main_conf(cf: *mut ngx_conf_t, conf: *mut c_void) -> *mut c_char {
    guard(CONF_ERROR, || unsafe {
        let mcf = &mut *(conf as *mut MainConf);
        if mcf.log_level == UNSET {
            mcf.log_level = 3;
        }
        merge_int(
            &mut mcf.max_pool_size,
            UNSET,
            options::DEFAULT_MAX_POOL_SIZE as ngx_int_t,
        );
        merge_int(&mut mcf.max_instances_per_app, UNSET, 0);
        merge_int(
            &mut mcf.pool_idle_time,
            UNSET,
            options::DEFAULT_POOL_IDLE_TIME as ngx_int_t,
        );
        merge_int(
            &mut mcf.stat_throttle_rate,
            UNSET,
            options::DEFAULT_STAT_THROTTLE_RATE as ngx_int_t,
        );
        merge_int(&mut mcf.user_switching, UNSET, 1);
        merge_int(&mut mcf.disable_log_prefix, UNSET, 0);
        merge_int(&mut mcf.integration_mode, UNSET, 0);
        merge_int(&mut mcf.socket_backlog, UNSET, DEFAULT_SOCKET_BACKLOG);
        merge_int(&mut mcf.show_version_in_header, UNSET, 1);
        merge_int(&mut mcf.abort_on_startup_error, UNSET, 0);
        merge_size_or(
            &mut mcf.response_buffer_high_watermark,
            UNSET_SIZE,
            options::DEFAULT_RESPONSE_BUFFER_HIGH_WATERMARK as usize,
        );
        merge_str(
            &mut mcf.default_user,
            ngx_str_t {
                len: 0,
                data: ptr::null_mut(),
            },
            options::DEFAULT_USER_NAME.as_bytes(),
        );
        for path in [&mut mcf.root, &mut mcf.log_file, &mut mcf.registry_dir] {
            if path.len > 0 && ngx_conf_full_name((*cf).cycle, path, 0) != NGX_OK as ngx_int_t {
                return CONF_ERROR;
            }
        }
        // Trailing slashes would double up in "<root>/agents/...".
        while mcf.root.len > 1 && *mcf.root.data.add(mcf.root.len - 1) == b'/' {
            mcf.root.len -= 1;
        }
        CONF_OK
    })
}

// ---------------------------------------------------------------------------------------------
// Location conf

pub unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    guard(ptr::null_mut(), || unsafe {
        let conf: *mut LocConf = crate::util::pool_zeroed((*cf).pool);
        if conf.is_null() {
            return ptr::null_mut();
        }
        let c = &mut *conf;
        c.enabled = UNSET;
        c.app_type = UNSET;
        c.min_instances = UNSET;
        c.max_requests = UNSET;
        c.max_requests_jitter = UNSET;
        c.resist_deployment_errors = UNSET;
        c.max_request_queue_size = UNSET;
        c.request_queue_overflow_status_code = UNSET;
        c.max_request_queue_time = UNSET;
        c.spawn_method = UNSET;
        c.max_preloader_idle_time = UNSET;
        c.start_timeout = UNSET;
        c.env_vars = UNSET_PTR as _;
        c.load_shell_envvars = UNSET;
        c.app_file_descriptor_ulimit = UNSET;
        c.friendly_error_pages = UNSET;
        c.spawn_exception_status_code = UNSET;
        c.thread_count = UNSET;
        c.concurrency_model = UNSET;
        c.app_scheduling_policy = UNSET;
        c.base_uris = UNSET_PTR as _;
        c.max_instances = UNSET;
        c.force_max_concurrent_requests_per_process = UNSET;
        c.memory_limit = UNSET;
        c.max_request_time = UNSET;
        c.rolling_restarts = UNSET;
        c.sticky_sessions = UNSET;
        c.abort_websockets_on_process_shutdown = UNSET;
        c.preload_bundler = UNSET;
        c.set_headers = UNSET_PTR as _;
        c.headers_hash_max_size = UNSET;
        c.headers_hash_bucket_size = UNSET;

        // Zeroed by pcalloc: bufs, ignore_headers, next_upstream, temp_path, hide_headers_hash,
        // store (off), cache (off), limit_rate (none).
        let u = &mut c.upstream;
        u.store_access = UNSET_UINT;
        u.next_upstream_tries = UNSET_UINT;
        u.buffering = UNSET;
        u.request_buffering = UNSET;
        u.ignore_client_abort = UNSET;
        u.force_ranges = UNSET;
        u.local = UNSET_PTR as _;
        u.socket_keepalive = UNSET;
        u.connect_timeout = UNSET_MSEC;
        u.send_timeout = UNSET_MSEC;
        u.read_timeout = UNSET_MSEC;
        u.next_upstream_timeout = UNSET_MSEC;
        u.send_lowat = UNSET_SIZE;
        u.buffer_size = UNSET_SIZE;
        u.busy_buffers_size_conf = UNSET_SIZE;
        u.max_temp_file_size_conf = UNSET_SIZE;
        u.temp_file_write_size_conf = UNSET_SIZE;
        u.pass_request_headers = UNSET;
        u.pass_request_body = UNSET;
        u.hide_headers = UNSET_PTR as _;
        u.pass_headers = UNSET_PTR as _;
        u.intercept_errors = UNSET;
        u.cyclic_temp_file = 0;
        // Let the app turn buffering off per response with `X-Accel-Buffering: no`.
        u.set_change_buffering(1);
        u.module = static_str(b"passenger");
        conf as *mut c_void
    })
}

fn merge_int(conf: &mut ngx_int_t, prev: ngx_int_t, default: ngx_int_t) {
    if *conf == UNSET {
        *conf = if prev == UNSET { default } else { prev };
    }
}

fn merge_uint(conf: &mut ngx_uint_t, prev: ngx_uint_t, default: ngx_uint_t) {
    if *conf == UNSET_UINT {
        *conf = if prev == UNSET_UINT { default } else { prev };
    }
}

/// Merges a size the user may set (kept in `*conf` as set, `UNSET_SIZE` if not) and returns
/// the effective value: the setting, else `default`, which depends on other merged sizes.
fn merge_size_or(conf: &mut usize, prev: usize, default: usize) -> usize {
    merge_uint(conf, prev, UNSET_SIZE);
    if *conf == UNSET_SIZE { default } else { *conf }
}

fn merge_str(conf: &mut ngx_str_t, prev: ngx_str_t, default: &'static [u8]) {
    if conf.data.is_null() {
        *conf = if prev.data.is_null() {
            static_str(default)
        } else {
            prev
        };
    }
}

/// A string that stays unset (null) when neither level sets it, so "unset" can be told from
/// "set to empty".
fn merge_unset_str(conf: &mut ngx_str_t, prev: ngx_str_t) {
    if conf.data.is_null() {
        *conf = prev;
    }
}

fn merge_ptr<T>(conf: &mut *mut T, prev: *mut T, default: *mut T) {
    if *conf as *mut c_void == UNSET_PTR {
        *conf = if prev as *mut c_void == UNSET_PTR {
            default
        } else {
            prev
        };
    }
}

static mut TEMP_PATH: ngx_path_init_t = ngx_path_init_t {
    name: static_cstr(c"passenger_temp"),
    level: [1, 2, 0],
};

/// Response headers of the core that are not passed on to the client (unless
/// `passenger_pass_header` names them). NUL-terminated: nginx compares them with strcasecmp.
static mut HIDE_HEADERS: [ngx_str_t; 7] = [
    static_cstr(c"Status"),
    static_cstr(c"X-Accel-Expires"),
    static_cstr(c"X-Accel-Redirect"),
    static_cstr(c"X-Accel-Limit-Rate"),
    static_cstr(c"X-Accel-Buffering"),
    static_cstr(c"X-Accel-Charset"),
    ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    },
];

pub unsafe extern "C" fn merge_loc_conf(
    cf: *mut ngx_conf_t,
    parent: *mut c_void,
    child: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || unsafe {
        merge(
            cf,
            &mut *(parent as *mut LocConf),
            &mut *(child as *mut LocConf),
        )
    })
}

unsafe fn merge(cf: *mut ngx_conf_t, prev: &mut LocConf, conf: &mut LocConf) -> *mut c_char {
    merge_int(&mut conf.enabled, prev.enabled, 0);
    merge_str(&mut conf.ruby, prev.ruby, b"ruby");
    merge_str(&mut conf.app_root, prev.app_root, b"");
    merge_int(&mut conf.app_type, prev.app_type, UNSET);
    merge_str(&mut conf.startup_file, prev.startup_file, b"");
    merge_str(&mut conf.app_env, prev.app_env, DEFAULT_APP_ENV.as_bytes());
    merge_int(
        &mut conf.min_instances,
        prev.min_instances,
        options::DEFAULT_MIN_INSTANCES as ngx_int_t,
    );
    merge_int(&mut conf.max_requests, prev.max_requests, 0);
    merge_int(&mut conf.max_requests_jitter, prev.max_requests_jitter, 0);
    merge_int(
        &mut conf.resist_deployment_errors,
        prev.resist_deployment_errors,
        0,
    );
    merge_int(
        &mut conf.max_request_queue_size,
        prev.max_request_queue_size,
        options::DEFAULT_MAX_REQUEST_QUEUE_SIZE as ngx_int_t,
    );
    merge_int(
        &mut conf.request_queue_overflow_status_code,
        prev.request_queue_overflow_status_code,
        options::DEFAULT_REQUEST_QUEUE_OVERFLOW_STATUS_CODE as ngx_int_t,
    );
    merge_int(
        &mut conf.max_request_queue_time,
        prev.max_request_queue_time,
        0,
    );
    merge_str(
        &mut conf.restart_dir,
        prev.restart_dir,
        options::DEFAULT_RESTART_DIR.as_bytes(),
    );
    merge_str(&mut conf.python, prev.python, b"python3");
    merge_str(&mut conf.nodejs, prev.nodejs, b"node");
    merge_int(&mut conf.spawn_method, prev.spawn_method, UNSET);
    merge_int(
        &mut conf.max_preloader_idle_time,
        prev.max_preloader_idle_time,
        options::DEFAULT_MAX_PRELOADER_IDLE_TIME as ngx_int_t,
    );
    merge_int(
        &mut conf.start_timeout,
        prev.start_timeout,
        options::DEFAULT_START_TIMEOUT as ngx_int_t,
    );
    merge_ptr(&mut conf.env_vars, prev.env_vars, ptr::null_mut());
    merge_int(&mut conf.load_shell_envvars, prev.load_shell_envvars, 1);
    merge_int(
        &mut conf.app_file_descriptor_ulimit,
        prev.app_file_descriptor_ulimit,
        UNSET,
    );
    merge_str(&mut conf.user, prev.user, b"");
    merge_str(&mut conf.group, prev.group, b"");
    merge_int(
        &mut conf.friendly_error_pages,
        prev.friendly_error_pages,
        UNSET,
    );
    merge_str(&mut conf.custom_error_page, prev.custom_error_page, b"");
    merge_int(
        &mut conf.spawn_exception_status_code,
        prev.spawn_exception_status_code,
        options::DEFAULT_SPAWN_EXCEPTION_STATUS_CODE as ngx_int_t,
    );
    merge_int(&mut conf.thread_count, prev.thread_count, 1);
    merge_int(&mut conf.concurrency_model, prev.concurrency_model, 0);
    merge_int(
        &mut conf.app_scheduling_policy,
        prev.app_scheduling_policy,
        UNSET,
    );
    merge_ptr(&mut conf.base_uris, prev.base_uris, ptr::null_mut());
    if !conf.base_uris.is_null() {
        // SAFETY: an array of ngx_str_t made by `set_base_uri` (sorting an inherited array
        // again is harmless: it is sorted already).
        let uris = unsafe {
            std::slice::from_raw_parts_mut(
                (*conf.base_uris).elts as *mut ngx_str_t,
                (*conf.base_uris).nelts,
            )
        };
        uris.sort_by_key(|u| std::cmp::Reverse(u.len));
    }
    merge_str(&mut conf.document_root, prev.document_root, b"");
    merge_unset_str(&mut conf.app_group_name, prev.app_group_name);
    merge_unset_str(&mut conf.app_start_command, prev.app_start_command);
    merge_int(&mut conf.max_instances, prev.max_instances, UNSET);
    merge_int(
        &mut conf.force_max_concurrent_requests_per_process,
        prev.force_max_concurrent_requests_per_process,
        UNSET,
    );
    if conf.force_max_concurrent_requests_per_process == -1 {
        conf.force_max_concurrent_requests_per_process = UNSET;
    }
    merge_int(&mut conf.memory_limit, prev.memory_limit, UNSET);
    merge_int(&mut conf.max_request_time, prev.max_request_time, UNSET);
    merge_int(&mut conf.rolling_restarts, prev.rolling_restarts, UNSET);
    merge_int(&mut conf.sticky_sessions, prev.sticky_sessions, UNSET);
    merge_unset_str(
        &mut conf.sticky_sessions_cookie_name,
        prev.sticky_sessions_cookie_name,
    );
    merge_unset_str(
        &mut conf.sticky_sessions_cookie_attributes,
        prev.sticky_sessions_cookie_attributes,
    );
    merge_int(
        &mut conf.abort_websockets_on_process_shutdown,
        prev.abort_websockets_on_process_shutdown,
        UNSET,
    );
    merge_int(&mut conf.preload_bundler, prev.preload_bundler, UNSET);
    merge_ptr(&mut conf.set_headers, prev.set_headers, ptr::null_mut());
    merge_int(
        &mut conf.headers_hash_max_size,
        prev.headers_hash_max_size,
        512,
    );
    merge_int(
        &mut conf.headers_hash_bucket_size,
        prev.headers_hash_bucket_size,
        64,
    );
    if conf.document_root.len > 0
        && unsafe { ngx_conf_full_name((*cf).cycle, &mut conf.document_root, 0) }
            != NGX_OK as ngx_int_t
    {
        return CONF_ERROR;
    }
    if conf.app_root.len > 0
        && unsafe { ngx_conf_full_name((*cf).cycle, &mut conf.app_root, 0) } != NGX_OK as ngx_int_t
    {
        return CONF_ERROR;
    }

    let hash_sizes = (
        conf.headers_hash_max_size as ngx_uint_t,
        conf.headers_hash_bucket_size as ngx_uint_t,
    );
    if unsafe { merge_upstream(cf, &mut prev.upstream, &mut conf.upstream, hash_sizes) } != CONF_OK
    {
        return CONF_ERROR;
    }

    if conf.enabled() {
        // Serialise the pool options once here rather than on every request.
        let mcf: *const MainConf = unsafe { conf_main_conf(cf, crate::handler::module()) };
        if let Some(mcf) = unsafe { mcf.as_ref() } {
            let cleanup = unsafe { ngx_pool_cleanup_add((*cf).pool, 0) };
            if cleanup.is_null() {
                return CONF_ERROR;
            }
            let pairs = Box::into_raw(Box::new(pool_options(mcf, conf)));
            unsafe {
                (*cleanup).handler = Some(free_pool_options);
                (*cleanup).data = pairs as *mut c_void;
            }
            conf.pool_options = pairs;
        }
        // Install the content handler the way scgi_pass does, unless another module (say,
        // proxy_pass in the same location) already owns the location's content.
        let clcf: *mut ngx_http_core_loc_conf_t =
            unsafe { conf_loc_conf(cf, &raw const ngx_http_core_module) };
        if !clcf.is_null() && unsafe { (*clcf).handler.is_none() } {
            unsafe { (*clcf).handler = Some(crate::handler::content_handler) };
        }
    }
    CONF_OK
}

/// The configuration pool's cleanup for a location's [`PoolOptionPairs`].
unsafe extern "C" fn free_pool_options(data: *mut c_void) {
    guard((), || {
        // SAFETY: `data` is the Box leaked in `merge`, and the pool runs this once.
        drop(unsafe { Box::from_raw(data as *mut PoolOptionPairs) })
    })
}

unsafe fn merge_upstream(
    cf: *mut ngx_conf_t,
    prev: &mut ngx_http_upstream_conf_t,
    conf: &mut ngx_http_upstream_conf_t,
    (hash_max_size, hash_bucket_size): (ngx_uint_t, ngx_uint_t),
) -> *mut c_char {
    let pagesize = unsafe { nginx_sys::ngx_pagesize };

    merge_uint(&mut conf.store_access, prev.store_access, 0o600);
    merge_uint(&mut conf.next_upstream_tries, prev.next_upstream_tries, 0);
    merge_int(&mut conf.buffering, prev.buffering, 0);
    merge_int(&mut conf.request_buffering, prev.request_buffering, 1);
    merge_int(&mut conf.ignore_client_abort, prev.ignore_client_abort, 0);
    merge_int(&mut conf.force_ranges, prev.force_ranges, 0);
    merge_ptr(&mut conf.local, prev.local, ptr::null_mut());
    merge_int(&mut conf.socket_keepalive, prev.socket_keepalive, 0);
    merge_uint(&mut conf.connect_timeout, prev.connect_timeout, 60_000);
    merge_uint(&mut conf.send_timeout, prev.send_timeout, 600_000);
    merge_uint(&mut conf.read_timeout, prev.read_timeout, 600_000);
    merge_uint(
        &mut conf.next_upstream_timeout,
        prev.next_upstream_timeout,
        0,
    );
    merge_uint(&mut conf.send_lowat, prev.send_lowat, 0);
    merge_uint(&mut conf.buffer_size, prev.buffer_size, pagesize);

    if conf.bufs.num == 0 {
        if prev.bufs.num != 0 {
            conf.bufs = prev.bufs;
        } else {
            conf.bufs.num = 8;
            conf.bufs.size = pagesize;
        }
    }

    let size = conf.buffer_size.max(conf.bufs.size);

    conf.busy_buffers_size = merge_size_or(
        &mut conf.busy_buffers_size_conf,
        prev.busy_buffers_size_conf,
        2 * size,
    );
    let all_but_one = (conf.bufs.num.max(1) as usize - 1) * conf.bufs.size;
    if conf.busy_buffers_size < size || conf.busy_buffers_size > all_but_one {
        unsafe {
            conf_log(
                NGX_LOG_EMERG,
                cf,
                "passenger: the busy buffers size must be at least the buffer size and less than \
                 the size of all buffers minus one",
            )
        };
        return CONF_ERROR;
    }

    conf.temp_file_write_size = merge_size_or(
        &mut conf.temp_file_write_size_conf,
        prev.temp_file_write_size_conf,
        2 * size,
    );

    conf.max_temp_file_size = merge_size_or(
        &mut conf.max_temp_file_size_conf,
        prev.max_temp_file_size_conf,
        1024 * 1024 * 1024,
    );

    if conf.ignore_headers == 0 {
        conf.ignore_headers = if prev.ignore_headers == 0 {
            NGX_CONF_BITMASK_SET as ngx_uint_t
        } else {
            prev.ignore_headers
        };
    }
    if conf.next_upstream == 0 {
        conf.next_upstream = if prev.next_upstream == 0 {
            (NGX_CONF_BITMASK_SET | NGX_HTTP_UPSTREAM_FT_ERROR | NGX_HTTP_UPSTREAM_FT_TIMEOUT)
                as ngx_uint_t
        } else {
            prev.next_upstream
        };
    }
    if conf.next_upstream & NGX_HTTP_UPSTREAM_FT_OFF as ngx_uint_t != 0 {
        conf.next_upstream = (NGX_CONF_BITMASK_SET | NGX_HTTP_UPSTREAM_FT_OFF) as ngx_uint_t;
    }

    if unsafe {
        ngx_conf_merge_path_value(cf, &mut conf.temp_path, prev.temp_path, &raw mut TEMP_PATH)
    } != CONF_OK
    {
        return CONF_ERROR;
    }

    merge_int(&mut conf.pass_request_headers, prev.pass_request_headers, 1);
    merge_int(&mut conf.pass_request_body, prev.pass_request_body, 1);
    merge_int(&mut conf.intercept_errors, prev.intercept_errors, 0);

    // Must run in every merge: an empty hide_headers_hash makes ngx_hash_find divide by zero.
    let mut hash: ngx_hash_init_t = unsafe { std::mem::zeroed() };
    hash.max_size = hash_max_size;
    let cacheline = unsafe { nginx_sys::ngx_cacheline_size }.max(1);
    hash.bucket_size = hash_bucket_size.div_ceil(cacheline) * cacheline;
    hash.name = c"passenger_hide_headers_hash".as_ptr() as *mut c_char;
    let rc = unsafe {
        ngx_http_upstream_hide_headers_hash(
            cf,
            conf,
            prev,
            (&raw mut HIDE_HEADERS) as *mut ngx_str_t,
            &mut hash,
        )
    };
    if rc != NGX_OK as ngx_int_t {
        return CONF_ERROR;
    }
    CONF_OK
}

#[cfg(test)]
mod tests {
    use super::{Ctl, INTEGRATION_MODES, parse_ctl};
    use super::{Identity, dedup_env_vars, env_var_problem, names_root, parse_number};
    use super::{
        SCHEDULING_POLICIES, SPAWN_METHODS, parse_scheduling_policy, parse_spawn_method,
        thread_count_option,
    };

    #[test]
    fn ctl_knows_integration_mode_and_names_what_it_knows() {
        let mode = |v: &[u8]| match parse_ctl(b"integration_mode", v) {
            Ok(Ctl::IntegrationMode(i)) => Ok(INTEGRATION_MODES[i as usize]),
            Err(e) => Err(e),
        };
        assert_eq!(mode(b"nginx"), Ok("nginx"));
        assert_eq!(mode(b"standalone"), Ok("standalone"));
        assert_eq!(
            mode(b"apache"),
            Err(
                "passenger_ctl integration_mode: invalid value \"apache\"; use nginx or standalone"
                    .to_string()
            )
        );
        assert!(mode(b"Standalone").is_err());
        assert!(mode(b"").is_err());
        assert_eq!(
            parse_ctl(b"frobnicate", b"1"),
            Err(
                "passenger_ctl: unknown setting \"frobnicate\"; known: integration_mode"
                    .to_string()
            )
        );
    }

    #[test]
    fn thread_count_is_sent_above_one_or_with_the_thread_model() {
        assert_eq!(thread_count_option("process", 1), None);
        assert_eq!(thread_count_option("process", 4), Some(4));
        assert_eq!(thread_count_option("thread", 1), Some(1));
        assert_eq!(thread_count_option("thread", 8), Some(8));
    }

    #[test]
    fn spawn_methods_and_their_aliases() {
        let name = |text: &[u8]| parse_spawn_method(text).map(|i| SPAWN_METHODS[i as usize]);
        assert_eq!(name(b"smart"), Some("smart"));
        assert_eq!(name(b"smart-lv2"), Some("smart"));
        assert_eq!(name(b"direct"), Some("direct"));
        assert_eq!(name(b"conservative"), Some("direct"));
        assert_eq!(name(b"fast"), None);
        assert_eq!(name(b"Smart"), None);
    }

    #[test]
    fn scheduling_policies_and_their_alias() {
        let name =
            |text: &[u8]| parse_scheduling_policy(text).map(|i| SCHEDULING_POLICIES[i as usize]);
        assert_eq!(name(b"batch"), Some("batch"));
        assert_eq!(name(b"normal"), Some("normal"));
        assert_eq!(name(b"other"), Some("normal"));
        assert_eq!(name(b"idle"), None);
        assert_eq!(name(b"Batch"), None);
    }

    #[test]
    fn env_vars_are_validated_and_the_last_value_wins() {
        assert_eq!(env_var_problem(b"A", b""), None);
        assert_eq!(env_var_problem(b"A", b"x=y z"), None);
        assert!(env_var_problem(b"", b"x").is_some());
        assert!(env_var_problem(b"A=B", b"x").is_some());
        assert!(env_var_problem(b"A\0", b"x").is_some());
        assert!(env_var_problem(b"A", b"\xff").is_some());
        let pairs: [(&[u8], &[u8]); 3] = [(b"A", b"1"), (b"B", b"2"), (b"A", b"3")];
        assert_eq!(
            dedup_env_vars(&pairs),
            vec![(&b"A"[..], &b"3"[..]), (&b"B"[..], &b"2"[..])]
        );
    }

    #[test]
    fn root_is_recognised() {
        assert!(names_root(b"root", &Identity::User));
        assert!(names_root(b"root", &Identity::Group));
        assert!(names_root(b"0", &Identity::User));
        assert!(names_root(b"00", &Identity::Group));
        assert!(!names_root(b"nobody", &Identity::User));
        assert!(!names_root(b"1000", &Identity::User));
    }

    #[test]
    fn numbers_are_validated() {
        assert_eq!(parse_number(b"6", 1, 10), Some(6));
        assert_eq!(parse_number(b"0", 0, 10), Some(0));
        assert_eq!(parse_number(b"0", 1, 10), None);
        assert_eq!(parse_number(b"11", 1, 10), None);
        // A sign only where the range has negative numbers.
        assert_eq!(parse_number(b"-1", -5, 10), Some(-1));
        assert_eq!(parse_number(b"-1", 0, 10), None);
        assert_eq!(parse_number(b"-", -5, 10), None);
        assert_eq!(parse_number(b"", 0, 10), None);
        assert_eq!(parse_number(b"5s", 0, 10), None);
        assert_eq!(parse_number(b"99999999999999999999999", 0, 10), None);
    }
}
