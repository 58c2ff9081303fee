//! The request headers the app sees: the client's, minus `X-Forwarded-*`/`Forwarded` unless
//! nginx's realip module vouched for the peer, plus `passenger_set_header` (which replaces a
//! client header of the same name; an empty value removes it).

use std::ffi::{c_char, c_void};
use std::sync::OnceLock;

use nginx_sys::{
    NGX_LOG_EMERG, NGX_OK, ngx_array_create, ngx_array_push, ngx_array_t, ngx_command_t,
    ngx_conf_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value, ngx_http_complex_value_t, ngx_http_request_t, ngx_int_t,
    ngx_list_part_t, ngx_str_t, ngx_table_elt_t,
};

use crate::config::LocConf;
use crate::util::{CONF_ERROR, CONF_OK, bytes, conf_log, guard};

/// One `passenger_set_header NAME VALUE`; the value may contain nginx variables.
#[repr(C)]
pub struct SetHeader {
    pub name: ngx_str_t,
    pub value: ngx_http_complex_value_t,
}

/// `passenger_set_header NAME VALUE` (repeatable; a block with its own list replaces the
/// inherited one, as proxy_set_header does).
pub unsafe extern "C" fn set_header(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    guard(CONF_ERROR, || unsafe {
        let args = (*(*cf).args).elts as *mut ngx_str_t;
        let name = *args.add(1);
        let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
        if name.len == 0 || !bytes(&name).iter().all(token) {
            conf_log(
                NGX_LOG_EMERG,
                cf,
                &format!(
                    "passenger_set_header: invalid header name \"{}\"",
                    String::from_utf8_lossy(bytes(&name)).escape_debug()
                ),
            );
            return CONF_ERROR;
        }
        let field = (conf as *mut u8).add((*cmd).offset) as *mut *mut ngx_array_t;
        if *field as usize == usize::MAX || (*field).is_null() {
            *field = ngx_array_create((*cf).pool, 4, std::mem::size_of::<SetHeader>());
            if (*field).is_null() {
                return CONF_ERROR;
            }
        }
        let entry = ngx_array_push(*field) as *mut SetHeader;
        if entry.is_null() {
            return CONF_ERROR;
        }
        std::ptr::write_bytes(entry, 0, 1);
        (*entry).name = name;
        let mut ccv: ngx_http_compile_complex_value_t = std::mem::zeroed();
        ccv.cf = cf;
        ccv.value = args.add(2);
        ccv.complex_value = &mut (*entry).value;
        if ngx_http_compile_complex_value(&mut ccv) != NGX_OK as ngx_int_t {
            return CONF_ERROR;
        }
        CONF_OK
    })
}

/// Headers a client could use to pretend it is someone else, or came over TLS.
fn is_forwarding_header(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"forwarded")
        || (name.len() > 12 && name[..12].eq_ignore_ascii_case(b"x-forwarded-"))
}

/// The headers to send, in arrival order, then the location's set headers.
///
/// # Safety
/// `r` must be a live request whose location configuration is `lcf`.
pub unsafe fn request_headers<'a>(
    r: *mut ngx_http_request_t,
    lcf: &LocConf,
) -> Vec<(&'a [u8], &'a [u8])> {
    unsafe {
        let trusted = realip_trusted(r);
        let mut headers = Vec::new();
        let mut part: *const ngx_list_part_t = &(*r).headers_in.headers.part;
        while !part.is_null() {
            let elts = (*part).elts as *const ngx_table_elt_t;
            for i in 0..(*part).nelts {
                let h = &*elts.add(i);
                let name = bytes(&h.key);
                if trusted || !is_forwarding_header(name) {
                    headers.push((name, bytes(&h.value)));
                }
            }
            part = (*part).next;
        }
        for set in set_headers(lcf) {
            let name = bytes(&set.name);
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            let mut value = ngx_str_t {
                len: 0,
                data: std::ptr::null_mut(),
            };
            let cv = &set.value as *const _ as *mut ngx_http_complex_value_t;
            if ngx_http_complex_value(r, cv, &mut value) == NGX_OK as ngx_int_t && value.len > 0 {
                headers.push((name, bytes(&value)));
            }
        }
        headers
    }
}

unsafe fn set_headers<'a>(lcf: &LocConf) -> &'a [SetHeader] {
    let a = lcf.set_headers;
    if a.is_null() || a as usize == usize::MAX {
        return &[];
    }
    // SAFETY: an array of SetHeader made by `set_header` in the configuration pool.
    unsafe {
        if (*a).nelts == 0 {
            return &[];
        }
        std::slice::from_raw_parts((*a).elts as *const SetHeader, (*a).nelts)
    }
}

/// Whether nginx's realip module replaced this request's client address, i.e. the peer is a
/// proxy listed in `set_real_ip_from`: then its forwarding headers are believed too. The realip
/// module may not be built in, so it is looked up by name (once per process).
unsafe fn realip_trusted(r: *mut ngx_http_request_t) -> bool {
    static REALIP_CTX_INDEX: OnceLock<Option<usize>> = OnceLock::new();
    let index = *REALIP_CTX_INDEX.get_or_init(|| unsafe {
        let cycle = nginx_sys::ngx_cycle;
        if cycle.is_null() || (*cycle).modules.is_null() {
            return None;
        }
        (0..(*cycle).modules_n)
            .map(|i| *(*cycle).modules.add(i))
            .filter(|m| !m.is_null() && !(**m).name.is_null())
            .find(|m| std::ffi::CStr::from_ptr((**m).name) == c"ngx_http_realip_module")
            .map(|m| (*m).ctx_index)
    });
    match index {
        Some(i) => unsafe { !(*(*r).ctx.add(i)).is_null() },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_forwarding_header;

    #[test]
    fn forwarding_headers_are_recognised() {
        for name in [
            "X-Forwarded-For",
            "x-forwarded-proto",
            "Forwarded",
            "X-FORWARDED-HOST",
        ] {
            assert!(is_forwarding_header(name.as_bytes()), "{name}");
        }
        for name in ["X-Forwarded", "X-Real-IP", "Host", "Forwarded-X"] {
            assert!(!is_forwarding_header(name.as_bytes()), "{name}");
        }
    }
}
