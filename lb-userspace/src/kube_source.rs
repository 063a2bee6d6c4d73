//! The `kubernetes` source: kube-rs watchers with reflectors on Services, EndpointSlices and
//! this node's Node, feeding the same [`Objects`] as the manifests source.
//!
//! - Services and EndpointSlices are watched with the server-side label selector
//!   [`PROXY_LABEL_SELECTOR`], as kube-proxy does; the Node by `metadata.name`.
//! - The watchers run on their own thread (and Tokio runtime), so events keep being read
//!   while the agent reconciles. The agent takes the latest snapshot of all three stores after
//!   a change, so a burst of events costs a few reconciles, not one per event.
//! - Watch errors are retried with a backoff. An expired resourceVersion (410 Gone) or an API
//!   server that lost ours leads to a re-list; the reflector swaps the re-listed objects in at
//!   once when the list is complete. A store is never emptied because the API server is
//!   unreachable, and nothing is handed to the agent until every store was listed once.
use std::collections::HashMap;
use std::fmt::Debug;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::manifests::Objects;
use crate::metrics;
use crate::source::Source;

/// Services and EndpointSlices with either label are not ours (kube-proxy's selector).
pub const PROXY_LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// Event times kept for the latency histogram between two reconciles (the oldest are kept).
const MAX_PENDING_EVENTS: usize = 100_000;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Services = 0,
    EndpointSlices = 1,
    Nodes = 2,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Services => "services",
            Kind::EndpointSlices => "endpointslices",
            Kind::Nodes => "nodes",
        }
    }
}

#[derive(Default)]
struct Pending {
    /// A store changed since the agent last took a snapshot.
    dirty: bool,
    /// Arrival times of the events behind `dirty`.
    events: Vec<Instant>,
    /// Each store has been listed completely at least once.
    ready: [bool; 3],
}

struct Shared {
    notify: Arc<Notify>,
    pending: Mutex<Pending>,
}

impl Shared {
    fn changed(&self, kind: Kind, at: Instant, listed: bool) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.dirty = true;
        if p.events.len() < MAX_PENDING_EVENTS {
            p.events.push(at);
        }
        if listed && !p.ready[kind as usize] {
            p.ready[kind as usize] = true;
            tracing::info!(kind = kind.name(), "listed");
        }
        drop(p);
        self.notify.notify_one();
    }
}

pub struct KubeSource {
    shared: Arc<Shared>,
    services: StoreCopy<Service>,
    slices: StoreCopy<EndpointSlice>,
    nodes: StoreCopy<Node>,
    objects: Objects,
}

/// A store and the objects of its last snapshot (`arcs[i]` is the version `objects[i]` was
/// copied from). The reflector puts a new `Arc` in the store for every new version, and the
/// old ones are kept alive here, so an unchanged pointer means an unchanged object.
struct StoreCopy<K: 'static + Lookup>
where
    K::DynamicType: Eq + Hash,
{
    store: Store<K>,
    arcs: Vec<Arc<K>>,
}

impl<K> StoreCopy<K>
where
    K: Lookup + Clone + Default + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    fn new(store: Store<K>) -> Self {
        StoreCopy {
            store,
            arcs: Vec::new(),
        }
    }

    /// Replaces `objects` with the store's contents, cloning only the objects that changed
    /// since the last refresh (the others are moved over).
    fn refresh(&mut self, objects: &mut Vec<K>) {
        let index: HashMap<*const K, usize> = self
            .arcs
            .iter()
            .enumerate()
            .map(|(i, a)| (Arc::as_ptr(a), i))
            .collect();
        let mut old = std::mem::take(objects);
        let arcs = self.store.state();
        *objects = arcs
            .iter()
            .map(|a| match index.get(&Arc::as_ptr(a)) {
                Some(&i) if i < old.len() => std::mem::take(&mut old[i]),
                _ => (**a).clone(),
            })
            .collect();
        self.arcs = arcs;
    }
}

impl KubeSource {
    /// Connects with `kubeconfig`, or with the in-cluster config when `None`, and starts the
    /// watchers. Fails when the configuration cannot be loaded; an unreachable API server is
    /// not an error (the watchers keep retrying).
    pub fn start(kubeconfig: Option<&Path>, node_name: &str) -> Result<KubeSource> {
        let (services, services_w) = reflector::store();
        let (slices, slices_w) = reflector::store();
        let (nodes, nodes_w) = reflector::store();
        let shared = Arc::new(Shared {
            notify: Arc::new(Notify::new()),
            pending: Mutex::new(Pending::default()),
        });
        let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
        let kubeconfig = kubeconfig.map(Path::to_path_buf);
        let node_name = node_name.to_string();
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("kube-source".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => return drop(tx.send(Err(e.into()))),
                };
                rt.block_on(async move {
                    let client = match client(kubeconfig).await {
                        Ok(c) => c,
                        Err(e) => return drop(tx.send(Err(e))),
                    };
                    let _ = tx.send(Ok(()));
                    let labels = watcher::Config::default().labels(PROXY_LABEL_SELECTOR);
                    let node =
                        watcher::Config::default().fields(&format!("metadata.name={node_name}"));
                    tokio::join!(
                        watch(
                            Api::<Service>::all(client.clone()),
                            labels.clone(),
                            services_w,
                            sh.clone(),
                            Kind::Services
                        ),
                        watch(
                            Api::<EndpointSlice>::all(client.clone()),
                            labels,
                            slices_w,
                            sh.clone(),
                            Kind::EndpointSlices
                        ),
                        watch(Api::<Node>::all(client), node, nodes_w, sh, Kind::Nodes),
                    );
                })
            })?;
        rx.recv()
            .context("the kubernetes source thread died")?
            .context("kubernetes client configuration")?;
        Ok(KubeSource {
            shared,
            services: StoreCopy::new(services),
            slices: StoreCopy::new(slices),
            nodes: StoreCopy::new(nodes),
            objects: Objects::default(),
        })
    }
}

