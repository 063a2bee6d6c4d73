//! The one id allocator of the full plan and the incremental planner, for service ids and
//! backend ids alike.
use std::collections::BTreeSet;

/// Ids from 1 (0 means "none" in the datapath) up to `max` (exclusive), the lowest free one
/// first: the free ids below `high` (one past the highest id ever in use) are kept in a set,
/// every id from `high` up is free, so an allocation never scans the ids in use. Ids in use at
/// or above `max` (in maps written by something else) are never handed out.
///
/// An id is free again only once released: the planners release the ids a plan frees at its
/// end, so the old owner of an id, which the datapath may still see until the end of the
/// plan, never shares it with a new one within the plan.
#[derive(Debug)]
pub(super) struct IdPool {
    free: BTreeSet<u32>,
    high: u32,
    max: u32,
}

impl IdPool {
    /// The ids not in `used`, below `max`.
    pub(super) fn new(used: impl IntoIterator<Item = u32>, max: u32) -> Self {
        let used: BTreeSet<u32> = used.into_iter().collect();
        let high = used.last().map_or(1, |h| h + 1);
        IdPool {
            free: (1..high.min(max)).filter(|id| !used.contains(id)).collect(),
            high,
            max,
        }
    }

    /// The lowest free id, or None when all ids below `max` are in use.
    pub(super) fn alloc(&mut self) -> Option<u32> {
        if let Some(id) = self.free.pop_first() {
            return Some(id);
        }
        (self.high < self.max).then(|| {
            self.high += 1;
            self.high - 1
        })
    }

    /// `id` is free again (for the next plan).
    pub(super) fn release(&mut self, id: u32) {
        if id < self.max {
            self.free.insert(id);
        }
    }
}
