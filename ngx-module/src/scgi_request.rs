//! Building the modified-SCGI request to the core: the netstring header made from the request
//! (CGI variables, `HTTP_*` headers, the location's `PASSENGER_*` options and the core's
//! password), followed by the request body nginx has read.

use std::ptr;

use nginx_sys::{
    NGX_ERROR, NGX_OK, ngx_alloc_chain_link, ngx_buf_t, ngx_chain_t, ngx_connection_local_sockaddr,
    ngx_create_temp_buf, ngx_http_auth_basic_user, ngx_http_core_module, ngx_http_core_srv_conf_t,
    ngx_http_request_t, ngx_inet_get_port, ngx_int_t, ngx_palloc, ngx_table_elt_t,
};
use passenger_protocol::decimal;
use passenger_protocol::options;
use passenger_protocol::scgi;
use passenger_protocol::session::cgi_header_name_into;

use crate::config::{LocConf, MainConf, pool_options};
use crate::handler::{AppInfo, RequestCtx, module};
use crate::util::{
    bytes, guard, log_debug, request_ctx, request_loc_conf, request_log, request_main_conf,
    request_srv_conf,
};

/// `u->create_request`.
pub unsafe extern "C" fn create_request(r: *mut ngx_http_request_t) -> ngx_int_t {
    guard(NGX_ERROR as ngx_int_t, || unsafe { create(r) })
}

/// `ngx_buf_size()`.
unsafe fn buf_size(b: *const ngx_buf_t) -> u64 {
    unsafe {
        let b = &*b;
        if b.temporary() != 0 || b.memory() != 0 || b.mmap() != 0 {
            b.last.offset_from(b.pos).max(0) as u64
        } else {
            (b.file_last - b.file_pos).max(0) as u64
        }
    }
}

unsafe fn create(r: *mut ngx_http_request_t) -> ngx_int_t {
    let err = NGX_ERROR as ngx_int_t;
    unsafe {
        let ctx: *mut RequestCtx = request_ctx(r, module());
        let Some(core) = crate::agents::core() else {
            return err;
        };
        if ctx.is_null() {
            return err;
        }
        let u = (*r).upstream;
        let pool = (*r).pool;

        // Streaming (passenger_request_buffering off, never with a chunked body) sends what the
        // client announced; otherwise the body nginx has read is all there is.
        let mut content_length: u64 = 0;
        if (*r).request_body_no_buffering() != 0 {
            content_length = (*r).headers_in.content_length_n.max(0) as u64;
        } else {
            let mut body = (*u).request_bufs;
            while !body.is_null() {
                content_length += buf_size((*body).buf);
                body = (*body).next;
            }
        }

        let lcf: &LocConf = &*request_loc_conf(r, module());
        let req = RequestInfo::from_request(r, lcf);
        let mcf: &MainConf = &*request_main_conf(r, module());
        // Serialised at configuration time; built here only for a location merge didn't see.
        let built;
        let pool_opts = match lcf.pool_options() {
            Some(p) => p,
            None => {
                built = pool_options(mcf, lcf);
                &built
            }
        };
        let header = build_header(
            &req,
            &(*ctx).app(),
            pool_opts,
            core.password.as_bytes(),
            content_length,
        );
        log_debug(request_log(r), || {
            format!(
                "passenger: SCGI header of {} bytes, body of {content_length}",
                header.len()
            )
        });

        let b = ngx_create_temp_buf(pool, header.len());
        if b.is_null() {
            return err;
        }
        ptr::copy_nonoverlapping(header.as_ptr(), (*b).last, header.len());
        (*b).last = (*b).last.add(header.len());

        let mut cl: *mut ngx_chain_t = ngx_alloc_chain_link(pool);
        if cl.is_null() {
            return err;
        }
        (*cl).buf = b;
        let head = cl;

        // Copies of the body's buf structs (memory or file), so that a retry can rewind them
        // without disturbing the request body itself.
        let mut body = (*u).request_bufs;
        while !body.is_null() {
            let copy = ngx_palloc(pool, std::mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t;
            let next = ngx_alloc_chain_link(pool);
            if copy.is_null() || next.is_null() {
                return err;
            }
            ptr::copy_nonoverlapping((*body).buf, copy, 1);
            (*next).buf = copy;
            (*cl).next = next;
            cl = next;
            body = (*body).next;
        }
        (*cl).next = ptr::null_mut();
        (*u).request_bufs = head;
        NGX_OK as ngx_int_t
    }
}

/// The parts of the request the SCGI header is made of, borrowed from nginx's memory.
struct RequestInfo<'a> {
    method: &'a [u8],
    request_uri: &'a [u8],
    path_info: &'a [u8],
    query_string: &'a [u8],
    server_name: &'a [u8],
    server_port: u16,
    server_protocol: &'a [u8],
    remote_addr: &'a [u8],
    remote_port: u16,
    /// The user of HTTP basic authentication, like nginx's `$remote_user`.
    remote_user: Option<&'a [u8]>,
    https: bool,
    content_type: Option<&'a [u8]>,
    /// Request headers in arrival order.
    headers: Vec<(&'a [u8], &'a [u8])>,
    /// Whether nginx can switch this request's connection to a tunnel
    /// ([`crate::response::client_can_upgrade`]); if not, `Upgrade` is not passed on.
    can_upgrade: bool,
}

