//! `Gateway`: a real `gateway` process with a config written to a temp dir, on ports
//! picked at run time, with its admin endpoints one call away.
//!
//! Configs are written with placeholders the helper fills in: `${LISTEN}` (the traffic
//! listener) and `${ADMIN}` (the admin listener).

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

pub struct Gateway {
    proc: Proc,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
    client: reqwest::Client,
}

impl Gateway {
    /// Write `yaml` (with `${LISTEN}`/`${ADMIN}` placeholders), start the gateway on it and
    /// wait until `/readyz` answers 200.
    pub async fn start(yaml: &str) -> anyhow::Result<Self> {
        Self::start_with_env(yaml, &[]).await
    }

    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("gateway-").tempdir()?;
        let listen = free_addr("127.0.0.1");
        let admin = free_addr("127.0.0.1");
        let config_path = dir.path().join("gateway.yaml");
        std::fs::write(&config_path, fill(yaml, listen, admin))?;
        let mut cmd = Command::new(bin_path("gateway")?);
        cmd.arg("--config").arg(&config_path);
        cmd.env(
            "RUST_LOG",
            std::env::var("GATEWAY_LOG").unwrap_or_else(|_| "info".into()),
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn(cmd, "gateway")?;
        let mut gw = Self {
            proc,
            listen,
            admin,
            config_path,
            _dir: dir,
            client: test_client(),
        };
        gw.wait_ready().await?;
        Ok(gw)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let url = self.admin_url("/readyz");
        loop {
            if let Ok(r) = self.client.get(&url).send().await {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if !self.proc.is_running() {
                bail!("gateway exited during startup:\n{}", self.proc.log());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "gateway not ready after {READY_TIMEOUT:?}:\n{}",
                    self.proc.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
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

    /// Replace the config file atomically (write + rename, as editors and kubelet do).
    pub fn write_config(&self, yaml: &str) -> anyhow::Result<()> {
        let tmp = self.config_path.with_extension("yaml.tmp");
        std::fs::write(&tmp, fill(yaml, self.listen, self.admin))?;
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

fn fill(yaml: &str, listen: SocketAddr, admin: SocketAddr) -> String {
    yaml.replace("${LISTEN}", &listen.to_string())
        .replace("${ADMIN}", &admin.to_string())
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
