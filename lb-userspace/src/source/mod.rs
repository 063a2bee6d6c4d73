//! The sources of Kubernetes objects and what the agent loop needs from one: the [`Source`]
//! trait, with the current (Services, EndpointSlices, Nodes) as [`Objects`], which of them
//! changed since the last poll ([`Update`], [`Delta`], [`ChangedKeys`]), and a way to be woken
//! up when they may have.
//!
//! Two sources implement it: [`ManifestSource`] ([`manifests`]: a directory of YAML files,
//! watched with inotify by [`dirwatch`] and polled) and [`KubeSource`] ([`kube`](self::kube): watchers on
//! the API server, pushed). The model and the reconciler cannot tell them apart. Objects are
//! shared (`Arc`) between the source, its snapshots and the model, never copied.
pub mod dirwatch;
pub mod kube;
pub mod manifests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use tokio::sync::Notify;

use crate::objects::{ServiceObj, SliceObj};

pub use self::kube::KubeSource;
pub use self::manifests::ManifestSource;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    pub services: Vec<Arc<ServiceObj>>,
    pub slices: Vec<Arc<SliceObj>>,
    pub nodes: Vec<Arc<Node>>,
}

impl Objects {
    fn append(&mut self, other: &Objects) {
        self.services.extend_from_slice(&other.services);
        self.slices.extend_from_slice(&other.slices);
        self.nodes.extend_from_slice(&other.nodes);
    }

    /// The keys ("namespace/name") of every object.
    fn keys(&self, into: &mut ChangedKeys) {
        into.services.extend(self.services.iter().map(|s| s.key()));
        into.slices.extend(self.slices.iter().map(|s| s.key()));
        into.nodes |= !self.nodes.is_empty();
    }

    /// The objects with the changed keys, in order (an empty list for a key that is gone).
    pub fn select(&self, keys: &ChangedKeys) -> Delta {
        let mut delta = Delta::default();
        for k in &keys.services {
            delta.services.insert(k.clone(), Vec::new());
        }
        for k in &keys.slices {
            delta.slices.insert(k.clone(), Vec::new());
        }
        for s in &self.services {
            if let Some(v) = delta.services.get_mut(&s.key()) {
                v.push(s.clone());
            }
        }
        for s in &self.slices {
            if let Some(v) = delta.slices.get_mut(&s.key()) {
                v.push(s.clone());
            }
        }
        if keys.nodes {
            delta.nodes = Some(self.nodes.clone());
        }
        delta
    }
}

/// The keys of the objects that may have changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangedKeys {
    pub services: BTreeSet<String>,
    pub slices: BTreeSet<String>,
    /// Any Node.
    pub nodes: bool,
}

impl ChangedKeys {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.slices.is_empty() && !self.nodes
    }
}

/// The objects that changed, by key ("namespace/name"): each key with the objects that now
/// have it (none: deleted; several only with duplicate manifests).
#[derive(Debug, Default)]
pub struct Delta {
    pub services: BTreeMap<String, Vec<Arc<ServiceObj>>>,
    pub slices: BTreeMap<String, Vec<Arc<SliceObj>>>,
    /// Every Node, when any changed.
    pub nodes: Option<Vec<Arc<Node>>>,
}

/// What a [`Source::poll`] found.
#[derive(Debug)]
pub struct Update {
    /// When each change folded in arrived (a watch event, a file change seen): the starts of
    /// their event-to-map latencies.
    pub events: Vec<Instant>,
    /// The objects that changed; `None` when anything may have (the first state, a re-list):
    /// then [`Source::objects`] is to be taken whole.
    pub delta: Option<Delta>,
}

pub trait Source {
    /// Brings [`Source::objects`] up to date. Returns what changed since the last call that
    /// returned some. The first call that returns some does so as soon as the source holds a
    /// complete state (a directory read, or every watch listed once), with `delta: None`.
    /// `None` while the source has nothing new, and while it has never been complete: the
    /// datapath then keeps what it holds.
    fn poll(&mut self) -> Option<Update>;

    /// The objects as of the last [`Source::poll`] (empty before one returned some).
    fn objects(&self) -> Objects;

    /// Woken when [`Source::poll`] may return something; `None` for sources that are only
    /// polled (the agent polls every source on its tick as well).
    fn notify(&self) -> Option<Arc<Notify>>;
}
