//! What the agent loop needs from a source of Kubernetes objects: the current (Services,
//! EndpointSlices, Nodes), which of them changed since the last poll, and a way to be woken up
//! when they may have.
//!
//! Two sources implement it: [`ManifestSource`] (a directory of YAML files, watched with
//! inotify and polled) and
//! [`crate::kube_source::KubeSource`] (watchers on the API server, pushed). The model and the
//! reconciler cannot tell them apart. Objects are shared (`Arc`) between the source, its
//! snapshots and the model, never copied.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use tokio::sync::Notify;

use crate::dirwatch::DirWatch;
use crate::manifests::ManifestDir;
use crate::objects::{ServiceObj, SliceObj};

pub use crate::kube_source::KubeSource;
pub use crate::manifests::Objects;

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

/// The `manifests` source as a [`Source`]: rescans the directory on every poll and logs
/// rejected files and an unreadable directory (once per distinct error). The objects of a
/// file that changed count as changed. An inotify watch on the directory
/// ([`crate::dirwatch`]) wakes the agent when a file is written, renamed, created or deleted;
/// the agent's periodic poll stays as the fallback.
pub struct ManifestSource {
    path: PathBuf,
    dir: ManifestDir,
    first: bool,
    dir_error: Option<String>,
    notify: Arc<Notify>,
    _watch: Option<DirWatch>,
}

impl ManifestSource {
    pub fn new(path: &Path) -> Self {
        let notify = Arc::new(Notify::new());
        let watch = DirWatch::start(path, notify.clone())
            .map_err(|e| tracing::warn!(dir = %path.display(), "no inotify, polling only: {e}"))
            .ok();
        ManifestSource {
            path: path.to_path_buf(),
            dir: ManifestDir::new(path),
            first: true,
            dir_error: None,
            notify,
            _watch: watch,
        }
    }
}

impl Source for ManifestSource {
    fn poll(&mut self) -> Option<Update> {
        let report = match self.dir.rescan() {
            Ok(r) => {
                self.dir_error = None;
                r
            }
            Err(e) => {
                let e = e.to_string();
                if self.dir_error.as_ref() != Some(&e) {
                    tracing::error!(dir = %self.path.display(), "cannot read manifests directory: {e}");
                    self.dir_error = Some(e);
                }
                return None;
            }
        };
        for e in &report.errors {
            tracing::error!("rejected manifest, keeping its last good state: {e}");
        }
        if !(report.changed || self.first) {
            return None;
        }
        let delta = match std::mem::take(&mut self.first) {
            true => None,
            false => Some(self.dir.current().select(&report.keys)),
        };
        Some(Update {
            events: vec![Instant::now()],
            delta,
        })
    }

    fn objects(&self) -> Objects {
        self.dir.objects()
    }

    fn notify(&self) -> Option<Arc<Notify>> {
        Some(self.notify.clone())
    }
}
