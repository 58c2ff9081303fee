//! Parsing the core's response header with nginx's own HTTP parsers: the status line, then the
//! header lines, each handed to the upstream module's known-header handlers so that
//! Content-Length, Location, Content-Type and the like mean what they mean for proxy_pass.
//! The body then streams through nginx's upstream machinery until Content-Length or EOF.
//!
//! HTTP/1.1 Upgrade (WebSockets): the client's `Upgrade` and `Connection` headers reach the core
//! as `HTTP_UPGRADE` and `HTTP_CONNECTION`. When the core answers `101 Switching Protocols` to a
//! request that asked to upgrade, `u->upgrade` makes nginx send the 101 (with the core's
//! `Upgrade` header; nginx writes `Connection: upgrade` itself) and then relay raw bytes both
//! ways between the client and the core's connection until either side closes, as proxy_pass
//! does. The upstream read timeout (the location's `read_timeout`, 10 minutes by default: what
//! `passenger_read_timeout` sets) still applies to the tunnel: it ends one on which the core
//! sends nothing for that long, as `proxy_read_timeout` does for proxied WebSockets. A 101 to a
//! request that did not ask for it is refused as an invalid response (502), never left to hang
//! as a body without end.

use std::ffi::{CStr, CString};
use std::ptr;
use std::sync::OnceLock;

use nginx_sys::{NGINX_VERSION, ngx_hash_key, ngx_http_core_loc_conf_t, ngx_http_core_module};
use nginx_sys::{
    NGX_AGAIN, NGX_ERROR, NGX_HTTP_HEAD, NGX_HTTP_NO_CONTENT, NGX_HTTP_NOT_MODIFIED,
    NGX_HTTP_PARSE_HEADER_DONE, NGX_HTTP_SWITCHING_PROTOCOLS, NGX_HTTP_UPSTREAM_INVALID_HEADER,
    NGX_HTTP_VERSION_11, NGX_LOG_ERR, NGX_LOG_WARN, NGX_OK, ngx_buf_t, ngx_chain_get_free_buf,
    ngx_event_pipe_t, ngx_hash_find, ngx_http_parse_header_line, ngx_http_parse_status_line,
    ngx_http_request_t, ngx_http_upstream_header_t, ngx_http_upstream_main_conf_t,
    ngx_http_upstream_module, ngx_http_upstream_non_buffered_filter, ngx_http_upstream_t,
    ngx_int_t, ngx_list_push, ngx_pnalloc, ngx_strlow, ngx_table_elt_t, ngx_uint_t, off_t,
};

use crate::config::MainConf;
use crate::handler::{RequestCtx, module};
use crate::util::{
    guard, log_debug, log_error, rc, request_ctx, request_loc_conf, request_log, request_main_conf,
    static_cstr,
};

/// `u->reinit_request`: the response is read again from scratch.
pub unsafe extern "C" fn reinit_request(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(rc(NGX_ERROR), || unsafe {
        let ctx: *mut RequestCtx = request_ctx(r, module());
        if !ctx.is_null() {
            (*ctx).status = std::mem::zeroed();
        }
        (*(*r).upstream).process_header = Some(process_status_line);
        (*r).state = 0;
        rc(NGX_OK)
    })
}

/// `u->process_header`, first stage: the status line (the core always sends one).
pub unsafe extern "C" fn process_status_line(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(rc(NGX_ERROR), || unsafe { status_line(r) })
}

unsafe fn status_line(r: *mut ngx_http_request_t) -> ngx_int_t {
    unsafe {
        let ctx: *mut RequestCtx = request_ctx(r, module());
        if ctx.is_null() {
            return rc(NGX_ERROR);
        }
        let u = (*r).upstream;
        let status = &mut (*ctx).status;
        let res = ngx_http_parse_status_line(r, &mut (*u).buffer, status);
        if res == rc(NGX_AGAIN) {
            return res;
        }
        if res == rc(NGX_ERROR) {
            log_error(
                NGX_LOG_ERR,
                request_log(r),
                0,
                "passenger: the core sent a response without a valid HTTP status line",
            );
            return rc(NGX_HTTP_UPSTREAM_INVALID_HEADER);
        }

        if !(*u).state.is_null() && (*(*u).state).status == 0 {
            (*(*u).state).status = status.code;
        }
        (*u).headers_in.status_n = status.code;
        let len = status.end.offset_from(status.start).max(0) as usize;
        let data = ngx_pnalloc((*r).pool, len) as *mut u8;
        if data.is_null() {
            return rc(NGX_ERROR);
        }
        ptr::copy_nonoverlapping(status.start, data, len);
        (*u).headers_in.status_line.len = len;
        (*u).headers_in.status_line.data = data;
        log_debug(request_log(r), || {
            format!("passenger: status {}", status.code)
        });

        (*u).process_header = Some(process_header);
        headers(r)
    }
}

