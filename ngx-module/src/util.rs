//! Small helpers around the raw nginx API: panic containment at the FFI boundary, logging,
//! strings, pool allocation and per-module configuration look-ups.

use std::ffi::{CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use nginx_sys::{
    NGX_LOG_DEBUG_HTTP, ngx_conf_log_error, ngx_conf_t, ngx_err_t, ngx_http_conf_ctx_t,
    ngx_http_request_t, ngx_int_t, ngx_log_error_core, ngx_log_t, ngx_module_t, ngx_pcalloc,
    ngx_pnalloc, ngx_pool_t, ngx_str_t, ngx_uint_t,
};

/// `NGX_CONF_ERROR` as returned by directive and merge callbacks.
pub const CONF_ERROR: *mut c_char = usize::MAX as *mut c_char;
/// `NGX_CONF_OK`.
pub const CONF_OK: *mut c_char = ptr::null_mut();

/// Runs `f`, turning a panic into `on_panic`: no unwinding may cross into nginx's C frames.
pub fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// An `ngx_str_t` over static bytes, for statics (`ngx_string()`).
pub const fn static_str(s: &'static [u8]) -> ngx_str_t {
    ngx_str_t {
        len: s.len(),
        data: s.as_ptr() as *mut u8,
    }
}

/// An `ngx_str_t` over a NUL-terminated static string, the NUL not counted: for names nginx
/// compares with `strcmp` (directive names).
pub const fn static_cstr(s: &'static std::ffi::CStr) -> ngx_str_t {
    ngx_str_t {
        len: s.count_bytes(),
        data: s.as_ptr() as *mut u8,
    }
}

/// The bytes of an `ngx_str_t` (empty when unset).
///
/// # Safety
/// `s.data` must point at `s.len` readable bytes that outlive the returned slice.
pub unsafe fn bytes<'a>(s: &ngx_str_t) -> &'a [u8] {
    if s.len == 0 || s.data.is_null() {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(s.data, s.len) }
    }
}

