//! `Gateway` and `Sidecar`: real proxy processes with a config written to a temp dir,
//! on ports picked at run time, with their admin endpoints one call away.
//!
//! Configs are written with `${NAME}` placeholders the helper fills in: `${ADMIN}`
//! always, `${LISTEN}` for the gateway, and whatever the test passes for the sidecar.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::bins::bin_path;
use crate::poll::test_client;
use crate::ports::free_addr;
use crate::process::Proc;

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A running proxy binary (gateway or sidecar) with its config in a temp dir and its
/// admin endpoints one call away.
pub struct ProxyProc {
    proc: Proc,
    pub admin: SocketAddr,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
    vars: Vec<(String, String)>,
}

impl ProxyProc {
    /// Write `yaml` with `${NAME}` placeholders replaced from `vars`, start `bin --config`
    /// on it and wait until `/readyz` answers 200.
    pub async fn start(
        bin: &str,
        yaml: &str,
        vars: Vec<(String, String)>,
        admin: SocketAddr,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut p = Self::launch(bin, &[], yaml, vars, admin, env)?;
        p.wait_ready().await?;
        Ok(p)
    }

    /// Start `bin ARGS... --config FILE` without waiting for it.
    fn launch(
        bin: &str,
        args: &[&str],
        yaml: &str,
        vars: Vec<(String, String)>,
        admin: SocketAddr,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{bin}-"))
            .tempdir()?;
        let config_path = dir.path().join(format!("{bin}.yaml"));
        std::fs::write(&config_path, fill(yaml, &vars))?;
        let mut cmd = Command::new(bin_path(bin)?);
        cmd.args(args).arg("--config").arg(&config_path);
        cmd.env(
            "RUST_LOG",
            std::env::var("PROXY_LOG").unwrap_or_else(|_| "info".into()),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(cmd, bin)?;
        Ok(Self {
            proc,
            admin,
            config_path,
            _dir: dir,
            client: test_client(),
            vars,
        })
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        self.wait_until_ready(false).await
    }

    /// Wait for `/readyz` 200; with `own_admin`, from this process's admin (during an
    /// upgrade the address answers for the old process until it lets go of it).
    async fn wait_until_ready(&mut self, own_admin: bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let url = self.admin_url("/readyz");
        loop {
            let ours = !own_admin
                || self
                    .admin_json("/upgrade")
                    .await
                    .is_ok_and(|v| v["pid"].as_u64() == Some(u64::from(self.proc.pid())));
            if ours {
                if let Ok(r) = self.client.get(&url).send().await {
                    if r.status() == 200 {
                        return Ok(());
                    }
                }
            }
            if !self.proc.is_running() {
                bail!(
                    "{} exited during startup:\n{}",
                    self.proc.name(),
                    self.proc.log()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} not ready after {READY_TIMEOUT:?}:\n{}",
                    self.proc.name(),
                    self.proc.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Replace the config file atomically (write + rename, as editors and kubelet do),
    /// with the same placeholders filled in.
    pub fn write_config(&self, yaml: &str) -> anyhow::Result<()> {
        let tmp = self.config_path.with_extension("yaml.tmp");
        std::fs::write(&tmp, fill(yaml, &self.vars))?;
        std::fs::rename(&tmp, &self.config_path)?;
        Ok(())
    }

    /// `POST /reload`: status and JSON body.
    pub async fn reload(&self) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = self.client.post(self.admin_url("/reload")).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await?))
    }

    pub async fn admin_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let r = self.client.get(self.admin_url(path)).send().await?;
        r.json().await.context("admin endpoint did not answer JSON")
    }

    /// Sum of the samples of metric `name` whose labels include every `labels` pair.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        let text = self
            .client
            .get(self.admin_url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        Ok(sum_metric(&text, name, labels))
    }
}

