//! Child processes that cannot outlive the test that started them.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::time::{sleep, Instant};

/// A spawned child process, killed (SIGKILL) and reaped on drop. Its stdout and stderr
/// both go to one log file in a temporary directory that lives as long as the `Proc`.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    name: String,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Spawn `cmd` with stdin closed and its output going to the log. `name` labels the
    /// log file and error messages.
    pub fn spawn(mut cmd: Command, name: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .context("creating a temp dir for the process log")?;
        let log_path = dir.path().join(format!("{name}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating the log file handle")?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        Ok(Self {
            child,
            name: name.to_owned(),
            log_path,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// SIGKILL and reap. Fine to call on a process that already exited.
    pub fn kill(&mut self) {
        if self.is_running() {
            // Fails only if it exited in between; the wait below reaps it either way.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Send a signal by name (`TERM`, `STOP`, `CONT`, `HUP`, …) with the `kill` command.
    pub fn signal(&mut self, sig: &str) -> anyhow::Result<()> {
        if !self.is_running() {
            bail!("{}: cannot send SIG{sig}: it already exited", self.name);
        }
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("{}: kill -{sig} {} failed: {status}", self.name, self.pid());
        }
        Ok(())
    }

    /// Wait up to `timeout` for the process to exit. `Some(code)` for a normal exit,
    /// `None` when a signal ended it; an error (with the log) if it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the child")? {
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} (pid {}) still running after {timeout:?}; log:\n{}",
                    self.name,
                    self.pid(),
                    self.log()
                );
            }
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// True until the process has exited (a stopped process is still running).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        match std::fs::read(&self.log_path) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log_path.display()),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
