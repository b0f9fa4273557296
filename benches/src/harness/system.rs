//! What a run needs from the machine: a fresh state directory, CPU time and peak RSS
//! from the kernel, and progress bars on stderr.

use super::BenchOptions;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use projector_engine::Shared;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A state directory: temporary (removed when dropped) or kept.
pub(super) struct StateDir {
    path: PathBuf,
    remove: bool,
}

impl StateDir {
    pub(super) fn temporary(name: &str) -> Result<StateDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = std::env::temp_dir().join(format!(
            "projector-bench-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(StateDir { path, remove: true })
    }

    pub(super) fn keep(path: PathBuf) -> StateDir {
        StateDir {
            path,
            remove: false,
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// (user, system) CPU seconds of this process so far.
pub(super) fn cpu_times() -> Result<(f64, f64)> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok((secs(u.user_time()), secs(u.system_time())))
}

/// Resets the kernel's peak-RSS mark of this process (Linux: `5` to
/// `/proc/self/clear_refs`) and returns the current RSS in bytes (0 where unknown).
pub(super) fn reset_peak_rss() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    proc_status_kb("VmRSS:") * 1024
}

/// Peak RSS since the last reset, in bytes (0 where unknown).
pub(super) fn peak_rss() -> u64 {
    proc_status_kb("VmHWM:") * 1024
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

pub(super) fn bar(visible: bool, len: Option<u64>, label: &str) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>28} [{bar:30}] {human_pos}/{human_len} events · {per_sec} · {elapsed}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

pub(super) struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    pub(super) fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A progress bar over the events read, refreshed from the counters.
pub(super) fn watch_progress(
    visible: bool,
    shared: &Arc<Shared>,
    total: u64,
    label: &str,
) -> Watch {
    let stop = Arc::new(AtomicBool::new(false));
    if !visible {
        return Watch { stop, thread: None };
    }
    let b = bar(true, Some(total), label);
    let (flag, shared) = (stop.clone(), shared.clone());
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            b.set_position(shared.counters.read.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
        b.finish_and_clear();
    });
    Watch {
        stop,
        thread: Some(thread),
    }
}

pub(super) fn note(options: &BenchOptions, line: &str) {
    if options.progress {
        eprintln!("{line}");
    }
}
