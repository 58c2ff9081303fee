//! App type autodetection, cached per app root for `passenger_stat_throttle_rate` seconds so
//! that a busy site does not stat three files on every request. Each worker keeps its own
//! cache (workers are single-threaded).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nginx_sys::ngx_int_t;
use passenger_protocol::options::AppType;

/// Bounds the cache on a server with very many app roots (it is then simply cleared).
const MAX_ENTRIES: usize = 1024;

thread_local! {
    static CACHE: RefCell<HashMap<PathBuf, (Option<AppType>, Instant)>> =
        RefCell::new(HashMap::new());
}

/// The type of the app in `app_root`, looked up again when the cached answer is older than
/// `throttle_secs` (0 = every time).
pub fn app_type(app_root: &Path, throttle_secs: ngx_int_t) -> Option<AppType> {
    let ttl = Duration::from_secs(throttle_secs.max(0) as u64);
    let now = Instant::now();
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((found, at)) = cache.get(app_root)
            && now.duration_since(*at) < ttl
        {
            return *found;
        }
        let found = AppType::detect(app_root);
        if cache.len() >= MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(app_root.to_path_buf(), (found, now));
        found
    })
}
