//! The access log's writer: lines are formatted by the request's worker and handed
//! to a bounded queue with `try_send` (never waiting: a full queue or a slow disk drops
//! lines and counts them), and one thread writes them to stdout or a file in batches,
//! every 20 ms.
//! A file moved away by logrotate (or deleted) is reopened within a second.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender, TryRecvError, TrySendError};
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
            .spawn(move || {
                let mut since_reopen_check = 0u32;
                loop {
                    // Lines are taken in batches every few milliseconds: a sender never
                    // has to wake this thread (one wake-up per line would cost more
                    // than formatting the line).
                    std::thread::sleep(Duration::from_millis(20));
                    let (mut n, mut ok, mut closed) = (0u64, true, false);
                    loop {
                        match rx.try_recv() {
                            Ok(line) => {
                                ok &= out.write_line(&line);
                                n += 1;
                            }
                            Err(TryRecvError::Empty) => break,
                            Err(TryRecvError::Disconnected) => {
                                closed = true;
                                break;
                            }
                        }
                    }
                    if n > 0 {
                        ok &= out.flush();
                        if ok {
                            METRICS.written.inc_by(n);
                        } else {
                            METRICS.dropped.inc_by(n);
                        }
                    }
                    if closed {
                        return;
                    }
                    since_reopen_check += 1;
                    if since_reopen_check >= 50 {
                        since_reopen_check = 0;
                        out.reopen_if_moved();
                    }
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
    let mut out = String::with_capacity(24);
    write_rfc3339_millis(&mut out, t);
    out
}

/// [`rfc3339_millis`] into `out`, without allocating or going through `fmt`.
pub fn write_rfc3339_millis(out: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u64);
    put(5, 2, u64::from(m));
    put(8, 2, u64::from(day));
    put(11, 2, rem / 3600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    put(20, 3, u64::from(d.subsec_millis()));
    out.push_str(std::str::from_utf8(&b).unwrap_or("1970-01-01T00:00:00.000Z"));
}

/// Decimal digits of `v` into `out`, without going through `fmt`.
fn push_u64(out: &mut String, mut v: u64) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&b[i..]).unwrap_or("0"));
}

/// One JSON object, written straight into a `String` (an access-log line is built for
/// every logged request: no intermediate values, one allocation). Keys are ours and
/// need no escaping; string values are escaped.
pub struct JsonLine {
    buf: String,
}

impl Default for JsonLine {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonLine {
    pub fn new() -> Self {
        let mut buf = String::with_capacity(512);
        buf.push('{');
        Self { buf }
    }

    fn key(&mut self, k: &str) {
        if self.buf.len() > 1 {
            self.buf.push(',');
        }
        self.buf.push('"');
        self.buf.push_str(k);
        self.buf.push_str("\":");
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        push_json_string(&mut self.buf, v);
        self
    }

    /// A string value from bytes (a header value): invalid UTF-8 is replaced.
    pub fn bytes(&mut self, k: &str, v: &[u8]) -> &mut Self {
        match std::str::from_utf8(v) {
            Ok(s) => self.str(k, s),
            Err(_) => self.str(k, &String::from_utf8_lossy(v)),
        }
    }

    pub fn opt_str(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        if let Some(v) = v {
            self.str(k, v);
        }
        self
    }

    /// A value written with `Display` that needs no escaping (addresses, numbers).
    pub fn display(&mut self, k: &str, v: impl std::fmt::Display) -> &mut Self {
        use std::fmt::Write;
        self.key(k);
        self.buf.push('"');
        let _ = write!(self.buf, "{v}");
        self.buf.push('"');
        self
    }

    pub fn uint(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        push_u64(&mut self.buf, v);
        self
    }

    /// Milliseconds with microsecond precision.
    pub fn millis(&mut self, k: &str, d: std::time::Duration) -> &mut Self {
        self.key(k);
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        push_u64(&mut self.buf, us / 1000);
        let frac = us % 1000;
        self.buf.push('.');
        self.buf.push_str(if frac < 10 {
            "00"
        } else if frac < 100 {
            "0"
        } else {
            ""
        });
        push_u64(&mut self.buf, frac);
        self
    }

    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.buf.push_str(if v { "true" } else { "false" });
        self
    }

    pub fn time(&mut self, k: &str, t: SystemTime) -> &mut Self {
        self.key(k);
        self.buf.push('"');
        write_rfc3339_millis(&mut self.buf, t);
        self.buf.push('"');
        self
    }

    pub fn finish(mut self) -> String {
        self.buf.push('}');
        self.buf
    }
}

/// `v` as a JSON string (quotes included).
fn push_json_string(out: &mut String, v: &str) {
    out.push('"');
    let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    if !v.bytes().any(needs) {
        out.push_str(v);
    } else {
        for c in v.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    use std::fmt::Write;
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
    }
    out.push('"');
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
    fn json_lines_are_valid_json_whatever_the_values() {
        let mut l = JsonLine::new();
        l.str("path", "/a\"b\\c\nd\u{1}é")
            .uint("status", 200)
            .bool("cross_zone", true)
            .millis("duration_ms", Duration::from_micros(1_234_567))
            .millis("short", Duration::from_micros(5_007))
            .uint("zero", 0)
            .display("client", std::net::IpAddr::from([10, 0, 0, 1]))
            .bytes("id", b"\xffab")
            .opt_str("absent", None)
            .time("time", UNIX_EPOCH);
        let line = l.finish();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\nd\u{1}é");
        assert_eq!(v["status"], 200);
        assert_eq!(v["cross_zone"], true);
        assert_eq!(v["duration_ms"], 1234.567);
        assert_eq!(v["short"], 5.007);
        assert_eq!(v["zero"], 0);
        assert_eq!(v["client"], "10.0.0.1");
        assert_eq!(v["id"], "\u{fffd}ab");
        assert!(v.get("absent").is_none());
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
    }

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
