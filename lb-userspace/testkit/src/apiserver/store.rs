//! What the stand-in stores: the objects of every [`Kind`] by key, the resourceVersion, the
//! change history that watches replay, the snapshots that paged lists continue from, and the
//! counters the tests read.
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use serde_json::Value;

/// The kinds served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Service, Kind::EndpointSlice, Kind::Node];

    pub(super) fn of(kind: &str) -> Option<Kind> {
        match kind {
            "Service" => Some(Kind::Service),
            "EndpointSlice" => Some(Kind::EndpointSlice),
            "Node" => Some(Kind::Node),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Node => "Node",
        }
    }

    pub(super) fn api_version(self) -> &'static str {
        match self {
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }

    pub(super) fn namespaced(self) -> bool {
        self != Kind::Node
    }

    /// (group prefix, plural) of its URL paths.
    pub(super) fn path(self) -> (&'static str, &'static str) {
        match self {
            Kind::Service => ("/api/v1", "services"),
            Kind::EndpointSlice => ("/apis/discovery.k8s.io/v1", "endpointslices"),
            Kind::Node => ("/api/v1", "nodes"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChangeType {
    Added,
    Modified,
    Deleted,
}

pub(super) struct Change {
    pub(super) rv: u64,
    pub(super) kind: Kind,
    pub(super) what: ChangeType,
    /// The version before the change (Modified).
    pub(super) old: Option<Arc<Value>>,
    /// The version after the change; for Deleted, the last version (with the deletion's rv).
    pub(super) new: Arc<Value>,
}

pub(super) type Key = (Kind, String, String);

/// Every object of one kind as of one resourceVersion, in key order: what the later pages of
/// a paged list are served from.
pub(super) type Snapshot = Arc<Vec<(String, Arc<Value>)>>;

/// Snapshots held at most (the oldest resourceVersion goes first); a continue token of one
/// that was dropped gets 410 Gone, as one of a compacted resourceVersion does.
const MAX_SNAPSHOTS: usize = 16;

#[derive(Default)]
pub(super) struct State {
    pub(super) rv: u64,
    pub(super) objects: BTreeMap<Key, Arc<Value>>,
    /// Snapshots of paged lists, by (kind, resourceVersion).
    pub(super) snapshots: BTreeMap<(u64, Kind), Snapshot>,
    pub(super) history: Vec<Change>,
    /// Watches from a resourceVersion below this get 410 Gone.
    pub(super) compacted: u64,
    /// Bumped by `expire_watches`: open watches end with 410 Gone.
    pub(super) expire_epoch: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    /// List requests without `continue` (each starts a list).
    pub(super) lists: [AtomicUsize; 3],
    /// List responses with items (first and continued pages).
    pub(super) list_pages: [AtomicUsize; 3],
    /// The largest number of items in one list response.
    pub(super) max_page_items: [AtomicUsize; 3],
    /// Continue tokens answered with 410 Gone.
    pub(super) expired_continues: AtomicUsize,
    pub(super) watches: [AtomicUsize; 3],
    pub(super) gone: AtomicUsize,
    /// Requests answered 401 Unauthorized (HTTPS mode: no or a wrong bearer token).
    pub(super) unauthorized: AtomicUsize,
    /// (labelSelector, fieldSelector) of every list and watch request, per kind.
    pub(super) selectors: Mutex<[Vec<(String, String)>; 3]>,
}

pub(super) struct Inner {
    pub(super) state: Mutex<State>,
    pub(super) changed: Condvar,
    /// Bumped by `drop_connections` and `stop`: connection threads of an older epoch close.
    pub(super) conn_epoch: AtomicU64,
    /// Open connections by id (clones, to shut them down).
    pub(super) conns: Mutex<BTreeMap<u64, TcpStream>>,
    pub(super) next_conn: AtomicU64,
    pub(super) counters: Counters,
}

impl Inner {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    pub(super) fn compact(&mut self) {
        self.compacted = self.rv;
        self.history.clear();
        let compacted = self.compacted;
        self.snapshots.retain(|(rv, _), _| *rv >= compacted);
    }

    /// Every object of `kind` now, in key order (`namespace/name`, as etcd orders them).
    pub(super) fn snapshot(&self, kind: Kind) -> Snapshot {
        if let Some(s) = self.snapshots.get(&(self.rv, kind)) {
            return s.clone();
        }
        let mut items: Vec<(String, Arc<Value>)> = self
            .objects
            .range((kind, String::new(), String::new())..)
            .take_while(|((k, _, _), _)| *k == kind)
            .map(|((_, ns, name), o)| (etcd_key(ns, name), o.clone()))
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Arc::new(items)
    }

    /// Holds `snap` (of `kind` at `rv`) for the continued pages of a list.
    pub(super) fn keep_snapshot(&mut self, kind: Kind, rv: u64, snap: Snapshot) {
        if rv < self.compacted {
            return;
        }
        self.snapshots.insert((rv, kind), snap);
        while self.snapshots.len() > MAX_SNAPSHOTS {
            self.snapshots.pop_first();
        }
    }
}

/// The key an object has in etcd below its kind's prefix: lists are in this order.
fn etcd_key(ns: &str, name: &str) -> String {
    match ns.is_empty() {
        true => name.to_string(),
        false => format!("{ns}/{name}"),
    }
}