/// `u->process_header`, second stage: header lines until the empty line.
pub unsafe extern "C" fn process_header(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(rc(NGX_ERROR), || unsafe { headers(r) })
}

unsafe fn headers(r: *mut ngx_http_request_t) -> ngx_int_t {
    unsafe {
        let u = (*r).upstream;
        let umcf: *mut ngx_http_upstream_main_conf_t =
            request_main_conf(r, &raw const ngx_http_upstream_module);
        loop {
            let res = ngx_http_parse_header_line(r, &mut (*u).buffer, 1);
            if res == rc(NGX_OK) {
                let h = ngx_list_push(&mut (*u).headers_in.headers) as *mut ngx_table_elt_t;
                if h.is_null() {
                    return rc(NGX_ERROR);
                }
                let status = store_header(r, h);
                if status != rc(NGX_OK) {
                    return status;
                }
                let hh = ngx_hash_find(
                    &mut (*umcf).headers_in_hash,
                    (*h).hash,
                    (*h).lowcase_key,
                    (*h).key.len,
                ) as *mut ngx_http_upstream_header_t;
                if let Some(handler) = hh.as_ref().and_then(|hh| hh.handler) {
                    let status = handler(r, h, (*hh).offset);
                    if status != rc(NGX_OK) {
                        return status;
                    }
                }
                continue;
            }
            if res == rc(NGX_HTTP_PARSE_HEADER_DONE) {
                return header_done(r);
            }
            if res == rc(NGX_AGAIN) {
                return res;
            }
            // NGX_HTTP_PARSE_INVALID_HEADER
            let start = (*r).header_name_start;
            let end = (*r).header_end;
            let shown = if !start.is_null() && !end.is_null() && end >= start {
                String::from_utf8_lossy(std::slice::from_raw_parts(
                    start,
                    (end.offset_from(start) as usize).min(200),
                ))
                .into_owned()
            } else {
                String::new()
            };
            log_error(
                NGX_LOG_ERR,
                request_log(r),
                0,
                &format!(
                    "passenger: the core sent an invalid header line: \"{}\"",
                    shown.escape_debug()
                ),
            );
            return rc(NGX_HTTP_UPSTREAM_INVALID_HEADER);
        }
    }
}

/// The whole header is in: a 101 becomes an upgraded tunnel if the client asked for one.
unsafe fn header_done(r: *mut ngx_http_request_t) -> ngx_int_t {
    unsafe {
        let u = (*r).upstream;
        if (*u).headers_in.status_n != NGX_HTTP_SWITCHING_PROTOCOLS as ngx_uint_t {
            return add_server_header(r);
        }
        // The core's connection serves this request only, and never another after a 101.
        (*u).set_keepalive(0);
        if client_can_upgrade(r) {
            log_debug(request_log(r), || {
                "passenger: 101 Switching Protocols, the connection becomes a tunnel".to_string()
            });
            (*u).set_upgrade(1);
            return rc(NGX_OK);
        }
        log_error(
            NGX_LOG_ERR,
            request_log(r),
            0,
            "passenger: the app answered 101 Switching Protocols to a request that did not ask \
             to upgrade (no Upgrade header from an HTTP/1.1 client); answering 502 instead; the \
             app must only switch protocols when the client asks it to",
        );
        rc(NGX_HTTP_UPSTREAM_INVALID_HEADER)
    }
}

/// `ngx_hash_key("server")`, computed once.
static SERVER_HASH: OnceLock<ngx_uint_t> = OnceLock::new();

