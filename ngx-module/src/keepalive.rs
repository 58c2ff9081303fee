//! Connections to the core kept open between requests, the way nginx's upstream `keepalive`
//! keeps them for `proxy_pass`: once a response has ended where nginx could tell (its
//! Content-Length reached, and no `Connection: close` from the core, see
//! [`crate::response`]) and the request body went out whole, the connection goes into a
//! per-worker cache instead of being closed, and a later request takes it back. That saves a
//! socket, a connect and a close in nginx and an accept and a close in the core per request.
//!
//! The core never writes on an idle connection; when it closes one (it restarted, or the
//! connection sat idle longer than its limit) the read event shows the end and the connection
//! leaves the cache. A request that still meets a connection closed under it fails before
//! anything was answered, and nginx retries it on a fresh connection (`pc->cached`). Requests
//! nginx could not retry that way (non-idempotent methods, unbuffered request bodies) therefore
//! always open a fresh connection; they still leave it in the cache afterwards.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::ptr;

use nginx_sys::{
    NGX_DONE, NGX_ERROR, NGX_HTTP_LOCK, NGX_HTTP_PATCH, NGX_HTTP_POST, NGX_OK, NGX_PEER_FAILED,
    ngx_add_timer, ngx_close_connection, ngx_connection_t, ngx_current_msec, ngx_cycle,
    ngx_del_timer, ngx_destroy_pool, ngx_event_t, ngx_exiting, ngx_handle_read_event,
    ngx_http_request_t, ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_msec_t, ngx_peer_connection_t,
    ngx_str_t, ngx_terminate, ngx_uint_t,
};

use crate::util::{guard, log_debug, rc};

/// Idle connections one worker keeps; beyond it the longest-idle one is closed.
const MAX_IDLE: usize = 256;
/// An idle connection is closed after this long (nginx's `keepalive_timeout` default). The
/// core's own limit is longer, so it is nginx that closes first and no request meets a
/// connection closing under it.
const IDLE_TIMEOUT_MS: ngx_msec_t = 60_000;
/// Requests per connection and its lifetime, as nginx's `keepalive_requests` and
/// `keepalive_time` bound them: the connection's pool grows a little with each request.
const MAX_REQUESTS: ngx_uint_t = 1000;
const MAX_AGE_MS: ngx_msec_t = 3_600_000;

thread_local! {
    /// This worker's idle connections to the core, the most recently used last.
    static IDLE: RefCell<VecDeque<*mut ngx_connection_t>> = const { RefCell::new(VecDeque::new()) };
    /// The upstream "server block" requests to the core go through: only its `peer.init`
    /// matters. Allocated once per worker and never freed.
    static CORE_UPSTREAM: *mut ngx_http_upstream_srv_conf_t = new_core_upstream();
    static CORE_NAME: *mut ngx_str_t = new_core_name();
}

fn new_core_upstream() -> *mut ngx_http_upstream_srv_conf_t {
    // SAFETY: a zeroed srv conf is what nginx's own code starts from (pcalloc).
    let mut uscf: Box<ngx_http_upstream_srv_conf_t> = Box::new(unsafe { std::mem::zeroed() });
    uscf.peer.init = Some(init_peer);
    uscf.host = crate::util::static_str(b"passenger_core");
    Box::into_raw(uscf)
}

/// The `u->conf->upstream` of requests to the core (nginx then calls [`init_peer`]).
pub fn core_upstream() -> *mut ngx_http_upstream_srv_conf_t {
    CORE_UPSTREAM.with(|u| *u)
}

/// `uscf->peer.init`: this module's get/free, one try.
unsafe extern "C" fn init_peer(
    r: *mut ngx_http_request_t,
    _uscf: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    guard(rc(NGX_ERROR), || unsafe {
        let peer = &mut (*(*r).upstream).peer;
        peer.tries = 1;
        peer.get = Some(get_peer);
        peer.free = Some(free_peer);
        peer.data = r.cast();
        rc(NGX_OK)
    })
}

/// Points `pc` at the core (again: nginx clears the address after each failed try).
unsafe fn address_core(pc: *mut ngx_peer_connection_t) -> bool {
    let Some(core) = crate::agents::core() else {
        return false;
    };
    // nginx only reads these (connect, log lines); the core's live for the process.
    unsafe {
        (*pc).sockaddr = ptr::addr_of!(core.sockaddr) as *mut nginx_sys::sockaddr;
        (*pc).socklen = core.socklen;
        (*pc).name = CORE_NAME.with(|name| *name);
    }
    true
}

/// `unix:<core socket>` as nginx's log lines name the peer, made once per worker.
fn new_core_name() -> *mut ngx_str_t {
    let name = crate::agents::core().map_or(&[][..], |core| core.peer_name.as_bytes());
    Box::into_raw(Box::new(ngx_str_t {
        len: name.len(),
        data: name.as_ptr() as *mut u8,
    }))
}

