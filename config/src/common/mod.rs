//! What the gateway's and the sidecar's configs share, written once: socket-address
//! parsing, paths relative to the config file, retry conditions and outlier detection
//! (file type, runtime type and validation), and the small hot-path algorithms both
//! proxies run per request (power of two choices, GCRA, zone-aware locality tiers).
//!
//! Each config module validates its own objects; it calls in here for the pieces whose
//! syntax and error messages must be the same in both files.

pub mod balance;
pub mod fault;
pub mod gcra;
pub mod grpc;
pub mod kubernetes;
pub mod locality;
pub mod outlier_detection;
pub mod retry;
pub mod sliding_window;
pub mod telemetry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A listen or endpoint address that is not `IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not an IP:PORT address (e.g. 0.0.0.0:8080, [::1]:8080)")]
pub struct AddrError {
    input: String,
}

/// Parse `IP:PORT` (`0.0.0.0:8080`, `[::1]:8080`). Host names are refused: an address
/// that resolves differently later would make a validated config mean something else.
pub fn parse_socket_addr(s: &str) -> Result<SocketAddr, AddrError> {
    s.trim().parse().map_err(|_| AddrError {
        input: s.to_owned(),
    })
}

/// A path as written in the config: absolute as is, relative to `base_dir` (the config
/// file's directory) otherwise, so a config means the same whatever directory the
/// proxy is started from.
pub fn resolve_path(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base_dir.join(p)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses() {
        assert_eq!(
            parse_socket_addr(" 127.0.0.1:80 ").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 80))
        );
        assert_eq!(parse_socket_addr("[::1]:8080").unwrap().port(), 8080);
        assert_eq!(
            parse_socket_addr("localhost:80").unwrap_err().to_string(),
            "\"localhost:80\" is not an IP:PORT address (e.g. 0.0.0.0:8080, [::1]:8080)"
        );
    }

    #[test]
    fn paths_are_relative_to_the_config_directory() {
        let base = Path::new("/etc/tollgate");
        assert_eq!(
            resolve_path(base, "certs/a.pem"),
            Path::new("/etc/tollgate/certs/a.pem")
        );
        assert_eq!(resolve_path(base, "/abs/a.pem"), Path::new("/abs/a.pem"));
    }
}
