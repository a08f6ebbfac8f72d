//! Zero-downtime binary upgrade: a new gateway process takes the listening sockets of
//! the running one (Pingora's socket handoff), and the old one drains and exits 0.
//!
//! One command, `gateway upgrade --config FILE`, runs the new process. It finds the old
//! one through the old one's admin API (no pid file, no signal to aim):
//!
//! 1. `GET /upgrade` on the old admin: the old process's upgrade socket
//!    (`server.upgrade_socket` of the config *it* started with) and listeners.
//! 2. The new process starts Pingora in upgrade mode, which listens on that socket,
//!    and once the socket exists asks `POST /upgrade`. The old process refuses unless
//!    someone is listening there, so a stray request cannot make it hand over to no one.
//! 3. The old process sends its listening sockets (Pingora's `GracefulUpgrade`) and
//!    releases its admin port; both accept on the shared sockets for Pingora's close
//!    timeout (5 s), then the old one stops accepting, finishes its in-flight requests
//!    (up to its grace period) and exits 0. Queued connections stay in the shared
//!    accept queues: nothing is refused.
//! 4. The new process binds the admin port (retrying until the old one let go of it),
//!    binds listeners that are new in its config, and reports ready.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_config::admin::{Health, Readiness, Release};

/// How long the new process waits for the old one's admin port.
const ADMIN_PORT_WAIT: Duration = Duration::from_secs(15);
/// How long the new process waits for Pingora to create the upgrade socket.
const SOCKET_WAIT: Duration = Duration::from_secs(5);

/// The running process's side: what it tells a successor, and the trigger its signal
/// watcher waits on.
pub struct Handoff {
    health: Arc<Health>,
    socket: PathBuf,
    listeners: Vec<String>,
    requested: AtomicBool,
    notify: tokio::sync::Notify,
    admin: OnceLock<Release>,
}

impl Handoff {
    /// `socket` must be the path given to Pingora (`ServerConf.upgrade_sock`).
    pub fn new(health: Arc<Health>, socket: PathBuf, listeners: Vec<String>) -> Self {
        Self {
            health,
            socket,
            listeners,
            requested: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
            admin: OnceLock::new(),
        }
    }

    pub fn set_admin(&self, release: Release) {
        let _ = self.admin.set(release);
    }

    /// Resolves once a successor asked for the sockets (`POST /upgrade` accepted).
    pub async fn requested(&self) {
        self.notify.notified().await;
    }

    /// `GET /upgrade`.
    pub fn info(&self) -> Value {
        json!({
            "socket": self.socket.display().to_string(),
            "pid": std::process::id(),
            "listeners": self.listeners,
            "handing_over": self.requested.load(Ordering::SeqCst),
        })
    }

    /// `POST /upgrade`: hand the sockets over if a successor is listening for them.
    pub fn request(&self) -> Result<Value, String> {
        let listening = std::fs::symlink_metadata(&self.socket)
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
        if !listening {
            return Err(format!(
                "no process waits on {}: start the new one with `gateway upgrade --config FILE`",
                self.socket.display()
            ));
        }
        // SIGTERM's drain is under way: its signal watcher no longer listens for this.
        if self.health.get() == Readiness::Draining && !self.requested.load(Ordering::SeqCst) {
            return Err("shutting down (SIGTERM): start the new gateway fresh".into());
        }
        if self.requested.swap(true, Ordering::SeqCst) {
            return Err("already handing over to a new process".into());
        }
        tracing::info!(socket = %self.socket.display(), "upgrade: handing the listening sockets over, then draining");
        self.notify.notify_one();
        if let Some(admin) = self.admin.get() {
            admin.release();
        }
        Ok(json!({ "result": "handing_over", "pid": std::process::id() }))
    }
}

/// The old process, as its admin API described it.
#[derive(Debug)]
pub struct Predecessor {
    pub admin: SocketAddr,
    pub pid: u64,
    pub socket: PathBuf,
    /// Addresses it listens on: their sockets come over, the rest are bound fresh.
    pub listeners: Vec<String>,
}

/// Ask the gateway whose admin listens on `admin` how to take over from it.
pub fn find(admin: SocketAddr) -> anyhow::Result<Predecessor> {
    let (status, body) = admin_call(admin, "GET", "/upgrade").map_err(|e| {
        anyhow::anyhow!(
            "upgrade: no gateway admin answers on {admin}: {e} (is the old gateway running? \
             `--from ADDRESS` names its admin address if the new config moved it)"
        )
    })?;
    if status != 200 {
        anyhow::bail!("upgrade: GET http://{admin}/upgrade answered {status}: {body}");
    }
    let v: Value = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("upgrade: {admin}/upgrade: not a gateway answer: {e}"))?;
    if v["handing_over"].as_bool() == Some(true) {
        anyhow::bail!("upgrade: the gateway on {admin} is already handing over to another process");
    }
    let socket = v["socket"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("upgrade: {admin}/upgrade names no socket"))?;
    let listeners = v["listeners"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(Predecessor {
        admin,
        pid: v["pid"].as_u64().unwrap_or_default(),
        socket: PathBuf::from(socket),
        listeners,
    })
}

