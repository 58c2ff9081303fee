//! Where `passenger start` listens, and the checks made before anything starts: a port in use,
//! a privileged port without root, an address that is not on this host, a unix socket path
//! that is too long or held by a live server. Each check binds a socket the way nginx will
//! (SO_REUSEADDR; IPV6_V6ONLY for IPv6 addresses, nginx's default) and closes it at once.

use std::fmt;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Phusion Passenger's and `passenger_socket_backlog`'s default listen backlog.
pub const DEFAULT_BACKLOG: u32 = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Endpoint {
    /// The URL a person would use (`http://0.0.0.0:3000/`, `unix:/path/to.sock`).
    pub fn url(&self, ssl: bool) -> String {
        match self {
            Endpoint::Tcp(addr) => {
                format!("{}://{addr}/", if ssl { "https" } else { "http" })
            }
            Endpoint::Unix(path) => format!(
                "{}unix:{}",
                if ssl { "https over " } else { "" },
                path.display()
            ),
        }
    }
}

/// One `listen` of the generated server block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub endpoint: Endpoint,
    pub ssl: bool,
    /// The option that chose this endpoint, for hints (`--port`, `--ssl-port`, `--socket`).
    pub option: &'static str,
}

/// `address` (an IPv4 or IPv6 address, optionally in brackets, or a host name) and `port`.
pub fn resolve(address: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match (bare, port).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("the address {address:?} resolves to nothing")),
        Err(e) => Err(format!(
            "{address:?} is neither an IP address nor a host name this host can resolve ({e})"
        )),
    }
}

/// Checks that `listener` can be bound now; the error is one line naming the address and why.
pub fn check(listener: &Listener) -> Result<(), String> {
    match &listener.endpoint {
        Endpoint::Tcp(addr) => check_tcp(*addr).map_err(|e| {
            let why = match e.kind() {
                ErrorKind::AddrInUse => format!(
                    "the port is already in use; choose another with {}",
                    listener.option
                ),
                ErrorKind::PermissionDenied => format!(
                    "ports below {} need root, and you are {}",
                    unprivileged_port_start(),
                    current_user()
                ),
                ErrorKind::AddrNotAvailable => "the address is not on this host".to_string(),
                _ => e.to_string(),
            };
            format!("cannot listen on {addr}: {why}")
        }),
        Endpoint::Unix(path) => check_unix(path),
    }
}

fn check_tcp(addr: SocketAddr) -> std::io::Result<()> {
    let last_error = || Err(std::io::Error::last_os_error());
    let family = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket calls on a descriptor we own, with correctly sized arguments.
    unsafe {
        let raw = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            return last_error();
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let on: libc::c_int = 1;
        let set = |level, name| {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set(libc::SOL_SOCKET, libc::SO_REUSEADDR) != 0 {
            return last_error();
        }
        let rc = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                libc::bind(
                    fd.as_raw_fd(),
                    (&sin as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
            SocketAddr::V6(a) => {
                if set(libc::IPPROTO_IPV6, libc::IPV6_V6ONLY) != 0 {
                    return last_error();
                }
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                libc::bind(
                    fd.as_raw_fd(),
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        };
        if rc != 0 {
            return last_error();
        }
    }
    Ok(())
}

/// The longest unix socket path (sun_path holds 108 bytes with the NUL).
const MAX_UNIX_PATH: usize = 107;

fn check_unix(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let len = path.as_os_str().len();
    if len > MAX_UNIX_PATH {
        return Err(format!(
            "cannot listen on unix:{shown}: the path is {len} bytes long, and a unix socket path can have at most {MAX_UNIX_PATH}"
        ));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir
        && !dir.is_dir()
    {
        return Err(format!(
            "cannot listen on unix:{shown}: the directory {} does not exist",
            dir.display()
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "cannot listen on unix:{shown}: another server is listening on it"
                ));
            }
            // A stale socket of a server that is gone: nginx would fail to bind over it.
            std::fs::remove_file(path).map_err(|e| {
                format!("cannot listen on unix:{shown}: cannot remove the stale socket: {e}")
            })?;
        }
        Ok(_) => {
            return Err(format!(
                "cannot listen on unix:{shown}: the path exists and is not a socket"
            ));
        }
        Err(_) => {}
    }
    match std::os::unix::net::UnixListener::bind(path) {
        Ok(_) => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
        Err(e) => Err(format!("cannot listen on unix:{shown}: {e}")),
    }
}

/// The listen backlog to configure: the requested one, capped at `net.core.somaxconn` (the
/// kernel would silently cap it), with a note when capped.
pub fn backlog(requested: u32) -> (u32, Option<String>) {
    let max = read_proc_number("/proc/sys/net/core/somaxconn");
    match max {
        Some(max) if requested > max => (
            max,
            Some(format!(
                "the listen backlog is {max}, not {requested}: net.core.somaxconn caps it (raise it with sysctl as root)"
            )),
        ),
        _ => (requested, None),
    }
}

fn unprivileged_port_start() -> u32 {
    read_proc_number("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap_or(1024)
}

fn read_proc_number(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

pub fn current_user() -> String {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |u| u.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(addr: &str) -> Listener {
        Listener {
            endpoint: Endpoint::Tcp(addr.parse().unwrap()),
            ssl: false,
            option: "--port",
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(
            resolve("::1", 80).unwrap(),
            "[::1]:80".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            resolve("[::]", 80).unwrap(),
            "[::]:80".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(resolve("localhost", 81).unwrap().port(), 81);
        assert!(resolve("no such host.invalid", 80).is_err());
    }

    #[test]
    fn a_port_in_use_and_an_address_elsewhere() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        assert_eq!(
            check(&tcp(&addr.to_string())).unwrap_err(),
            format!(
                "cannot listen on {addr}: the port is already in use; choose another with --port"
            )
        );
        drop(taken);
        check(&tcp(&addr.to_string())).unwrap();
        assert_eq!(
            check(&tcp("192.0.2.1:3000")).unwrap_err(),
            "cannot listen on 192.0.2.1:3000: the address is not on this host"
        );
    }

    #[test]
    fn unix_socket_paths() {
        let long = PathBuf::from(format!("/tmp/{}", "x".repeat(120)));
        let l = Listener {
            endpoint: Endpoint::Unix(long),
            ssl: false,
            option: "--socket",
        };
        assert!(check(&l).unwrap_err().contains("at most 107"));
        let l = Listener {
            endpoint: Endpoint::Unix("/nonexistent-dir/x.sock".into()),
            ssl: false,
            option: "--socket",
        };
        assert!(check(&l).unwrap_err().contains("does not exist"));
    }
}