/// A gateway process. Configs use `${LISTEN}` (traffic listener) and `${ADMIN}`.
pub struct Gateway {
    inner: ProxyProc,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

impl Gateway {
    pub async fn start(yaml: &str) -> anyhow::Result<Self> {
        Self::start_with_env(yaml, &[]).await
    }

    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let listen = free_addr("127.0.0.1");
        let admin = free_addr("127.0.0.1");
        let vars = vec![
            ("LISTEN".to_owned(), listen.to_string()),
            ("ADMIN".to_owned(), admin.to_string()),
        ];
        let inner = ProxyProc::start("gateway", yaml, vars, admin, env).await?;
        Ok(Self {
            inner,
            listen,
            admin,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    /// `gateway upgrade --config` with `yaml` (same `${LISTEN}` and `${ADMIN}`, plus
    /// `extra` placeholders): returns the new process once it took the sockets over and
    /// its own admin reports ready. The old one (`self`) drains and exits by itself.
    pub async fn upgrade(&self, yaml: &str, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut vars = vec![
            ("LISTEN".to_owned(), self.listen.to_string()),
            ("ADMIN".to_owned(), self.admin.to_string()),
        ];
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let mut inner = ProxyProc::launch("gateway", &["upgrade"], yaml, vars, self.admin, &[])?;
        inner.wait_until_ready(true).await?;
        Ok(Self {
            inner,
            listen: self.listen,
            admin: self.admin,
        })
    }
}

impl std::ops::Deref for Gateway {
    type Target = ProxyProc;
    fn deref(&self) -> &ProxyProc {
        &self.inner
    }
}

impl std::ops::DerefMut for Gateway {
    fn deref_mut(&mut self) -> &mut ProxyProc {
        &mut self.inner
    }
}

/// A sidecar process. Configs use `${ADMIN}` and any `extra` placeholders given.
pub struct Sidecar {
    inner: ProxyProc,
    pub admin: SocketAddr,
}

impl Sidecar {
    pub async fn start(yaml: &str, extra: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_with_env(yaml, extra, &[]).await
    }

    /// [`Sidecar::start`] with environment variables (`SIDECAR_ZONE`, ...).
    pub async fn start_with_env(
        yaml: &str,
        extra: &[(&str, String)],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let admin = free_addr("127.0.0.1");
        let mut vars = vec![("ADMIN".to_owned(), admin.to_string())];
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let inner = ProxyProc::start("sidecar", yaml, vars, admin, env).await?;
        Ok(Self { inner, admin })
    }
}

impl std::ops::Deref for Sidecar {
    type Target = ProxyProc;
    fn deref(&self) -> &ProxyProc {
        &self.inner
    }
}

impl std::ops::DerefMut for Sidecar {
    fn deref_mut(&mut self) -> &mut ProxyProc {
        &mut self.inner
    }
}

fn fill(yaml: &str, vars: &[(String, String)]) -> String {
    vars.iter().fold(yaml.to_owned(), |y, (k, v)| {
        y.replace(&format!("${{{k}}}"), v)
    })
}

/// Sum the samples of `name` (exact family name) whose label set contains `labels`.
pub fn sum_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (family, label_str) = match series.split_once('{') {
                Some((f, rest)) => (f, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if family != name {
                return None;
            }
            let ok = labels
                .iter()
                .all(|(k, v)| label_str.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_match_labels() {
        let text = "# HELP x\nreq_total{route=\"a\",status=\"2xx\"} 3\nreq_total{route=\"b\",status=\"2xx\"} 4\nreq_total{route=\"a\",status=\"5xx\"} 1\nother 9\n";
        assert_eq!(sum_metric(text, "req_total", &[]), 8.0);
        assert_eq!(sum_metric(text, "req_total", &[("route", "a")]), 4.0);
        assert_eq!(sum_metric(text, "req_total", &[("status", "2xx")]), 7.0);
        assert_eq!(sum_metric(text, "other", &[]), 9.0);
    }
}
