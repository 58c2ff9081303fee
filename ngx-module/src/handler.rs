//! The content handler: decides whether a request goes to an app (static files and locations
//! without an app are left to nginx), then hands it to nginx's upstream machinery, which
//! connects to the core's unix socket, sends the SCGI request built in [`crate::scgi_request`]
//! and streams back the response parsed in [`crate::response`].

use std::borrow::Cow;
use std::ffi::{OsStr, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;

use nginx_sys::{
    NGX_DECLINED, NGX_DONE, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_SERVICE_UNAVAILABLE, NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_ERR, NGX_OK, ngx_event_pipe_t,
    ngx_http_read_client_request_body, ngx_http_request_t, ngx_http_status_t,
    ngx_http_upstream_create, ngx_http_upstream_init, ngx_int_t, ngx_str_t, ngx_uint_t,
};
use passenger_protocol::options::AppType;

use crate::config::{LocConf, MainConf};
use crate::util::{
    bytes, guard, log_debug, log_error, pool_str, pool_zeroed, rc, request_loc_conf, request_log,
    request_main_conf, set_request_ctx, static_str,
};

/// Per-request state, allocated in the request pool (plain data: nothing to drop).
#[repr(C)]
pub struct RequestCtx {
    /// The status line parser's state.
    pub status: ngx_http_status_t,
    pub app_type: AppType,
    pub app_root: ngx_str_t,
    pub startup_file: ngx_str_t,
    pub document_root: ngx_str_t,
    /// Point into the configuration, which outlives every request.
    pub app_env: ngx_str_t,
    pub ruby: ngx_str_t,
    /// The `passenger_base_uri` the request is under (empty at the root).
    pub base_uri: ngx_str_t,
    /// `passenger_app_group_name` (null data when unset).
    pub group_name: ngx_str_t,
}

pub fn module() -> *const nginx_sys::ngx_module_t {
    &raw const crate::ngx_http_passenger_module
}

/// `clcf->handler` of locations with `passenger_enabled on`.
pub unsafe extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(rc(NGX_HTTP_INTERNAL_SERVER_ERROR), || unsafe { handle(r) })
}

/// What serves a request.
enum Route<'a> {
    /// nginx itself (a static file, or no app here).
    Decline,
    /// nginx, after an internal redirect to this URI (a page-cached `<uri>.html`).
    Redirect(Vec<u8>),
    App(AppRoute<'a>),
}

/// Where a request's app is. Borrowed from the request and the configuration where it can be:
/// this is worked out for every request, and copied into the request's pool after.
struct AppRoute<'a> {
    app_type: AppType,
    app_root: Cow<'a, Path>,
    startup_file: PathBuf,
    document_root: Cow<'a, [u8]>,
    base_uri: &'a [u8],
}

unsafe fn handle(r: *mut ngx_http_request_t) -> ngx_int_t {
    let log = unsafe { request_log(r) };
    let lcf: &mut LocConf = unsafe { &mut *request_loc_conf(r, module()) };
    let mcf: &MainConf = unsafe { &*request_main_conf(r, module()) };
    if !lcf.enabled() {
        return rc(NGX_DECLINED);
    }

    let route = match unsafe { route(r, lcf, mcf) } {
        Ok(route) => route,
        Err(status) => return status,
    };
    let app = match route {
        Route::Decline => return rc(NGX_DECLINED),
        Route::Redirect(uri) => return unsafe { internal_redirect(r, &uri) },
        Route::App(app) => app,
    };

    if crate::agents::core().is_none() {
        unsafe {
            log_error(
                NGX_LOG_ERR,
                log,
                0,
                "passenger: no core agent is running (the watchdog did not report one when \
                 nginx started); check the error log from nginx's start",
            )
        };
        return rc(NGX_HTTP_SERVICE_UNAVAILABLE);
    }

    // The route borrows the configuration: its strings go into the request's pool first.
    let Some(ctx) = (unsafe { new_request_ctx(r, lcf, &app) }) else {
        return rc(NGX_HTTP_INTERNAL_SERVER_ERROR);
    };
    unsafe { start_upstream(r, lcf, ctx) }.unwrap_or(rc(NGX_HTTP_INTERNAL_SERVER_ERROR))
}

