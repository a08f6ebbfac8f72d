//! `server.upgrade_socket`: where a binary upgrade hands the listening sockets over.
//! Checked here because Pingora panics on a path it cannot bind, and unlinks whatever
//! file is there first.

use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use crate::error::Problems;

/// `sun_path` holds 108 bytes, the terminating NUL included.
const MAX_PATH_BYTES: usize = 107;

/// Resolve the configured path (or the default, one per admin port so gateways on one
/// machine never share it) and check it can be a socket.
pub(crate) fn validate(
    configured: Option<&str>,
    admin: SocketAddr,
    base_dir: &Path,
    p: &mut Problems,
) -> PathBuf {
    let path = match configured {
        Some(s) => base_dir.join(s),
        None => std::env::temp_dir().join(format!("tollgate-gateway-{}.sock", admin.port())),
    };
    let field = "server.upgrade_socket";
    if configured.is_some_and(|s| s.trim().is_empty()) {
        p.push(field, "must not be empty");
        return path;
    }
    if path.as_os_str().len() > MAX_PATH_BYTES {
        p.push(
            field,
            format!(
                "{}: longer than {MAX_PATH_BYTES} bytes (a Unix socket path limit)",
                path.display()
            ),
        );
    }
    match path.parent() {
        Some(dir) if dir.is_dir() => {}
        _ => p.push(
            field,
            format!("{}: its directory does not exist", path.display()),
        ),
    }
    // An upgrade removes the file before binding: never let that be a regular file.
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() {
            p.push(
                field,
                format!("{}: exists and is not a socket", path.display()),
            );
        }
    }
    path
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(configured: Option<&str>, base: &Path) -> (PathBuf, Vec<String>) {
        let mut p = Problems::default();
        let path = validate(
            configured,
            SocketAddr::from(([127, 0, 0, 1], 9901)),
            base,
            &mut p,
        );
        let messages = p
            .into_error(Path::new("gateway.yaml"), "")
            .to_string()
            .lines()
            .map(str::to_owned)
            .collect();
        (path, messages)
    }

    #[test]
    fn default_is_per_admin_port() {
        let (path, problems) = check(None, Path::new("/etc/tollgate"));
        assert_eq!(
            path,
            std::env::temp_dir().join("tollgate-gateway-9901.sock")
        );
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn relative_to_the_config_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (path, problems) = check(Some("up.sock"), dir.path());
        assert_eq!(path, dir.path().join("up.sock"));
        assert!(problems.is_empty(), "{problems:?}");

        let (_, problems) = check(Some("missing/up.sock"), dir.path());
        assert!(
            problems.join("\n").contains("directory does not exist"),
            "{problems:?}"
        );

        std::fs::write(dir.path().join("file"), "keep me").unwrap();
        let (_, problems) = check(Some("file"), dir.path());
        assert!(problems.join("\n").contains("not a socket"), "{problems:?}");

        let long = "x".repeat(120);
        let (_, problems) = check(Some(&long), dir.path());
        assert!(problems.join("\n").contains("longer than"), "{problems:?}");

        let (_, problems) = check(Some(" "), dir.path());
        assert!(
            problems.join("\n").contains("must not be empty"),
            "{problems:?}"
        );
    }
}