impl Source for KubeSource {
    fn poll(&mut self) -> Option<Vec<Instant>> {
        let events = {
            let mut p = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !p.dirty || !p.ready.iter().all(|r| *r) {
                return None;
            }
            // Cleared before the stores are read: a change that lands while they are read
            // is in this snapshot or, at worst, triggers one more (empty) reconcile.
            p.dirty = false;
            std::mem::take(&mut p.events)
        };
        self.services.refresh(&mut self.objects.services);
        self.slices.refresh(&mut self.objects.slices);
        self.nodes.refresh(&mut self.objects.nodes);
        Some(events)
    }

    fn objects(&self) -> &Objects {
        &self.objects
    }

    fn notify(&self) -> Option<Arc<Notify>> {
        Some(self.shared.notify.clone())
    }
}

async fn client(kubeconfig: Option<PathBuf>) -> Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(&path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => Config::incluster().context(
            "no --kubeconfig and no in-cluster config (KUBERNETES_SERVICE_HOST and the \
             service account token); use --kubeconfig PATH or --manifests DIR",
        )?,
    };
    Ok(Client::try_from(config)?)
}

/// Runs one watcher into its store for ever, telling `shared` about every change.
async fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    shared: Arc<Shared>,
    kind: Kind,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    // Fields the model never reads are dropped before they reach the store.
    let stream = watcher::watcher(api, config)
        .modify(|o: &mut K| {
            o.managed_fields_mut().clear();
            o.annotations_mut().clear();
        })
        .backoff(RetryBackoff::default());
    let mut stream = std::pin::pin!(reflector::reflector(writer, stream));
    let mut failing: Option<String> = None;
    let mut lists = 0u64;
    while let Some(item) = stream.next().await {
        let at = Instant::now();
        match item {
            Ok(event) => {
                if failing.take().is_some() {
                    tracing::info!(kind = kind.name(), "watch recovered");
                }
                match event {
                    Event::Init => {
                        lists += 1;
                        if lists > 1 {
                            metrics::METRICS.relists.inc();
                            tracing::info!(kind = kind.name(), "re-listing");
                        }
                    }
                    Event::InitApply(_) => {}
                    Event::InitDone => shared.changed(kind, at, true),
                    Event::Apply(_) | Event::Delete(_) => shared.changed(kind, at, false),
                }
            }
            Err(e) => {
                metrics::METRICS.watch_errors.inc();
                let e = e.to_string();
                if failing.as_ref() != Some(&e) {
                    tracing::warn!(
                        kind = kind.name(),
                        "watch failed, keeping the last state and retrying: {e}"
                    );
                }
                failing = Some(e);
            }
        }
    }
}

/// Retry delays after watch errors: 100 ms doubling up to 5 s, reset by any success. Short,
/// because the datapath serves stale state while the watch is down.
struct RetryBackoff {
    next: Duration,
}

impl RetryBackoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
}

impl Default for RetryBackoff {
    fn default() -> Self {
        RetryBackoff { next: Self::MIN }
    }
}

impl Iterator for RetryBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (d * 2).min(Self::MAX);
        Some(d)
    }
}

impl Backoff for RetryBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str, ip: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                cluster_ip: Some(ip.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ips(objects: &[Service]) -> Vec<(String, String)> {
        let mut v: Vec<_> = objects
            .iter()
            .map(|s| {
                let ip = s.spec.as_ref().and_then(|s| s.cluster_ip.clone());
                (s.metadata.name.clone().unwrap(), ip.unwrap())
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn store_copy_follows_the_store() {
        let (store, mut writer) = reflector::store::<Service>();
        let mut copy = StoreCopy::new(store);
        let mut objects = Vec::new();
        copy.refresh(&mut objects);
        assert!(objects.is_empty());
        writer.apply_watcher_event(&Event::Apply(svc("a", "10.0.0.1")));
        writer.apply_watcher_event(&Event::Apply(svc("b", "10.0.0.2")));
        copy.refresh(&mut objects);
        let pair = |n: &str, ip: &str| (n.to_string(), ip.to_string());
        assert_eq!(
            ips(&objects),
            [pair("a", "10.0.0.1"), pair("b", "10.0.0.2")]
        );
        writer.apply_watcher_event(&Event::Apply(svc("b", "10.0.0.3")));
        copy.refresh(&mut objects);
        assert_eq!(
            ips(&objects),
            [pair("a", "10.0.0.1"), pair("b", "10.0.0.3")]
        );
        copy.refresh(&mut objects);
        assert_eq!(
            ips(&objects),
            [pair("a", "10.0.0.1"), pair("b", "10.0.0.3")]
        );
        writer.apply_watcher_event(&Event::Delete(svc("a", "10.0.0.1")));
        copy.refresh(&mut objects);
        assert_eq!(ips(&objects), [pair("b", "10.0.0.3")]);
        // A re-list swaps in a whole new store content.
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(svc("c", "10.0.0.4")));
        copy.refresh(&mut objects);
        assert_eq!(
            ips(&objects),
            [pair("b", "10.0.0.3")],
            "changed before InitDone"
        );
        writer.apply_watcher_event(&Event::InitDone);
        copy.refresh(&mut objects);
        assert_eq!(ips(&objects), [pair("c", "10.0.0.4")]);
    }
}