/// Static file, app, or a configuration error (as the status to answer).
unsafe fn route<'a>(
    r: *mut ngx_http_request_t,
    lcf: &'a LocConf,
    mcf: &MainConf,
) -> Result<Route<'a>, ngx_int_t> {
    let log = unsafe { request_log(r) };
    let mut path = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    let mut root_len: usize = 0;
    let last = unsafe { nginx_sys::ngx_http_map_uri_to_path(r, &mut path, &mut root_len, 0) };
    if last.is_null() {
        return Err(rc(NGX_HTTP_INTERNAL_SERVER_ERROR));
    }
    // SAFETY: ngx_http_map_uri_to_path wrote the path from path.data up to `last`.
    // (In the request's pool, which outlives the route.)
    let file: &'a [u8] =
        unsafe { std::slice::from_raw_parts(path.data, last.offset_from(path.data) as usize) };
    let mut mapped_root = &file[..root_len.min(file.len())];
    while mapped_root.len() > 1 && mapped_root.ends_with(b"/") {
        mapped_root = &mapped_root[..mapped_root.len() - 1];
    }
    let uri = unsafe { bytes(&(*r).uri) };
    let base_uri = crate::sub_uri::matching_base_uri(&lcf.base_uris(), uri);
    let aliased = unsafe { location_is_alias(r) };
    let document_root =
        crate::sub_uri::document_root(lcf.document_root(), mapped_root, base_uri, aliased);

    let method = unsafe { (*r).method };
    if method & (NGX_HTTP_GET | NGX_HTTP_HEAD) as ngx_uint_t != 0
        && let Some(route) = unsafe { static_route(r, file) }
    {
        return Ok(route);
    }

    if mcf.root().is_empty() {
        unsafe {
            log_error(
                NGX_LOG_ERR,
                log,
                0,
                "passenger: passenger_enabled is on but passenger_root is missing from the http \
                 block; set it to the passenger-rs install root",
            )
        };
        return Err(rc(NGX_HTTP_INTERNAL_SERVER_ERROR));
    }

    let app_root = if !lcf.app_root().is_empty() {
        Cow::Borrowed(Path::new(OsStr::from_bytes(lcf.app_root())))
    } else {
        // A borrowed document root lends its parent to the route. An owned one (built under a
        // base URI, which app_root_of resolves to a path of its own anyway) cannot outlive
        // this function, so its app root is made owned too.
        let found = match document_root {
            Cow::Borrowed(root) => {
                crate::sub_uri::app_root_of(Path::new(OsStr::from_bytes(root)), base_uri)
            }
            Cow::Owned(ref root) => {
                crate::sub_uri::app_root_of(Path::new(OsStr::from_bytes(root)), base_uri)
                    .map(|p| Cow::Owned(p.into_owned()))
            }
        };
        match found {
            Some(p) => p,
            None => {
                unsafe {
                    log_debug(log, || {
                        format!(
                            "passenger: document root {} has no parent",
                            lossy(&document_root)
                        )
                    })
                };
                return Ok(Route::Decline);
            }
        }
    };
    // passenger_app_start_command: an app of any language, nothing to detect; its "startup
    // file" is the app root (whose owner user switching goes by).
    let start_command = lcf.app_start_command;
    if !start_command.data.is_null() && start_command.len > 0 {
        return Ok(Route::App(AppRoute {
            app_type: AppType::Generic,
            startup_file: app_root.to_path_buf(),
            app_root,
            document_root,
            base_uri: base_uri.unwrap_or_default(),
        }));
    }
    let detected = || crate::detect::app_type(&app_root, mcf.stat_throttle_rate);
    let Some(app_type) = lcf.app_type().or_else(detected) else {
        unsafe {
            log_debug(log, || {
                format!(
                    "passenger: no config.ru, passenger_wsgi.py or app.js in {}, leaving the \
                     request to nginx",
                    app_root.display()
                )
            })
        };
        return Ok(Route::Decline);
    };
    let startup_file = if lcf.startup_file().is_empty() {
        app_root.join(app_type.default_startup_file())
    } else {
        app_root.join(OsStr::from_bytes(lcf.startup_file()))
    };
    Ok(Route::App(AppRoute {
        app_type,
        app_root,
        startup_file,
        document_root,
        base_uri: base_uri.unwrap_or_default(),
    }))
}