impl<'a> RequestInfo<'a> {
    unsafe fn from_request(r: *mut ngx_http_request_t, lcf: &LocConf) -> RequestInfo<'a> {
        unsafe {
            let c = (*r).connection;
            let mut server_name = bytes(&(*r).headers_in.server);
            if server_name.is_empty() {
                let cscf: *mut ngx_http_core_srv_conf_t =
                    request_srv_conf(r, &raw const ngx_http_core_module);
                if !cscf.is_null() {
                    server_name = bytes(&(*cscf).server_name);
                }
            }
            let server_port = if ngx_connection_local_sockaddr(c, ptr::null_mut(), 0)
                == NGX_OK as ngx_int_t
                && !(*c).local_sockaddr.is_null()
            {
                ngx_inet_get_port((*c).local_sockaddr)
            } else {
                0
            };
            let remote_port = if (*c).sockaddr.is_null() {
                0
            } else {
                ngx_inet_get_port((*c).sockaddr)
            };
            let remote_user = (!(*r).headers_in.authorization.is_null()
                && ngx_http_auth_basic_user(r) == NGX_OK as ngx_int_t)
                .then(|| bytes(&(*r).headers_in.user))
                .filter(|u| !u.is_empty());
            #[cfg(ngx_feature = "ssl")]
            let https = !(*c).ssl.is_null();
            #[cfg(not(ngx_feature = "ssl"))]
            let https = false;
            let content_type = (*r)
                .headers_in
                .content_type
                .as_ref()
                .map(|h: &ngx_table_elt_t| bytes(&h.value));

            let headers = crate::headers::request_headers(r, lcf);

            RequestInfo {
                method: bytes(&(*r).method_name),
                request_uri: bytes(&(*r).unparsed_uri),
                path_info: bytes(&(*r).uri),
                query_string: bytes(&(*r).args),
                server_name,
                server_port,
                server_protocol: bytes(&(*r).http_protocol),
                remote_addr: bytes(&(*c).addr_text),
                remote_port,
                remote_user,
                https,
                content_type,
                headers,
                can_upgrade: crate::response::client_can_upgrade(r),
            }
        }
    }
}

/// Request headers that are not passed as `HTTP_*`: the two with CGI variables of their own,
/// `Proxy`, which would become `HTTP_PROXY` and be taken for a proxy setting ("httpoxy"), and
/// `Upgrade` when nginx could not honour a 101 for this request (so the app does not offer
/// one).
fn skipped_header(name: &[u8], can_upgrade: bool) -> bool {
    [&b"content-type"[..], b"content-length", b"proxy"]
        .iter()
        .any(|s| name.eq_ignore_ascii_case(s))
        || (!can_upgrade && name.eq_ignore_ascii_case(b"upgrade"))
}

