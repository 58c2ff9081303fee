//! App type autodetection, cached per app root for `passenger_stat_throttle_rate` seconds so
//! that a busy site does not stat three files on every request. Each worker keeps its own
//! cache (workers are single-threaded).

use std::cell::RefCell;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nginx_sys::ngx_int_t;
use passenger_protocol::options::AppType;

/// Bounds the cache on a server with very many app roots (it is then simply cleared).
const MAX_ENTRIES: usize = 1024;

/// Keyed by the app root's bytes with Fx: hashing a `Path` walks its components, and SipHash
/// showed in the worker's per-request profile. An app root comes from the configuration,
/// through a `root` with variables at most from the request; colliding keys could then make a
/// lookup compare with at most [`MAX_ENTRIES`] others, and each new key costs the stats of a
/// detection anyway.
type Cache = rustc_hash::FxHashMap<Vec<u8>, (Option<AppType>, Instant)>;

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// The type of the app in `app_root`, looked up again when the cached answer is older than
/// `throttle_secs` (0 = every time).
pub fn app_type(app_root: &Path, throttle_secs: ngx_int_t) -> Option<AppType> {
    let ttl = Duration::from_secs(throttle_secs.max(0) as u64);
    let now = Instant::now();
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let key = app_root.as_os_str().as_bytes();
        if let Some((found, at)) = cache.get(key)
            && now.duration_since(*at) < ttl
        {
            return *found;
        }
        let found = AppType::detect(app_root);
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(key.to_vec(), (found, now));
        found
    })
}
