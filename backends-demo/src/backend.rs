//! `Backend`: a real `backend-demo` process on a port picked at run time, with its fault
//! knobs and process controls (kill, freeze, restart) one call away.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde::Deserialize;
use tokio::time::{sleep, Instant};

use crate::bins::bin_path;
use crate::poll::{client_with_timeout, error_chain};
use crate::ports::free_addr;
use crate::process::Proc;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
const READY_POLL: Duration = Duration::from_millis(20);
const KNOB_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts when the free port we picked is taken before the backend binds it.
const BIND_ATTEMPTS: usize = 3;

/// What `GET /_stats` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Stats {
    /// Normal requests received so far (not `/healthz`, not `/_…`), faulted ones included.
    pub requests: u64,
    /// Normal requests being handled right now (hung ones included).
    pub in_flight: u64,
    /// The most normal requests ever handled at once.
    pub peak_in_flight: u64,
}

/// How to start a [`Backend`]: `Backend::builder().zone("b").id("b1").ip("127.0.2.1")`.
#[derive(Debug, Clone)]
pub struct BackendBuilder {
    zone: String,
    id: Option<String>,
    ip: String,
    port: Option<u16>,
    threads: usize,
}

impl BackendBuilder {
    pub fn zone(mut self, zone: &str) -> Self {
        self.zone = zone.to_owned();
        self
    }

    /// Defaults to `<zone>-<port>`.
    pub fn id(mut self, id: &str) -> Self {
        self.id = Some(id.to_owned());
        self
    }

    /// Defaults to 127.0.0.1.
    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = ip.to_owned();
        self
    }

    /// Defaults to a free port picked at spawn time.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Worker threads of the backend (default 1: tests run many backends on few cores).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Start the process and wait until `GET /healthz` answers.
    pub async fn spawn(self) -> anyhow::Result<Backend> {
        let ip: IpAddr = self
            .ip
            .parse()
            .with_context(|| format!("backend ip {:?}", self.ip))?;
        let mut last_err = None;
        for _ in 0..BIND_ATTEMPTS {
            let addr = match self.port {
                Some(port) => SocketAddr::new(ip, port),
                None => free_addr(&self.ip),
            };
            let id = self
                .id
                .clone()
                .unwrap_or_else(|| format!("{}-{}", self.zone, addr.port()));
            let mut backend = Backend {
                proc: None,
                addr,
                zone: self.zone.clone(),
                id,
                threads: self.threads,
                client: client_with_timeout(KNOB_TIMEOUT),
            };
            match backend.start().await {
                Ok(()) => return Ok(backend),
                // Someone took the port between our look and the bind: pick another.
                Err(e) if self.port.is_none() && format!("{e:#}").contains("in use") => {
                    last_err = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("backend did not start")))
    }
}

/// A running `backend-demo` process. Killed when dropped.
#[derive(Debug)]
pub struct Backend {
    proc: Option<Proc>,
    addr: SocketAddr,
    zone: String,
    id: String,
    threads: usize,
    client: reqwest::Client,
}

impl Backend {
    pub fn builder() -> BackendBuilder {
        BackendBuilder {
            zone: "a".to_owned(),
            id: None,
            ip: "127.0.0.1".to_owned(),
            port: None,
            threads: 1,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR{path}`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn zone(&self) -> &str {
        &self.zone
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The process, for its pid, log or exit status.
    pub fn proc(&mut self) -> Option<&mut Proc> {
        self.proc.as_mut()
    }

    /// What the process wrote so far (empty before the first start).
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }

    /// True while the process has not exited (a frozen one is running).
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }

    /// SIGKILL: connections drop and the port stays closed until [`Backend::restart`].
    pub fn kill(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill();
        }
    }

    /// SIGSTOP: the port stays open and the kernel still accepts connections, but
    /// nothing answers (a hung host, unlike a dead one).
    pub fn freeze(&mut self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    /// SIGCONT: undo [`Backend::freeze`].
    pub fn thaw(&mut self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    pub fn signal(&mut self, sig: &str) -> anyhow::Result<()> {
        match self.proc.as_mut() {
            Some(p) => p.signal(sig),
            None => bail!("backend {} is not started", self.id),
        }
    }

    /// Start again on the same address (killing the old process if still running), and
    /// wait until it is ready. Knobs start fresh: healthy, no faults.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start().await
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(bin_path("backend-demo")?);
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .args(["--zone", &self.zone, "--id", &self.id])
            .arg("--threads")
            .arg(self.threads.to_string());
        let mut proc = Proc::spawn(cmd, &format!("backend-{}", self.id))?;
        let ready = self.wait_ready(&mut proc).await;
        self.proc = Some(proc);
        ready
    }

    async fn wait_ready(&self, proc: &mut Proc) -> anyhow::Result<()> {
        let url = self.url("/healthz");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let last = match self.client.get(&url).send().await {
                Ok(_) => return Ok(()),
                Err(e) => error_chain(&e),
            };
            if !proc.is_running() {
                bail!(
                    "backend {} on {} exited before it was ready; log:\n{}",
                    self.id,
                    self.addr,
                    proc.log()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "backend {} on {} not ready within {READY_TIMEOUT:?} ({last}); log:\n{}",
                    self.id,
                    self.addr,
                    proc.log()
                );
            }
            sleep(READY_POLL).await;
        }
    }

    async fn knob(&self, path_and_query: &str) -> anyhow::Result<String> {
        let url = self.url(path_and_query);
        let resp = self
            .client
            .post(&url)
            .send()
            .await
            .map_err(|e| anyhow!("POST {url}: {}", error_chain(&e)))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("POST {url}: {status}: {}", body.trim());
        }
        Ok(body)
    }

    /// `POST /_fault?{query}`, e.g. `fault("status=503&rate=0.5")`. Replaces earlier faults.
    pub async fn fault(&self, query: &str) -> anyhow::Result<()> {
        self.knob(&format!("/_fault?{query}")).await.map(drop)
    }

    /// `POST /_fault/clear`.
    pub async fn clear_fault(&self) -> anyhow::Result<()> {
        self.knob("/_fault/clear").await.map(drop)
    }

    /// `POST /_health?ok=…`: only the health check answers differently.
    pub async fn set_healthy(&self, ok: bool) -> anyhow::Result<()> {
        self.knob(&format!("/_health?ok={ok}")).await.map(drop)
    }

    /// `GET /_stats`.
    pub async fn stats(&self) -> anyhow::Result<Stats> {
        let url = self.url("/_stats");
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| anyhow!("GET {url}: {}", error_chain(&e)))?;
        resp.json()
            .await
            .map_err(|e| anyhow!("GET {url}: {}", error_chain(&e)))
    }
}