/// Copies `data` into `pool`; `None` when the pool is out of memory.
///
/// # Safety
/// `pool` must be a valid pool.
pub unsafe fn pool_str(pool: *mut ngx_pool_t, data: &[u8]) -> Option<ngx_str_t> {
    if data.is_empty() {
        return Some(ngx_str_t {
            len: 0,
            data: ptr::null_mut(),
        });
    }
    let p = unsafe { ngx_pnalloc(pool, data.len()) } as *mut u8;
    if p.is_null() {
        return None;
    }
    unsafe { ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
    Some(ngx_str_t {
        len: data.len(),
        data: p,
    })
}

/// Allocates a zeroed `T` in `pool`.
///
/// # Safety
/// `pool` must be a valid pool, and all-zero bytes must be a valid `T`.
pub unsafe fn pool_zeroed<T>(pool: *mut ngx_pool_t) -> *mut T {
    unsafe { ngx_pcalloc(pool, std::mem::size_of::<T>()) as *mut T }
}

fn c_message(msg: &str) -> CString {
    // Interior NULs would cut the message short; show them instead.
    CString::new(msg.replace('\0', "\\0")).unwrap_or_default()
}

/// `ngx_log_error(level, log, err, "%s", msg)`.
///
/// # Safety
/// `log` must be null or a valid log.
pub unsafe fn log_error(level: u32, log: *mut ngx_log_t, err: ngx_err_t, msg: &str) {
    if log.is_null() || unsafe { (*log).log_level } < level as ngx_uint_t {
        return;
    }
    let msg = c_message(msg);
    unsafe { ngx_log_error_core(level as ngx_uint_t, log, err, c"%s".as_ptr(), msg.as_ptr()) };
}

/// `ngx_log_debug(NGX_LOG_DEBUG_HTTP, log, 0, "%s", msg)`; `msg` is only built when debug
/// logging is on.
///
/// # Safety
/// `log` must be null or a valid log.
pub unsafe fn log_debug(log: *mut ngx_log_t, msg: impl FnOnce() -> String) {
    if log.is_null() || unsafe { (*log).log_level } & NGX_LOG_DEBUG_HTTP as ngx_uint_t == 0 {
        return;
    }
    let msg = c_message(&msg());
    unsafe {
        ngx_log_error_core(
            nginx_sys::NGX_LOG_DEBUG as ngx_uint_t,
            log,
            0,
            c"%s".as_ptr(),
            msg.as_ptr(),
        )
    };
}

/// `ngx_conf_log_error(level, cf, 0, "%s", msg)`: the message gets the config file and line.
///
/// # Safety
/// `cf` must be a valid configuration being parsed.
pub unsafe fn conf_log(level: u32, cf: *mut ngx_conf_t, msg: &str) {
    let msg = c_message(msg);
    unsafe { ngx_conf_log_error(level as ngx_uint_t, cf, 0, c"%s".as_ptr(), msg.as_ptr()) };
}

/// The request's log.
///
/// # Safety
/// `r` must be a valid request.
pub unsafe fn request_log(r: *mut ngx_http_request_t) -> *mut ngx_log_t {
    unsafe { (*(*r).connection).log }
}

/// `ngx_http_get_module_loc_conf(r, module)`.
///
/// # Safety
/// `r` must be a valid request and `T` the module's location conf type.
pub unsafe fn request_loc_conf<T>(
    r: *mut ngx_http_request_t,
    module: *const ngx_module_t,
) -> *mut T {
    unsafe { *(*r).loc_conf.add((*module).ctx_index) as *mut T }
}

/// `ngx_http_get_module_main_conf(r, module)`.
///
/// # Safety
/// `r` must be a valid request and `T` the module's main conf type.
pub unsafe fn request_main_conf<T>(
    r: *mut ngx_http_request_t,
    module: *const ngx_module_t,
) -> *mut T {
    unsafe { *(*r).main_conf.add((*module).ctx_index) as *mut T }
}

/// `ngx_http_get_module_srv_conf(r, module)`.
///
/// # Safety
/// `r` must be a valid request and `T` the module's server conf type.
pub unsafe fn request_srv_conf<T>(
    r: *mut ngx_http_request_t,
    module: *const ngx_module_t,
) -> *mut T {
    unsafe { *(*r).srv_conf.add((*module).ctx_index) as *mut T }
}

/// `ngx_http_get_module_ctx(r, module)`.
///
/// # Safety
/// `r` must be a valid request and `T` the type the module stored.
pub unsafe fn request_ctx<T>(r: *mut ngx_http_request_t, module: *const ngx_module_t) -> *mut T {
    unsafe { *(*r).ctx.add((*module).ctx_index) as *mut T }
}

/// `ngx_http_set_ctx(r, ctx, module)`.
///
/// # Safety
/// `r` must be a valid request.
pub unsafe fn set_request_ctx<T>(
    r: *mut ngx_http_request_t,
    module: *const ngx_module_t,
    ctx: *mut T,
) {
    unsafe { *(*r).ctx.add((*module).ctx_index) = ctx as *mut c_void };
}

/// `ngx_http_conf_get_module_loc_conf(cf, module)`: the location conf of the block being parsed
/// or merged.
///
/// # Safety
/// `cf` must be a valid configuration inside the http block.
pub unsafe fn conf_loc_conf<T>(cf: *mut ngx_conf_t, module: *const ngx_module_t) -> *mut T {
    unsafe {
        let ctx = (*cf).ctx as *mut ngx_http_conf_ctx_t;
        *(*ctx).loc_conf.add((*module).ctx_index) as *mut T
    }
}

/// This module's (or `module`'s) main conf while the configuration is parsed.
///
/// # Safety
/// `cf` must be a valid configuration inside the http block.
pub unsafe fn conf_main_conf<T>(cf: *mut ngx_conf_t, module: *const ngx_module_t) -> *mut T {
    unsafe {
        let ctx = (*cf).ctx as *mut ngx_http_conf_ctx_t;
        *(*ctx).main_conf.add((*module).ctx_index) as *mut T
    }
}

/// The status codes nginx uses as `ngx_int_t`.
pub fn rc(code: impl TryInto<ngx_int_t>) -> ngx_int_t {
    code.try_into().unwrap_or(nginx_sys::NGX_ERROR as ngx_int_t)
}
