//! The epoch timer: cuts an epoch every `publish_interval`, one epoch in flight.

use super::ingest::Ingress;
use super::pipeline::Shared;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The longest the epoch timer holds a cut back while the previous epoch is not yet
/// published.
const MAX_EPOCH_WAIT: Duration = Duration::from_secs(10);

/// Cuts an epoch every `interval` while the input moves (or a checkpoint is due).
pub(super) fn timer_loop(interval: Duration, ingress: &Mutex<Ingress>, shared: &Shared) {
    let mut last_cut = Instant::now();
    loop {
        std::thread::park_timeout(interval);
        if shared.stop.load(Ordering::Relaxed) || shared.fatal().is_some() {
            return;
        }
        {
            let mut ing = ingress.lock().expect("ingress lock");
            // Checked again under the lock: the ingest thread may have failed while this
            // thread waited for it, leaving offsets past records it never applied.
            if ing.finished || shared.fatal().is_some() || shared.stop.load(Ordering::Relaxed) {
                return;
            }
            // One epoch in flight: while the last one is still being built (a large
            // view rebuilding its chunks), the next cut waits, so epochs come as often
            // as `interval` allows and no more often than they can be published.
            // Bounded, so that an epoch that is never published cannot stop the cuts.
            let in_flight = shared.progress.get().epoch < ing.epoch;
            if in_flight && !ing.force && last_cut.elapsed() < MAX_EPOCH_WAIT {
                continue;
            }
            // Also when the input went quiet after an epoch that was not checkpointed:
            // otherwise a crash would replay it although nothing happened for long.
            let checkpoint_due = ing.uncheckpointed
                && ing
                    .checkpoint_every
                    .is_some_and(|every| ing.last_checkpoint.elapsed() >= every);
            if ing.offsets != ing.cut_offsets || ing.force || checkpoint_due {
                if ing.barrier(false, false).is_err() {
                    shared.lost_thread();
                    return;
                }
                last_cut = Instant::now();
            }
        }
        let _ = shared.bad.flush();
    }
}