/// `nginx/<version> + passenger-rs <version>`, made once rather than for every response.
fn server_header_value() -> &'static CStr {
    static VALUE: OnceLock<CString> = OnceLock::new();
    VALUE.get_or_init(|| {
        let text = format!(
            "nginx/{} + passenger-rs {}",
            NGINX_VERSION.to_string_lossy(),
            passenger_protocol::VERSION
        );
        CString::new(text).unwrap_or_default()
    })
}

/// With `passenger_show_version_in_header on` (the default) and nginx's `server_tokens on`, a
/// response whose app sent no `Server` header gets `Server: nginx/<version> + passenger-rs
/// <version>`, as Passenger's own module does; otherwise nginx writes its usual one.
unsafe fn add_server_header(r: *mut ngx_http_request_t) -> ngx_int_t {
    unsafe {
        let u = (*r).upstream;
        let mcf: *const MainConf = request_main_conf(r, module());
        let clcf: *const ngx_http_core_loc_conf_t =
            request_loc_conf(r, &raw const ngx_http_core_module);
        if mcf.is_null()
            || (*mcf).show_version_in_header != 1
            || clcf.is_null()
            || (*clcf).server_tokens != 1
            || !(*u).headers_in.server.is_null()
        {
            return rc(NGX_OK);
        }
        let h = ngx_list_push(&mut (*u).headers_in.headers) as *mut ngx_table_elt_t;
        if h.is_null() {
            return rc(NGX_ERROR);
        }
        // Static strings, as nginx's own header filter sets them: nothing writes to them. They
        // end in a NUL that their lengths leave out, as the header strings nginx parses do.
        (*h).key = static_cstr(c"Server");
        (*h).value = static_cstr(server_header_value());
        (*h).lowcase_key = c"server".as_ptr() as *mut u8;
        (*h).hash = *SERVER_HASH.get_or_init(|| ngx_hash_key(c"server".as_ptr() as *mut u8, 6));
        #[cfg(nginx1_23_0)]
        {
            (*h).next = ptr::null_mut();
        }
        rc(NGX_OK)
    }
}

/// Whether the client asked to upgrade its connection in a way nginx can honour: an `Upgrade`
/// header in an HTTP/1.1 request (HTTP/1.0 must ignore it, RFC 9110 section 7.8; in HTTP/2 and
/// HTTP/3 it is not allowed), on the main request (a subrequest cannot take over the
/// connection). The module sends `Upgrade` to the core only then.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn client_can_upgrade(r: *const ngx_http_request_t) -> bool {
    unsafe {
        !(*r).headers_in.upgrade.is_null()
            && (*r).http_version == NGX_HTTP_VERSION_11 as ngx_uint_t
            && ptr::eq((*r).main, r)
    }
}

/// Fills the pushed table element `h` from the parser's state: key, value and lower-case key
/// in one allocation, NUL-terminated like nginx's own.
unsafe fn store_header(r: *mut ngx_http_request_t, h: *mut ngx_table_elt_t) -> ngx_int_t {
    unsafe {
        let key_len = (*r).header_name_end.offset_from((*r).header_name_start) as usize;
        let value_len = (*r).header_end.offset_from((*r).header_start) as usize;
        (*h).hash = (*r).header_hash;
        (*h).key.len = key_len;
        (*h).value.len = value_len;
        let data = ngx_pnalloc((*r).pool, key_len + 1 + value_len + 1 + key_len) as *mut u8;
        if data.is_null() {
            (*h).hash = 0;
            return rc(NGX_ERROR);
        }
        (*h).key.data = data;
        (*h).value.data = data.add(key_len + 1);
        (*h).lowcase_key = data.add(key_len + 1 + value_len + 1);
        ptr::copy_nonoverlapping((*r).header_name_start, (*h).key.data, key_len);
        *(*h).key.data.add(key_len) = 0;
        ptr::copy_nonoverlapping((*r).header_start, (*h).value.data, value_len);
        *(*h).value.data.add(value_len) = 0;
        if key_len == (*r).lowcase_index {
            ptr::copy_nonoverlapping((*r).lowcase_header.as_ptr(), (*h).lowcase_key, key_len);
        } else {
            ngx_strlow((*h).lowcase_key, (*h).key.data, key_len);
        }
        #[cfg(nginx1_23_0)]
        {
            (*h).next = ptr::null_mut();
        }
        log_debug(request_log(r), || {
            format!(
                "passenger: header \"{}: {}\"",
                String::from_utf8_lossy(std::slice::from_raw_parts((*h).key.data, key_len)),
                String::from_utf8_lossy(std::slice::from_raw_parts((*h).value.data, value_len))
            )
        });
        rc(NGX_OK)
    }
}