/// Whether the request's location maps URIs with `alias` rather than `root`.
unsafe fn location_is_alias(r: *mut ngx_http_request_t) -> bool {
    unsafe {
        let clcf: *mut nginx_sys::ngx_http_core_loc_conf_t =
            crate::util::request_loc_conf(r, &raw const nginx_sys::ngx_http_core_module);
        !clcf.is_null() && (*clcf).alias != 0
    }
}

/// Static files of a GET or HEAD request: the file itself; for a URI ending in `/`, its
/// `index.html` (served by nginx's index module); else a page-cached `<uri>.html`.
unsafe fn static_route(r: *mut ngx_http_request_t, file: &[u8]) -> Option<Route<'static>> {
    let log = unsafe { request_log(r) };
    // A path ending in `/` is never a regular file: only its index.html is looked for.
    let route = if file.ends_with(b"/") {
        if !is_file_with(file, b"index.html") {
            return None;
        }
        Route::Decline
    } else if is_file(file) {
        Route::Decline
    } else if is_file_with(file, b".html") {
        Route::Redirect([unsafe { bytes(&(*r).uri) }, b".html"].concat())
    } else {
        return None;
    };
    unsafe {
        log_debug(log, || {
            format!(
                "passenger: {} is served as a static file by nginx",
                lossy(file)
            )
        })
    };
    Some(route)
}

/// `ngx_http_internal_redirect(r, uri, &r->args)`.
unsafe fn internal_redirect(r: *mut ngx_http_request_t, uri: &[u8]) -> ngx_int_t {
    unsafe {
        let Some(mut uri) = pool_str((*r).pool, uri) else {
            return rc(NGX_HTTP_INTERNAL_SERVER_ERROR);
        };
        nginx_sys::ngx_http_internal_redirect(r, &mut uri, &mut (*r).args)
    }
}

fn is_file(path: &[u8]) -> bool {
    std::fs::metadata(OsStr::from_bytes(path)).is_ok_and(|m| m.is_file())
}

