//! Watch a config file and call back, debounced, when it may have changed.
//!
//! Editors and orchestrators change files in many ways: write in place, truncate then
//! write, write a temp file and rename it over, and Kubernetes ConfigMap/Secret volumes
//! swap a `..data` symlink. Watching the file itself misses the rename and symlink
//! cases, so we watch its directory, filter to events that can affect the file, and wait
//! for a quiet period before calling back. The callback should compare content (e.g. a
//! fingerprint) and do nothing when it did not change.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

/// Keeps the watch alive; dropping it stops watching.
pub struct WatchHandle {
    _watcher: notify::RecommendedWatcher,
}

/// Watch `file` and call `on_change` after `debounce` of quiet following a relevant event.
pub fn watch_file<F>(file: &Path, debounce: Duration, on_change: F) -> notify::Result<WatchHandle>
where
    F: Fn() + Send + 'static,
{
    let file = absolute(file);
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    // If the file is a symlink to another directory (not the Kubernetes layout, where
    // the link target is inside the same directory), watch the target's directory too.
    let target_dir = std::fs::canonicalize(&file)
        .ok()
        .and_then(|t| t.parent().map(Path::to_path_buf))
        .filter(|d| *d != dir && !d.starts_with(&dir));
    let target_name = std::fs::canonicalize(&file)
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_os_string()));

    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if event.kind.is_access() {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            p.file_name().is_some_and(|n| {
                *n == *name
                    || target_name.as_deref() == Some(n)
                    || n.to_string_lossy().starts_with("..")
            })
        });
        if relevant {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    if let Some(t) = &target_dir {
        watcher.watch(t, RecursiveMode::NonRecursive)?;
    }

    std::thread::Builder::new()
        .name("config-watch".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // Wait for a quiet period: a burst of events is one change.
                loop {
                    match rx.recv_timeout(debounce) {
                        Ok(()) => continue,
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                on_change();
            }
        })
        .map_err(notify::Error::io)?;
    Ok(WatchHandle { _watcher: watcher })
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    fn wait_for(count: &AtomicUsize, at_least: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if count.load(Ordering::SeqCst) >= at_least {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn setup() -> (tempfile::TempDir, PathBuf, Arc<AtomicUsize>, WatchHandle) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "a: 1\n").unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let h = watch_file(&file, Duration::from_millis(100), move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        (dir, file, count, h)
    }

    #[test]
    fn in_place_write_is_seen_once() {
        let (_d, file, count, _h) = setup();
        std::fs::write(&file, "a: 2\n").unwrap();
        std::fs::write(&file, "a: 3\n").unwrap();
        assert!(wait_for(&count, 1));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            count.load(Ordering::SeqCst),
            1,
            "a burst is debounced into one"
        );
    }

    #[test]
    fn rename_over_is_seen() {
        let (d, file, count, _h) = setup();
        let tmp = d.path().join(".c.yaml.swp");
        std::fs::write(&tmp, "a: 9\n").unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert!(wait_for(&count, 1));
    }

    #[test]
    fn kubernetes_symlink_swap_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("..2026_01");
        let v2 = dir.path().join("..2026_02");
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v1.join("c.yaml"), "a: 1\n").unwrap();
        std::fs::write(v2.join("c.yaml"), "a: 2\n").unwrap();
        std::os::unix::fs::symlink("..2026_01", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/c.yaml", dir.path().join("c.yaml")).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let _h = watch_file(
            &dir.path().join("c.yaml"),
            Duration::from_millis(100),
            move || {
                c.fetch_add(1, Ordering::SeqCst);
            },
        )
        .unwrap();
        // The swap: new link, renamed over ..data (atomic, as kubelet does).
        std::os::unix::fs::symlink("..2026_02", dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        assert!(wait_for(&count, 1));
        let text = std::fs::read_to_string(dir.path().join("c.yaml")).unwrap();
        assert_eq!(text, "a: 2\n");
    }
}