/// `u->input_filter_init`: how much body to expect (-1: until the core closes). The core
/// sends `Connection: close` on every response after which it closes; any other response
/// has a Content-Length, and its connection can serve another request once that much came
/// (see [`crate::keepalive`]).
pub unsafe extern "C" fn input_filter_init(data: *mut std::ffi::c_void) -> ngx_int_t {
    guard(rc(NGX_ERROR), || unsafe {
        let r = data as *mut ngx_http_request_t;
        let u = (*r).upstream;
        let status = (*u).headers_in.status_n;
        let length = if status == NGX_HTTP_NO_CONTENT as ngx_uint_t
            || status == NGX_HTTP_NOT_MODIFIED as ngx_uint_t
        {
            0
        } else if (*r).method == NGX_HTTP_HEAD as ngx_uint_t {
            -1
        } else {
            (*u).headers_in.content_length_n
        };
        (*(*u).pipe).length = length;
        (*u).length = length;
        if length == 0 {
            // No body: the filters below will not run to say so.
            body_complete(u);
        }
        if (*u).buffering() == 0 && !widen_stream_buffer(r, length) {
            return rc(NGX_ERROR);
        }
        rc(NGX_OK)
    })
}

/// The whole body came: the connection can be kept unless the core said it closes it.
unsafe fn body_complete(u: *mut ngx_http_upstream_t) {
    unsafe { (*u).set_keepalive(((*u).headers_in.connection_close() == 0) as _) };
}

const MORE_THAN_CONTENT_LENGTH: &str =
    "passenger: the core sent more data than its Content-Length header said";

/// `u->input_filter` of a streamed (unbuffered) response: nginx's own, plus noting the end of
/// a body of known length.
pub unsafe extern "C" fn stream_input_filter(
    data: *mut std::ffi::c_void,
    bytes: isize,
) -> ngx_int_t {
    guard(rc(NGX_ERROR), || unsafe {
        let r = data as *mut ngx_http_request_t;
        let u = (*r).upstream;
        let expected = (*u).length;
        if expected == 0 {
            (*u).set_keepalive(0);
        }
        let status = ngx_http_upstream_non_buffered_filter(data, bytes);
        if expected > 0 && (*u).length == 0 {
            if bytes as i64 > expected {
                log_error(NGX_LOG_WARN, request_log(r), 0, MORE_THAN_CONTENT_LENGTH);
            } else {
                body_complete(u);
            }
        }
        status
    })
}

/// `p->input_filter` of a buffered response: passes each buffer on as nginx's copy filter
/// does, counting a body of known length down to its end (as `proxy_pass` does).
pub unsafe extern "C" fn pipe_input_filter(
    p: *mut ngx_event_pipe_t,
    buf: *mut ngx_buf_t,
) -> ngx_int_t {
    guard(rc(NGX_ERROR), || unsafe {
        if (*buf).pos == (*buf).last || (*p).upstream_done() != 0 {
            return rc(NGX_OK);
        }
        let r = (*p).input_ctx as *mut ngx_http_request_t;
        let u = (*r).upstream;
        if (*p).length == 0 {
            log_error(NGX_LOG_WARN, (*p).log, 0, MORE_THAN_CONTENT_LENGTH);
            (*u).set_keepalive(0);
            (*p).set_upstream_done(1);
            return rc(NGX_OK);
        }
        let cl = ngx_chain_get_free_buf((*p).pool, &mut (*p).free);
        if cl.is_null() {
            return rc(NGX_ERROR);
        }
        // A shadow of the pipe's raw buffer, marked so the pipe recycles it once sent.
        let b = (*cl).buf;
        ptr::copy_nonoverlapping(buf, b, 1);
        (*b).shadow = buf;
        (*b).tag = (*p).tag;
        (*b).set_last_shadow(1);
        (*b).set_recycled(1);
        (*buf).shadow = b;
        if (*p).in_.is_null() {
            (*p).in_ = cl;
        } else {
            *(*p).last_in = cl;
        }
        (*p).last_in = &mut (*cl).next;

        if (*p).length == -1 {
            return rc(NGX_OK);
        }
        let size = (*b).last.offset_from((*b).pos) as i64;
        if size > (*p).length {
            log_error(NGX_LOG_WARN, (*p).log, 0, MORE_THAN_CONTENT_LENGTH);
            (*b).last = (*b).pos.add((*p).length as usize);
            (*p).set_upstream_done(1);
            return rc(NGX_OK);
        }
        (*p).length -= size;
        if (*p).length == 0 {
            body_complete(u);
        }
        rc(NGX_OK)
    })
}

