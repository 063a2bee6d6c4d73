//! The agent's resyncs: the periodic read of the maps, on a thread of its own with handles of
//! its own so that the loop keeps serving events meanwhile, and the repair of what drifted.
use std::{path::Path, time::Instant};

use anyhow::{anyhow, Result};
use tokio::sync::oneshot;

use super::sync::write;
use super::LOG;
use crate::{
    datapath::Maps,
    metrics::METRICS,
    reconcile::{self, MapState, ReadBack, Touched},
};

/// A resync's read of the maps ([`Maps::read_back`]), on a thread of its own with handles of
/// its own, so that the loop keeps serving events meanwhile.
pub(super) struct Reading {
    started: Instant,
    result: oneshot::Receiver<Result<ReadBack>>,
    /// What the loop wrote since the read started: [`reconcile::repair`] leaves it out.
    pub(super) touched: Touched,
}

impl Reading {
    pub(super) fn start(bpf_root: &Path) -> Reading {
        let (tx, result) = oneshot::channel();
        let root = bpf_root.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("podlb-resync".into())
            .spawn(move || {
                // Background work: the loop (and the sources) come first for the CPU.
                // SAFETY: setpriority on this thread's own id, no pointers.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
                let _ = tx.send(Maps::read_back(&root));
            });
        // Without a thread the sender is gone and the read ends at once, with an error.
        if let Err(e) = spawned {
            tracing::error!(target: LOG, "resync: cannot start the read: {e}");
        }
        Reading {
            started: Instant::now(),
            result,
            touched: Touched::default(),
        }
    }
}

/// The end of the read in flight (never, if there is none).
pub(super) async fn read_done(reading: &mut Option<Reading>) -> Result<ReadBack> {
    match reading {
        Some(r) => (&mut r.result)
            .await
            .unwrap_or_else(|_| Err(anyhow!("the read ended without a result"))),
        None => std::future::pending().await,
    }
}

/// Ends a resync: compares the maps as read with the mirror and writes back what differs
/// (entries changed behind the agent's back), leaving out what the loop wrote meanwhile.
pub(super) fn finish(maps: &mut Maps, mirror: &MapState, r: Reading, read: Result<ReadBack>) {
    let start = Instant::now();
    let read_us = (start - r.started).as_micros() as u64;
    let read = match read {
        Ok(read) => read,
        Err(e) => {
            tracing::error!(target: LOG, "resync: cannot read the maps: {e:#}");
            METRICS.synced();
            return;
        }
    };
    let ops = reconcile::repair(mirror, &read, &r.touched);
    drop(read);
    let compared = Instant::now();
    let written = write(maps, &ops, None);
    let done = Instant::now();
    METRICS.drift_repairs.add(written as u64);
    METRICS.map_writes.add(written as u64);
    METRICS.sync_duration.observe(done - start);
    METRICS.syncs.inc();
    if written == ops.len() {
        METRICS.synced();
    }
    // The time the loop spent: comparing (with freeing the read-back) and writing.
    let compare_us = (compared - start).as_micros() as u64;
    let write_us = (done - compared).as_micros() as u64;
    if written > 0 {
        tracing::warn!(
            target: LOG,
            repairs = written,
            read_us,
            compare_us,
            write_us,
            "repaired map entries changed behind the agent's back"
        );
    } else {
        tracing::debug!(target: LOG, read_us, compare_us, "resync: the maps match the mirror");
    }
}
