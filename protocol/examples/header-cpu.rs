//! CPU time of decoding (in the core) and encoding (in the nginx module) one SCGI request
//! header of the size nginx sends for a `wrk` request: the CGI variables, the `PASSENGER_*`
//! options of a location with the defaults, and the password (1.4 KB, 44 pairs).
//!
//!   cargo run --release -p passenger-protocol --example header-cpu [ITERATIONS]

use std::hint::black_box;
use std::time::Instant;

use passenger_protocol::scgi;

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |n| n.parse().expect("ITERATIONS is a number"));
    let pairs = sample_pairs();
    let header = scgi::encode(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));

    let decode = per_call(iterations, || {
        let (h, used) = scgi::decode(black_box(&header), scgi::DEFAULT_MAX_HEADER)
            .expect("valid")
            .expect("complete");
        black_box((h, used));
    });
    let encode = per_call(iterations, || {
        black_box(scgi::encode(
            black_box(&pairs)
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        ));
    });
    println!(
        "header of {} bytes, {} pairs: decode {decode:.0} ns, encode {encode:.0} ns (median of 5 rounds of {iterations})",
        header.len(),
        pairs.len()
    );
}

/// Nanoseconds per call of `f`: the median of 5 rounds.
fn per_call(iterations: u32, mut f: impl FnMut()) -> f64 {
    let mut rounds: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[2]
}

/// The pairs of a request as the module builds them (captured from a running nginx).
fn sample_pairs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("CONTENT_LENGTH", "0"),
        ("SCGI", "1"),
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/"),
        ("PATH_INFO", "/"),
        ("QUERY_STRING", ""),
        ("SCRIPT_NAME", ""),
        ("SERVER_NAME", "127.0.0.1"),
        ("SERVER_PORT", "18800"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "38976"),
        ("DOCUMENT_ROOT", "/srv/apps/hello/public"),
        ("HTTP_HOST", "127.0.0.1:18800"),
        ("HTTP_USER_AGENT", "curl/7.88.1"),
        ("HTTP_ACCEPT", "*/*"),
        ("PASSENGER_APP_ROOT", "/srv/apps/hello"),
        ("PASSENGER_APP_TYPE", "rack"),
        ("PASSENGER_STARTUP_FILE", "/srv/apps/hello/config.ru"),
        ("PASSENGER_APP_ENV", "production"),
        ("PASSENGER_APP_GROUP_NAME", "/srv/apps/hello (production)"),
        ("PASSENGER_RUBY", "/usr/bin/ruby"),
        ("PASSENGER_MAX_POOL_SIZE", "2"),
        ("PASSENGER_MAX_INSTANCES_PER_APP", "0"),
        ("PASSENGER_POOL_IDLE_TIME", "300"),
        ("PASSENGER_STAT_THROTTLE_RATE", "10"),
        ("PASSENGER_MIN_INSTANCES", "2"),
        ("PASSENGER_MAX_REQUESTS", "0"),
        ("PASSENGER_MAX_REQUESTS_JITTER", "0"),
        ("PASSENGER_RESIST_DEPLOYMENT_ERRORS", "0"),
        ("PASSENGER_MAX_REQUEST_QUEUE_SIZE", "0"),
        ("PASSENGER_REQUEST_QUEUE_OVERFLOW_STATUS_CODE", "503"),
        ("PASSENGER_MAX_REQUEST_QUEUE_TIME", "0"),
        ("PASSENGER_RESTART_DIR", "tmp"),
        ("PASSENGER_SHOW_VERSION_IN_HEADER", "1"),
        (
            "PASSENGER_RESPONSE_BUFFER_HIGH_WATERMARK",
            "18446744073709551615",
        ),
        ("PASSENGER_PYTHON", "python3"),
        ("PASSENGER_NODEJS", "node"),
        ("PASSENGER_MAX_PRELOADER_IDLE_TIME", "300"),
        ("PASSENGER_START_TIMEOUT", "90"),
        ("PASSENGER_LOAD_SHELL_ENVVARS", "1"),
        ("PASSENGER_SPAWN_EXCEPTION_STATUS_CODE", "500"),
        ("PASSENGER_USER_SWITCHING", "1"),
        ("PASSENGER_DEFAULT_USER", "nobody"),
        ("PASSENGER_DISABLE_LOG_PREFIX", "0"),
        (
            "PASSENGER_CONNECT_PASSWORD",
            "qZ0ORD1Fn5HiDzhxDZlDoER5L89wQpF6",
        ),
    ]
}