/// Whether `file` then `suffix` is a regular file; the path is put together on the stack when
/// it fits (this runs for every GET of a directory URI, `/` among them).
fn is_file_with(file: &[u8], suffix: &[u8]) -> bool {
    let mut on_stack = [0u8; 512];
    let len = file.len() + suffix.len();
    if len > on_stack.len() {
        return is_file(&[file, suffix].concat());
    }
    on_stack[..file.len()].copy_from_slice(file);
    on_stack[file.len()..len].copy_from_slice(suffix);
    is_file(&on_stack[..len])
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// The request's context, its strings copied into the request's pool; `None` when out of
/// memory.
unsafe fn new_request_ctx(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
    app: &AppRoute<'_>,
) -> Option<*mut RequestCtx> {
    unsafe {
        let pool = (*r).pool;
        let ctx: *mut RequestCtx = pool_zeroed(pool);
        if ctx.is_null() {
            return None;
        }
        ptr::write(
            ctx,
            RequestCtx {
                status: std::mem::zeroed(),
                app_type: app.app_type,
                app_root: pool_str(pool, app.app_root.as_os_str().as_bytes())?,
                startup_file: pool_str(pool, app.startup_file.as_os_str().as_bytes())?,
                document_root: pool_str(pool, &app.document_root)?,
                app_env: lcf.app_env,
                ruby: lcf.ruby,
                base_uri: pool_str(pool, app.base_uri)?,
                group_name: lcf.app_group_name,
            },
        );
        Some(ctx)
    }
}

/// Sets up `r->upstream` towards the core and starts reading the request body; `None` when
/// out of memory.
unsafe fn start_upstream(
    r: *mut ngx_http_request_t,
    lcf: &mut LocConf,
    ctx: *mut RequestCtx,
) -> Option<ngx_int_t> {
    unsafe {
        let pool = (*r).pool;
        if ngx_http_upstream_create(r) != NGX_OK as ngx_int_t {
            return None;
        }
        set_request_ctx(r, module(), ctx);
        let u = (*r).upstream;

        (*u).schema = static_str(b"passenger://");
        (*u).output.tag = module() as *mut c_void;
        (*u).conf = &mut lcf.upstream;

        // The core's address and the connection cache come in through this "upstream block"
        // (see crate::keepalive), where nginx asks for a peer.
        lcf.upstream.upstream = crate::keepalive::core_upstream();

        (*u).create_request = Some(crate::scgi_request::create_request);
        (*u).reinit_request = Some(crate::response::reinit_request);
        (*u).process_header = Some(crate::response::process_status_line);
        (*u).abort_request = Some(abort_request);
        (*u).finalize_request = Some(finalize_request);
        (*r).state = 0;

        (*u).set_buffering((lcf.upstream.buffering == 1) as _);

        let pipe: *mut ngx_event_pipe_t = pool_zeroed(pool);
        if pipe.is_null() {
            return None;
        }
        (*pipe).input_filter = Some(crate::response::pipe_input_filter);
        (*pipe).input_ctx = r.cast();
        (*u).pipe = pipe;

        (*u).input_filter_init = Some(crate::response::input_filter_init);
        (*u).input_filter = Some(crate::response::stream_input_filter);
        (*u).input_filter_ctx = r.cast();

        // passenger_request_buffering off streams the body as it arrives, as scgi_pass does; a
        // chunked body is still read whole, because the core needs its length up front.
        if lcf.upstream.request_buffering == 0 && (*r).headers_in.chunked() == 0 {
            (*r).set_request_body_no_buffering(1);
        }
        let status = ngx_http_read_client_request_body(r, Some(ngx_http_upstream_init));
        if status >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
            return Some(status);
        }
        Some(rc(NGX_DONE))
    }
}

unsafe extern "C" fn abort_request(r: *mut ngx_http_request_t) {
    guard((), || unsafe {
        log_debug(request_log(r), || "passenger: abort request".to_string())
    })
}

unsafe extern "C" fn finalize_request(r: *mut ngx_http_request_t, status: ngx_int_t) {
    guard((), || unsafe {
        log_debug(request_log(r), || {
            format!("passenger: finalize request {status}")
        })
    })
}

/// The strings of the request's app, as the SCGI request needs them.
pub struct AppInfo<'a> {
    pub app_type: AppType,
    pub app_root: &'a [u8],
    pub startup_file: &'a [u8],
    pub document_root: &'a [u8],
    pub app_env: &'a [u8],
    pub ruby: &'a [u8],
    pub base_uri: &'a [u8],
    pub group_name: Option<&'a [u8]>,
}

impl RequestCtx {
    /// # Safety
    /// The strings must still be alive (the request pool).
    pub unsafe fn app(&self) -> AppInfo<'_> {
        unsafe {
            AppInfo {
                app_type: self.app_type,
                app_root: bytes(&self.app_root),
                startup_file: bytes(&self.startup_file),
                document_root: bytes(&self.document_root),
                app_env: bytes(&self.app_env),
                ruby: bytes(&self.ruby),
                base_uri: bytes(&self.base_uri),
                group_name: (!self.group_name.data.is_null()).then(|| bytes(&self.group_name)),
            }
        }
    }
}