impl Predecessor {
    /// Before Pingora listens on the socket: remove a stale one, so that the socket
    /// existing means the new process is waiting on it.
    pub fn prepare_socket(&self) -> anyhow::Result<()> {
        match std::fs::symlink_metadata(&self.socket) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(&self.socket)
                .map_err(|e| anyhow::anyhow!("upgrade socket {}: {e}", self.socket.display())),
            Ok(_) => anyhow::bail!(
                "upgrade socket {}: exists and is not a socket",
                self.socket.display()
            ),
            Err(_) => Ok(()),
        }
    }

    /// While Pingora waits for the sockets on the main thread: once it listens, ask the
    /// old process to send them. If the old one refuses, nothing was handed over and
    /// nothing changed there: exit with the reason.
    pub fn ask_when_listening(&self) -> std::io::Result<()> {
        let (admin, socket) = (self.admin, self.socket.clone());
        std::thread::Builder::new()
            .name("upgrade".into())
            .spawn(move || {
                let start = Instant::now();
                while !is_socket(&socket) {
                    if start.elapsed() > SOCKET_WAIT {
                        tracing::error!("upgrade: {} never appeared", socket.display());
                        std::process::exit(1);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                match admin_call(admin, "POST", "/upgrade") {
                    Ok((202, _)) => {
                        tracing::info!("upgrade: the old gateway is sending its sockets")
                    }
                    Ok((status, body)) => {
                        tracing::error!(
                            "upgrade refused by the gateway on {admin} ({status}): {}",
                            body.trim()
                        );
                        std::process::exit(1);
                    }
                    Err(e) => {
                        tracing::error!("upgrade: POST http://{admin}/upgrade: {e}");
                        std::process::exit(1);
                    }
                }
            })?;
        Ok(())
    }
}

fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false)
}

/// SIGUSR2 (`systemctl kill -s USR2 --kill-whom=main`): start the successor ourselves,
/// as `gateway upgrade --config <our config>`, so that it runs inside the same service
/// (cgroup, user, environment, journal). It tells systemd it is the main process once
/// ready ([`notify_systemd`]). Not waited for: it outlives us.
pub fn spawn_successor(config: &Path) {
    // argv[0], not /proc/self/exe: after the binary was replaced on disk, that one is
    // still the old, deleted file.
    let Some(exe) = std::env::args_os().next() else {
        tracing::error!("upgrade: cannot tell how this binary was started");
        return;
    };
    match std::process::Command::new(&exe)
        .arg("upgrade")
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .spawn()
    {
        Ok(child) => tracing::info!(
            pid = child.id(),
            "SIGUSR2: started {} upgrade --config {}",
            exe.to_string_lossy(),
            config.display()
        ),
        Err(e) => tracing::error!("SIGUSR2: cannot start {}: {e}", exe.to_string_lossy()),
    }
}

/// systemd's readiness protocol (`Type=notify`, `NotifyAccess=all`): `READY=1` with our
/// pid as `MAINPID`, so after an upgrade systemd follows the new process. Nothing when
/// not started by systemd.
pub fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let msg = format!("{state}\nMAINPID={}\n", std::process::id());
    let sent = UnixDatagram::unbound().and_then(|sock| match path.as_bytes() {
        [b'@', name @ ..] => {
            let addr = SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(msg.as_bytes(), &addr)
        }
        _ => sock.send_to(msg.as_bytes(), &path),
    });
    if let Err(e) = sent {
        tracing::warn!("NOTIFY_SOCKET {}: {e}", path.to_string_lossy());
    }
}

/// `conf` with another upgrade socket (Pingora's `ServerConf` has no `Clone`).
pub fn with_upgrade_socket(
    conf: &pingora_core::server::configuration::ServerConf,
    path: &Path,
) -> anyhow::Result<pingora_core::server::configuration::ServerConf> {
    let mut v = serde_json::to_value(conf)?;
    v["upgrade_sock"] = path.display().to_string().into();
    Ok(serde_json::from_value(v)?)
}

/// Bind the admin address, waiting for the old process to release it.
pub fn bind_admin(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let start = Instant::now();
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && start.elapsed() < ADMIN_PORT_WAIT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// One HTTP/1.1 request to an admin listener: status and body. The admin answers with
/// a `Content-Length` and closes when asked to, so reading to the end is the whole answer.
fn admin_call(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
