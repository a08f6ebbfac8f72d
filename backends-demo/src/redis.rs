//! A real `redis-server` for tests, on a free loopback port, with no persistence; it
//! can be killed, frozen (SIGSTOP), thawed and started again on the same port.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::ports::free_addr;
use crate::process::Proc;

pub struct Redis {
    pub addr: SocketAddr,
    proc: Option<Proc>,
    secure: Option<Secure>,
}

/// TLS only (no plain port) and a password, as ElastiCache with in-transit encryption
/// and AUTH runs.
struct Secure {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    password: String,
}

impl Redis {
    /// Start `redis-server` (Debian's `redis-server` package; `.ci/test` installs it).
    pub async fn spawn() -> anyhow::Result<Self> {
        let mut r = Self {
            addr: free_addr("127.0.0.1"),
            proc: None,
            secure: None,
        };
        r.start().await?;
        Ok(r)
    }

    /// Start `redis-server` answering only TLS, with the certificate and key at these
    /// paths, and requiring `password`. [`Redis::url`] is then `rediss://:PASSWORD@...`.
    pub async fn spawn_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        password: &str,
    ) -> anyhow::Result<Self> {
        let mut r = Self {
            addr: free_addr("127.0.0.1"),
            proc: None,
            secure: Some(Secure {
                cert: cert.to_owned(),
                key: key.to_owned(),
                password: password.to_owned(),
            }),
        };
        r.start().await?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        match &self.secure {
            None => format!("redis://{}", self.addr),
            Some(s) => format!("rediss://:{}@{}", s.password, self.addr),
        }
    }

    async fn start(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("redis-server");
        let port = self.addr.port().to_string();
        cmd.args(["--bind", &self.addr.ip().to_string()]);
        match &self.secure {
            None => cmd.args(["--port", &port]),
            Some(s) => cmd
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(&s.cert)
                .arg("--tls-key-file")
                .arg(&s.key)
                .args(["--requirepass", &s.password]),
        };
        cmd.args(["--save", "", "--appendonly", "no", "--protected-mode", "no"]);
        let mut proc = Proc::spawn(cmd, "redis-server")
            .context("starting redis-server (apt-get install redis-server)")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(self.addr).await.is_err() {
            if !proc.is_running() {
                bail!("redis-server exited:\n{}", proc.log());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "redis-server not listening on {}:\n{}",
                    self.addr,
                    proc.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.proc = Some(proc);
        Ok(())
    }

    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Start again on the same port (after [`Redis::kill`]), empty.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start().await
    }

    pub fn freeze(&mut self) -> anyhow::Result<()> {
        self.signal("STOP")
    }

    pub fn thaw(&mut self) -> anyhow::Result<()> {
        self.signal("CONT")
    }

    fn signal(&mut self, sig: &str) -> anyhow::Result<()> {
        match self.proc.as_mut() {
            Some(p) => p.signal(sig),
            None => bail!("redis-server is not running"),
        }
    }
}

/// A real Redis Cluster for tests: `n` masters (no replicas) on free loopback ports,
/// joined with `redis-cli --cluster create`, each node a `redis-server` process.
pub struct RedisCluster {
    pub nodes: Vec<SocketAddr>,
    procs: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn spawn(n: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut nodes = Vec::new();
        let mut procs = Vec::new();
        for i in 0..n {
            // The node's cluster bus listens at port + 10000.
            let addr = crate::ports::free_addr_with("127.0.0.1", 10_000);
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir)?;
            let mut cmd = Command::new("redis-server");
            cmd.current_dir(&node_dir).args([
                "--bind",
                "127.0.0.1",
                "--port",
                &addr.port().to_string(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ]);
            procs.push(Proc::spawn(cmd, "redis-cluster-node").context("starting redis-server")?);
            nodes.push(addr);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for (a, p) in nodes.iter().zip(procs.iter_mut()) {
            while tokio::net::TcpStream::connect(a).await.is_err() {
                if tokio::time::Instant::now() > deadline {
                    bail!(
                        "redis cluster node {a} not listening (running: {}); its log:\n{}",
                        p.is_running(),
                        p.log()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(ToString::to_string))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .context("redis-cli --cluster create (Debian's redis-tools)")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let cluster = Self {
            nodes,
            procs,
            _dir: dir,
        };
        // Every node must agree the cluster is up before it serves keys.
        for a in &cluster.nodes {
            while !cluster
                .cli(*a, &["cluster", "info"])?
                .contains("cluster_state:ok")
            {
                if tokio::time::Instant::now() > deadline + Duration::from_secs(10) {
                    bail!("redis cluster not ok on {a}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(cluster)
    }

    /// `redis://` of the first node (a client discovers the others).
    pub fn url(&self) -> String {
        format!("redis://{}", self.nodes[0])
    }

    /// Keys held by each node.
    pub fn keys_per_node(&self) -> anyhow::Result<Vec<u64>> {
        self.nodes
            .iter()
            .map(|a| {
                let out = self.cli(*a, &["dbsize"])?;
                out.trim().parse().context("dbsize")
            })
            .collect()
    }

    fn cli(&self, node: SocketAddr, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &node.port().to_string()])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
    }
}