/// Adds the `HTTP_*` pairs: one per distinct CGI name (the core refuses a header with a key
/// twice); repeated headers are joined with ", " (cookies with "; "), in arrival order.
/// `Upgrade` and `Connection` are passed like the others (as `HTTP_UPGRADE`,
/// `HTTP_CONNECTION`) when the request can upgrade.
fn add_http_variables(
    header: &mut scgi::HeaderBuilder,
    headers: &[(&[u8], &[u8])],
    can_upgrade: bool,
) {
    let next = same_name_chains(headers);
    let mut key = Vec::with_capacity(64);
    for (i, &(name, value)) in headers.iter().enumerate() {
        if next[i].repeat
            || skipped_header(name, can_upgrade)
            || !cgi_header_name_into(name, &mut key)
        {
            continue;
        }
        let sep: &[u8] = if key == b"HTTP_COOKIE" { b"; " } else { b", " };
        let repeats = std::iter::successors(next[i].next, |&j| next[j].next)
            .flat_map(|j| [sep, headers[j].1]);
        header.pair_from_parts(&key, std::iter::once(value).chain(repeats));
    }
}

/// Where a header's name comes again.
#[derive(Clone, Copy, Default)]
struct SameName {
    /// The next header of the same name.
    next: Option<usize>,
    /// An earlier header has this name.
    repeat: bool,
}

/// Links the headers of the same name (but for case), in arrival order. By sorting: a request
/// may carry hundreds of tiny headers (more where `large_client_header_buffers` is raised),
/// and comparing each with every other grows with the square of their number. (Names that
/// pass [`cgi_header_name_into`] have the same CGI name exactly when they are equal but for
/// case.)
fn same_name_chains(headers: &[(&[u8], &[u8])]) -> Vec<SameName> {
    fn lower(name: &[u8]) -> impl Iterator<Item = u8> + '_ {
        name.iter().map(u8::to_ascii_lowercase)
    }
    let mut order: Vec<usize> = (0..headers.len()).collect();
    order.sort_unstable_by(|&a, &b| {
        let (x, y) = (headers[a].0, headers[b].0);
        x.len()
            .cmp(&y.len())
            .then_with(|| lower(x).cmp(lower(y)))
            .then(a.cmp(&b))
    });
    let mut chains = vec![SameName::default(); headers.len()];
    for pair in order.windows(2) {
        if headers[pair[0]].0.eq_ignore_ascii_case(headers[pair[1]].0) {
            chains[pair[0]].next = Some(pair[1]);
            chains[pair[1]].repeat = true;
        }
    }
    chains
}