/// How much of a streamed (unbuffered) response body moves per system call. nginx streams
/// through the buffer the header was read into (`passenger_buffer_size`, one page by default),
/// so a 100 KB page took some 25 reads and as many writes to the client; the core already
/// holds the response for slow clients, so this buffer only sets how much moves per call.
/// A body of known length gets room for all of it, up to [`STREAM_BUFFER_MAX`] (a 100 KB
/// page: one read and one write after those of the header's buffer); a body of unknown
/// length, which may be a long-lived stream (server-sent events), [`STREAM_BUFFER_UNKNOWN`].
const STREAM_BUFFER_MAX: usize = 128 * 1024;
const STREAM_BUFFER_UNKNOWN: usize = 32 * 1024;

/// The buffer size a streamed body of `length` bytes (-1: unknown) wants, of which `unread`
/// came with the header; 0 when the header's buffer, of `capacity` bytes, will do (and it
/// holds the `unread` bytes, so any larger one does too).
fn stream_buffer_size(length: off_t, unread: usize, capacity: usize) -> usize {
    let want = match usize::try_from(length) {
        Ok(length) => length.saturating_sub(unread).min(STREAM_BUFFER_MAX),
        Err(_) => STREAM_BUFFER_UNKNOWN,
    };
    if capacity >= want { 0 } else { want }
}

/// Before nginx streams the body: gives `u->buffer` the size [`stream_buffer_size`] asks
/// for, keeping the body bytes that came with the header. `false` when out of memory.
unsafe fn widen_stream_buffer(r: *mut ngx_http_request_t, length: off_t) -> bool {
    unsafe {
        let b = &mut (*(*r).upstream).buffer;
        if b.start.is_null() {
            return true;
        }
        let unread = b.last.offset_from(b.pos).max(0) as usize;
        let size = stream_buffer_size(length, unread, b.end.offset_from(b.start) as usize);
        if size == 0 {
            return true;
        }
        // Never less than the bytes copied in below (stream_buffer_size's rule already makes
        // it so: they fit in the old buffer, which was too small).
        let size = size.max(unread);
        let start = nginx_sys::ngx_palloc((*r).pool, size) as *mut u8;
        if start.is_null() {
            return false;
        }
        // The old buffer stays in the request pool: header values point into it.
        ptr::copy_nonoverlapping(b.pos, start, unread);
        b.start = start;
        b.pos = start;
        b.last = start.add(unread);
        b.end = start.add(size);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{STREAM_BUFFER_MAX, STREAM_BUFFER_UNKNOWN, stream_buffer_size};

    #[test]
    fn a_body_that_came_with_the_header_or_fits_its_buffer_needs_no_other() {
        assert_eq!(stream_buffer_size(12, 12, 4096), 0);
        assert_eq!(stream_buffer_size(0, 0, 4096), 0);
        assert_eq!(stream_buffer_size(4000, 100, 4096), 0);
    }

    #[test]
    fn a_larger_body_of_known_length_gets_room_for_the_rest_of_it_up_to_the_cap() {
        assert_eq!(stream_buffer_size(102_400, 3_900, 4096), 102_400 - 3_900);
        assert_eq!(stream_buffer_size(10 << 20, 3_900, 4096), STREAM_BUFFER_MAX);
    }

    #[test]
    fn a_body_of_unknown_length_gets_the_modest_size() {
        assert_eq!(stream_buffer_size(-1, 0, 4096), STREAM_BUFFER_UNKNOWN);
        assert_eq!(stream_buffer_size(-1, 0, 64 * 1024), 0);
    }
}