/// Whether nginx would retry the request on a fresh connection after a cached one failed.
unsafe fn retryable(r: *mut ngx_http_request_t) -> bool {
    unsafe {
        let non_idempotent = (NGX_HTTP_POST | NGX_HTTP_LOCK | NGX_HTTP_PATCH) as ngx_uint_t;
        (*r).method & non_idempotent == 0 && (*r).request_body_no_buffering() == 0
    }
}

/// `pc->get`: an idle connection if there is one (`NGX_DONE`), else `NGX_OK` and nginx opens
/// a new one.
unsafe extern "C" fn get_peer(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    guard(rc(NGX_ERROR), || unsafe {
        (*pc).set_cached(0);
        (*pc).connection = ptr::null_mut();
        let r: *mut ngx_http_request_t = data.cast();
        if !address_core(pc) {
            return rc(NGX_ERROR);
        }
        if !retryable(r) {
            return rc(NGX_OK);
        }
        let Some(c) = IDLE.with(|idle| idle.borrow_mut().pop_back()) else {
            return rc(NGX_OK);
        };
        log_debug((*pc).log, || {
            format!("passenger: reusing connection {c:p} to the core")
        });
        (*c).set_idle(0);
        (*c).sent = 0;
        (*c).data = ptr::null_mut();
        set_log(c, (*pc).log);
        if (*(*c).read).timer_set() != 0 {
            ngx_del_timer((*c).read);
        }
        (*pc).connection = c;
        (*pc).set_cached(1);
        rc(NGX_DONE)
    })
}

/// `pc->free`: keeps the connection when its exchange ended cleanly, else nginx closes it.
unsafe extern "C" fn free_peer(
    pc: *mut ngx_peer_connection_t,
    data: *mut c_void,
    state: ngx_uint_t,
) {
    guard((), || unsafe {
        // A single peer: one try, given back by nginx when a cached connection failed.
        (*pc).tries = 0;
        let c = (*pc).connection;
        if !c.is_null() && reusable(data.cast(), c, state) {
            keep(c);
            (*pc).connection = ptr::null_mut();
        }
    })
}

unsafe fn reusable(
    r: *mut ngx_http_request_t,
    c: *mut ngx_connection_t,
    state: ngx_uint_t,
) -> bool {
    unsafe {
        let u = (*r).upstream;
        let (read, write) = (&*(*c).read, &*(*c).write);
        state & NGX_PEER_FAILED as ngx_uint_t == 0
            && read.eof() == 0
            && read.error() == 0
            && read.timedout() == 0
            && write.error() == 0
            && write.timedout() == 0
            && (*c).requests < MAX_REQUESTS
            && ngx_current_msec.wrapping_sub((*c).start_time) <= MAX_AGE_MS
            && (*u).keepalive() != 0
            && (*u).request_body_sent() != 0
            && ngx_terminate == 0
            && ngx_exiting == 0
            && ngx_handle_read_event((*c).read, 0) == NGX_OK as ngx_int_t
    }
}

/// Puts `c` in the cache, watching it for the core closing it.
unsafe fn keep(c: *mut ngx_connection_t) {
    unsafe {
        let evicted = IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let evicted = (idle.len() >= MAX_IDLE).then(|| idle.pop_front()).flatten();
            idle.push_back(c);
            evicted
        });
        if let Some(old) = evicted {
            close(old);
        }
        let (read, write) = ((*c).read, (*c).write);
        (*read).set_delayed(0);
        ngx_add_timer(read, IDLE_TIMEOUT_MS);
        if (*write).timer_set() != 0 {
            ngx_del_timer(write);
        }
        (*write).handler = Some(idle_write);
        (*read).handler = Some(idle_read);
        (*c).set_idle(1);
        set_log(c, (*ngx_cycle).log);
        if (*read).ready() != 0 {
            idle_read(read);
        }
    }
}

unsafe fn set_log(c: *mut ngx_connection_t, log: *mut nginx_sys::ngx_log_t) {
    unsafe {
        (*c).log = log;
        (*(*c).read).log = log;
        (*(*c).write).log = log;
        (*(*c).pool).log = log;
    }
}

unsafe extern "C" fn idle_write(_ev: *mut ngx_event_t) {}

/// Read event on an idle connection: the core closed it, the idle timeout passed, or nginx is
/// shutting down (`c->close`). Anything readable other than "nothing yet" ends it.
unsafe extern "C" fn idle_read(ev: *mut ngx_event_t) {
    guard((), || unsafe {
        let c = (*ev).data as *mut ngx_connection_t;
        if (*c).close() == 0 && (*ev).timedout() == 0 {
            let mut byte = 0u8;
            let n = libc::recv((*c).fd, (&raw mut byte).cast(), 1, libc::MSG_PEEK);
            if n == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
                (*ev).set_ready(0);
                if ngx_handle_read_event(ev, 0) == NGX_OK as ngx_int_t {
                    return;
                }
            }
        }
        IDLE.with(|idle| idle.borrow_mut().retain(|&kept| kept != c));
        close(c);
    })
}

unsafe fn close(c: *mut ngx_connection_t) {
    unsafe {
        ngx_destroy_pool((*c).pool);
        ngx_close_connection(c);
    }
}