/// The header for the core: CGI variables, `HTTP_*` headers, the app's and the location's
/// options, the password. Written straight into one buffer (a value ends at its first NUL,
/// which would otherwise corrupt the header).
fn build_header(
    req: &RequestInfo<'_>,
    app: &AppInfo<'_>,
    pool: &[(&'static str, Vec<u8>)],
    password: &[u8],
    content_length: u64,
) -> Vec<u8> {
    // Under a base URI the app sees it as SCRIPT_NAME and the rest of the path as PATH_INFO.
    let path_info = req
        .path_info
        .strip_prefix(app.base_uri)
        .unwrap_or(req.path_info);
    let (mut length_digits, mut server_port, mut remote_port) = ([0; 20], [0; 20], [0; 20]);

    let mut header = scgi::HeaderBuilder::with_capacity(2048);
    let cgi: [(&[u8], &[u8]); 12] = [
        (
            b"CONTENT_LENGTH",
            decimal(content_length, &mut length_digits),
        ),
        (b"SCGI", b"1"),
        (b"REQUEST_METHOD", req.method),
        (b"REQUEST_URI", req.request_uri),
        (b"PATH_INFO", path_info),
        (b"QUERY_STRING", req.query_string),
        (b"SCRIPT_NAME", app.base_uri),
        (b"SERVER_NAME", req.server_name),
        (
            b"SERVER_PORT",
            decimal(req.server_port.into(), &mut server_port),
        ),
        (b"SERVER_PROTOCOL", req.server_protocol),
        (b"REMOTE_ADDR", req.remote_addr),
        (
            b"REMOTE_PORT",
            decimal(req.remote_port.into(), &mut remote_port),
        ),
    ];
    for (k, v) in cgi {
        header.pair(k, v);
    }
    if let Some(user) = req.remote_user {
        header.pair(b"REMOTE_USER", user);
    }
    if req.https {
        header.pair(b"HTTPS", b"on");
    }
    header.pair(b"DOCUMENT_ROOT", app.document_root);
    if let Some(ct) = req.content_type {
        header.pair(b"CONTENT_TYPE", ct);
    }
    add_http_variables(&mut header, &req.headers, req.can_upgrade);
    let app_options: [(&str, &[u8]); 5] = [
        (options::APP_ROOT, app.app_root),
        (options::APP_TYPE, app.app_type.name().as_bytes()),
        (options::STARTUP_FILE, app.startup_file),
        (options::APP_ENV, app.app_env),
        (options::RUBY, app.ruby),
    ];
    for (k, v) in app_options {
        header.pair(k.as_bytes(), v);
    }
    let group = options::APP_GROUP_NAME.as_bytes();
    match app.group_name {
        Some(name) => header.pair(group, name),
        None => {
            let (root, env) = (
                String::from_utf8_lossy(app.app_root),
                String::from_utf8_lossy(app.app_env),
            );
            let parts = options::default_group_name_parts(&root, &env);
            header.pair_from_parts(group, parts.iter().map(|p| p.as_bytes()));
        }
    }
    if !app.base_uri.is_empty() {
        header.pair(options::BASE_URI.as_bytes(), app.base_uri);
    }
    for (k, v) in pool {
        header.pair(k.as_bytes(), v);
    }
    header.pair(options::CONNECT_PASSWORD.as_bytes(), password);
    header.finish()
}

#[cfg(test)]
mod tests {
    use super::add_http_variables;
    use passenger_protocol::scgi;

    fn names(headers: &[(&[u8], &[u8])], can_upgrade: bool) -> Vec<String> {
        let mut header = scgi::HeaderBuilder::with_capacity(0);
        header.pair(b"CONTENT_LENGTH", b"0");
        add_http_variables(&mut header, headers, can_upgrade);
        let (decoded, _) = scgi::decode(&header.finish(), scgi::DEFAULT_MAX_HEADER)
            .unwrap()
            .unwrap();
        decoded
            .pairs()
            .skip(1)
            .map(|(k, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(k),
                    String::from_utf8_lossy(v)
                )
            })
            .collect()
    }

    #[test]
    fn upgrade_and_connection_reach_the_core_when_the_request_can_upgrade() {
        let headers: [(&[u8], &[u8]); 4] = [
            (b"Host", b"x"),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Proxy", b"evil"),
        ];
        assert_eq!(
            names(&headers, true),
            [
                "HTTP_HOST=x",
                "HTTP_UPGRADE=websocket",
                "HTTP_CONNECTION=Upgrade"
            ]
        );
        assert_eq!(
            names(&headers, false),
            ["HTTP_HOST=x", "HTTP_CONNECTION=Upgrade"]
        );
    }

    #[test]
    fn interleaved_repeats_keep_the_order_of_first_arrival() {
        let headers: [(&[u8], &[u8]); 6] = [
            (b"B", b"1"),
            (b"a", b"1"),
            (b"X-Bb", b"y"),
            (b"b", b"2"),
            (b"A", b"2"),
            (b"x-BB", b"z"),
        ];
        assert_eq!(
            names(&headers, true),
            ["HTTP_B=1, 2", "HTTP_A=1, 2", "HTTP_X_BB=y, z"]
        );
        // Thousands of headers.
        let many: Vec<(Vec<u8>, &[u8])> = (0..5000)
            .map(|i| (format!("H{}", i % 2500).into_bytes(), &b"v"[..]))
            .collect();
        let many: Vec<(&[u8], &[u8])> = many.iter().map(|(k, v)| (k.as_slice(), *v)).collect();
        let joined = names(&many, true);
        assert_eq!(joined.len(), 2500);
        assert_eq!(joined[0], "HTTP_H0=v, v");
        assert_eq!(joined[2499], "HTTP_H2499=v, v");
    }

    #[test]
    fn repeated_headers_are_joined() {
        let headers: [(&[u8], &[u8]); 4] = [
            (b"Cookie", b"a=1"),
            (b"X-A", b"1"),
            (b"cookie", b"b=2"),
            (b"x-a", b"2"),
        ];
        assert_eq!(
            names(&headers, true),
            ["HTTP_COOKIE=a=1; b=2", "HTTP_X_A=1, 2"]
        );
    }
}
