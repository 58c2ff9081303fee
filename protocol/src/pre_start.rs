//! `passenger_pre_start` URLs: checked by the nginx module when the configuration loads, and
//! requested by the watchdog once the core is up, so that their apps spawn before the first
//! visitor arrives. Only plain `http://` is requested; the request goes to nginx itself, which
//! routes it to the app like any other.

/// A pre-start URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreStartUrl {
    /// Where to connect (`host:port`; IPv6 hosts keep their brackets).
    pub address: String,
    /// The `Host` header.
    pub host: String,
    /// Path and query, at least `/`.
    pub path: String,
}

/// Parses `http://host[:port][/path]`; the error says what is wrong.
pub fn parse_url(url: &[u8]) -> Result<PreStartUrl, String> {
    let url = std::str::from_utf8(url).map_err(|_| "it is not valid UTF-8".to_string())?;
    if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("it contains spaces or control characters".into());
    }
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err("https is not supported; pre-start over http (a plain listen port)".into());
    } else {
        return Err("give an http:// URL, like http://localhost:8080/".into());
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let path = path.split('#').next().unwrap_or("/").to_string();
    if authority.is_empty() || authority.contains('@') {
        return Err("it has no host (or has user info)".into());
    }
    // The port is what follows the last ':' outside an IPv6 literal's brackets.
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], &authority[i + 1..]),
        _ => (authority, "80"),
    };
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port \"{port}\""))?;
    if host.is_empty() {
        return Err("it has no host".into());
    }
    Ok(PreStartUrl {
        address: format!("{host}:{port}"),
        host: authority.to_string(),
        path,
    })
}

impl PreStartUrl {
    /// The request sent for it.
    pub fn request(&self) -> String {
        format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: passenger-rs pre-start\r\n\r\n",
            self.path, self.host
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_taken_apart() {
        let u = parse_url(b"http://localhost:8080/app?x=1").unwrap();
        assert_eq!(u.address, "localhost:8080");
        assert_eq!(u.host, "localhost:8080");
        assert_eq!(u.path, "/app?x=1");
        let u = parse_url(b"http://example.org").unwrap();
        assert_eq!(
            (u.address.as_str(), u.path.as_str()),
            ("example.org:80", "/")
        );
        let u = parse_url(b"http://[::1]:81/").unwrap();
        assert_eq!(u.address, "[::1]:81");
        assert!(parse_url(b"https://x/").unwrap_err().contains("https"));
        assert!(parse_url(b"ftp://x/").is_err());
        assert!(parse_url(b"http://x:0/").is_err());
        assert!(parse_url(b"http:///").is_err());
        assert!(parse_url(b"http://a b/").is_err());
    }
}
