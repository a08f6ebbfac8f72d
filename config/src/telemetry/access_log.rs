//! The access log's writer: lines are formatted by the request's worker and handed
//! to a bounded queue with `try_send` (never waiting: a full queue or a slow disk drops
//! lines and counts them), and one thread writes them to stdout or a file in batches.
//! A file moved away by logrotate (or deleted) is reopened within a second.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{IntCounter, IntCounterVec};

use crate::common::telemetry::{AccessLog, LogTarget};

struct LineMetrics {
    written: IntCounter,
    dropped: IntCounter,
}

static METRICS: LazyLock<LineMetrics> = LazyLock::new(|| {
    let v: IntCounterVec = crate::metrics::counter_vec(
        "access_log_lines_total",
        "Access-log lines by fate: written, or dropped (queue full or write error)",
        &["result"],
    );
    LineMetrics {
        written: v.with_label_values(&["written"]),
        dropped: v.with_label_values(&["dropped"]),
    }
});

/// Where finished lines go. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AccessLogWriter {
    tx: SyncSender<String>,
}

impl AccessLogWriter {
    /// Open the target and start the writer thread. A file that cannot be opened is a
    /// startup error.
    pub fn spawn(cfg: &AccessLog) -> io::Result<Self> {
        LazyLock::force(&METRICS);
        let mut out = Output::open(&cfg.target)?;
        let (tx, rx) = mpsc::sync_channel::<String>(cfg.buffer_lines);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || loop {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(line) => {
                        let mut n = 0u64;
                        let mut ok = out.write_line(&line);
                        n += 1;
                        // Take what else is waiting, then flush once.
                        while let Ok(line) = rx.try_recv() {
                            ok &= out.write_line(&line);
                            n += 1;
                            if n >= 4096 {
                                break;
                            }
                        }
                        ok &= out.flush();
                        if ok {
                            METRICS.written.inc_by(n);
                        } else {
                            METRICS.dropped.inc_by(n);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => out.reopen_if_moved(),
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            })?;
        Ok(Self { tx })
    }

    /// Queue one line (without its newline); never waits.
    pub fn send(&self, line: String) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => METRICS.dropped.inc(),
        }
    }
}

enum Output {
    Stdout(BufWriter<io::Stdout>),
    File {
        path: PathBuf,
        file: BufWriter<File>,
        inode: u64,
    },
}

impl Output {
    fn open(target: &LogTarget) -> io::Result<Self> {
        match target {
            LogTarget::Stdout => Ok(Self::Stdout(BufWriter::with_capacity(
                64 * 1024,
                io::stdout(),
            ))),
            LogTarget::File(path) => {
                let (file, inode) = open_append(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("access log {}: {e}", path.display()))
                })?;
                Ok(Self::File {
                    path: path.clone(),
                    file: BufWriter::with_capacity(64 * 1024, file),
                    inode,
                })
            }
        }
    }

    fn write_line(&mut self, line: &str) -> bool {
        let w: &mut dyn Write = match self {
            Self::Stdout(w) => w,
            Self::File { file, .. } => file,
        };
        w.write_all(line.as_bytes()).is_ok() && w.write_all(b"\n").is_ok()
    }

    fn flush(&mut self) -> bool {
        let ok = match self {
            Self::Stdout(w) => w.flush().is_ok(),
            Self::File { file, .. } => file.flush().is_ok(),
        };
        if !ok {
            crate::telemetry::warn_every("access_log", format_args!("access log write failed"));
        }
        ok
    }

    fn reopen_if_moved(&mut self) {
        let Self::File { path, file, inode } = self else {
            return;
        };
        use std::os::unix::fs::MetadataExt;
        let current = std::fs::metadata(&*path).map(|m| m.ino()).ok();
        if current == Some(*inode) {
            return;
        }
        match open_append(path) {
            Ok((f, ino)) => {
                let _ = file.flush();
                *file = BufWriter::with_capacity(64 * 1024, f);
                *inode = ino;
            }
            Err(e) => crate::telemetry::warn_every(
                "access_log",
                format_args!("cannot reopen access log {}: {e}", path.display()),
            ),
        }
    }
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    use std::os::unix::fs::MetadataExt;
    let f = OpenOptions::new().create(true).append(true).open(path)?;
    let ino = f.metadata()?.ino();
    Ok((f, ino))
}

/// `2026-11-29T23:18:58.123Z`: RFC 3339 in UTC with milliseconds.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_994_338_123);
        assert_eq!(rfc3339_millis(t), "2026-11-29T23:18:58.123Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&rfc3339_millis(leap)[..10], "2000-02-29");
    }

    #[test]
    fn lines_reach_the_file_and_a_moved_file_is_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let cfg = AccessLog {
            enabled: true,
            target: LogTarget::File(path.clone()),
            sample: 1.0,
            query: false,
            buffer_lines: 16,
        };
        let w = AccessLogWriter::spawn(&cfg).unwrap();
        w.send("one".into());
        let wait_for = |p: &Path, want: &str| {
            for _ in 0..300 {
                if std::fs::read_to_string(p).is_ok_and(|s| s.contains(want)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("{want:?} never reached {}", p.display());
        };
        wait_for(&path, "one\n");
        // logrotate without copytruncate: rename, and the next lines go to a new file.
        std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
        std::thread::sleep(Duration::from_millis(1_300));
        w.send("two".into());
        wait_for(&path, "two\n");
        let old = std::fs::read_to_string(dir.path().join("access.log.1")).unwrap();
        assert_eq!(old, "one\n");
    }
}
