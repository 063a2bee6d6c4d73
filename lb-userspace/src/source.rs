//! What the agent loop needs from a source of Kubernetes objects: the current (Services,
//! EndpointSlices, Nodes) when they changed, and a way to be woken up when they may have.
//!
//! Two sources implement it: [`ManifestSource`] (a directory of YAML files, polled) and
//! [`crate::kube_source::KubeSource`] (watchers on the API server, pushed). The model and the
//! reconciler cannot tell them apart.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;

use crate::manifests::{ManifestDir, Objects};

pub trait Source {
    /// Brings [`Source::objects`] up to date. Returns, when they changed since the last call
    /// that returned some, when each change folded in arrived (a watch event, a file change
    /// seen): the starts of their event-to-map latencies. The first call that returns some
    /// does so as soon as the source holds a complete state (a directory read, or every watch
    /// listed once). `None` while the source has nothing new, and while it has never been
    /// complete: the datapath then keeps what it holds.
    fn poll(&mut self) -> Option<Vec<Instant>>;

    /// The objects as of the last [`Source::poll`] (empty before one returned some).
    fn objects(&self) -> &Objects;

    /// Woken when [`Source::poll`] may return something; `None` for sources that are only
    /// polled (the agent polls every source on its tick as well).
    fn notify(&self) -> Option<Arc<Notify>>;
}

/// The `manifests` source as a [`Source`]: rescans the directory on every poll and logs
/// rejected files and an unreadable directory (once per distinct error).
pub struct ManifestSource {
    path: PathBuf,
    dir: ManifestDir,
    objects: Objects,
    first: bool,
    dir_error: Option<String>,
}

impl ManifestSource {
    pub fn new(path: &Path) -> Self {
        ManifestSource {
            path: path.to_path_buf(),
            dir: ManifestDir::new(path),
            objects: Objects::default(),
            first: true,
            dir_error: None,
        }
    }
}

impl Source for ManifestSource {
    fn poll(&mut self) -> Option<Vec<Instant>> {
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
        self.first = false;
        self.objects = self.dir.objects();
        Some(vec![Instant::now()])
    }

    fn objects(&self) -> &Objects {
        &self.objects
    }

    fn notify(&self) -> Option<Arc<Notify>> {
        None
    }
}
