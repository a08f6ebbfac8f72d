//! The topology `gameday.sh up` brought up, as it wrote it down in `topology.env`, and
//! its fault hooks (`gameday.sh hook RUN_DIR ACTION ...`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::schedule::Zone;

#[derive(Debug, Clone)]
pub struct Gw {
    pub zone: String,
    /// Traffic listener, `IP:PORT`.
    pub addr: String,
    /// Admin listener (`/readyz`, the NLB's health check).
    pub admin: String,
}

#[derive(Debug, Clone)]
pub struct Topology {
    pub run_dir: PathBuf,
    /// `netns` or `loopback` (no network cuts).
    pub mode: String,
    script: PathBuf,
    pub gateways: Vec<Gw>,
    backends: HashMap<String, Vec<String>>,
}

impl Topology {
    pub fn load(run_dir: &Path) -> anyhow::Result<Self> {
        let path = run_dir.join("topology.env");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (run `gameday.sh up` first)", path.display()))?;
        let vars: HashMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        let get = |k: &str| {
            vars.get(k)
                .map(|v| (*v).to_owned())
                .with_context(|| format!("{}: no {k}", path.display()))
        };
        let mut gateways = Vec::new();
        let mut backends = HashMap::new();
        for z in ["a", "b", "c"] {
            gateways.push(Gw {
                zone: z.to_owned(),
                addr: get(&format!("GW_{z}"))?,
                admin: get(&format!("GW_ADMIN_{z}"))?,
            });
            let list = get(&format!("BACKENDS_{z}"))?;
            backends.insert(
                z.to_owned(),
                list.split_whitespace().map(str::to_owned).collect(),
            );
        }
        Ok(Topology {
            run_dir: run_dir.to_path_buf(),
            mode: get("MODE")?,
            script: PathBuf::from(get("SCRIPT")?),
            gateways,
            backends,
        })
    }

    /// The fault-knob addresses of a zone's backends.
    pub fn backends(&self, zone: Zone) -> &[String] {
        self.backends
            .get(zone.letter())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn netns(&self) -> bool {
        self.mode == "netns"
    }

    /// Run `gameday.sh hook RUN_DIR ACTION ARGS...`; an error carries what it printed.
    pub async fn hook(&self, action: &str, args: &[&str]) -> anyhow::Result<()> {
        let out = tokio::process::Command::new("bash")
            .arg(&self.script)
            .arg("hook")
            .arg(&self.run_dir)
            .arg(action)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .context("running gameday.sh hook")?;
        if !out.status.success() {
            bail!(
                "hook {action} {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(())
    }
}
