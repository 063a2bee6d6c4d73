//! The `kubernetes` source: kube-rs watchers with reflectors on Services, EndpointSlices and
//! this node's Node, feeding the same [`Objects`] as the manifests source.
//!
//! - Services and EndpointSlices are watched with the server-side label selector
//!   [`PROXY_LABEL_SELECTOR`], as kube-proxy does; the Node by `metadata.name`.
//! - The watchers run on their own thread (and Tokio runtime), so events keep being read
//!   while the agent reconciles. Each event records the key of its object; the agent takes
//!   the objects of the recorded keys from the stores (shared, not copied), so a burst of
//!   events costs a few reconciles, not one per event, and each touches only what changed.
//! - The stores hold compact copies ([`crate::objects`]) of Services and EndpointSlices, made
//!   as each event arrives, not the API objects: at 10,000 Services × 10 endpoints the full
//!   objects would take about 60 MB. The Node keeps only its metadata and addresses. Lists are
//!   paged (kube-rs asks for 500 objects a page), so a full list never sits in memory whole.
//! - Watch errors are retried with a backoff. An expired resourceVersion (410 Gone) or an API
//!   server that lost ours leads to a re-list; the reflector swaps the re-listed objects in at
//!   once when the list is complete. A store is never emptied because the API server is
//!   unreachable, and nothing is handed to the agent until every store was listed once.
use std::fmt::Debug;
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, NodeStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Lookup, ObjectRef, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Config, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::{ChangedKeys, Delta, Objects, Source, Update};
use crate::metrics;
use crate::objects::{ServiceObj, SliceObj};
use crate::types;

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

struct Pending {
    /// A store changed since the agent last took a snapshot.
    dirty: bool,
    /// Arrival times of the events behind `dirty`.
    events: Vec<Instant>,
    /// Each store has been listed completely at least once.
    ready: [bool; 3],
    /// A store was (re-)listed: anything may have changed.
    full: bool,
    /// The keys of the Services and EndpointSlices that changed.
    keys: ChangedKeys,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            dirty: false,
            events: Vec::new(),
            ready: [false; 3],
            full: true,
            keys: ChangedKeys::default(),
        }
    }
}

struct Shared {
    notify: Arc<Notify>,
    pending: Mutex<Pending>,
}

impl Shared {
    /// An object of `kind` changed (`key`: which one; None: the store was re-listed).
    fn changed(&self, kind: Kind, at: Instant, key: Option<String>) {
        let listed = key.is_none();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.dirty = true;
        match (kind, key) {
            (_, None) => p.full = true,
            (Kind::Services, Some(k)) => drop(p.keys.services.insert(k)),
            (Kind::EndpointSlices, Some(k)) => drop(p.keys.slices.insert(k)),
            (Kind::Nodes, Some(_)) => p.keys.nodes = true,
        }
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
    services: Store<ServiceObj>,
    slices: Store<SliceObj>,
    nodes: Store<Node>,
}

/// The key ("namespace/name") of a stored object.
trait Keyed {
    fn key(&self) -> String;
}

impl Keyed for ServiceObj {
    fn key(&self) -> String {
        ServiceObj::key(self)
    }
}

impl Keyed for SliceObj {
    fn key(&self) -> String {
        SliceObj::key(self)
    }
}

impl Keyed for Node {
    fn key(&self) -> String {
        types::object_key(&self.metadata)
    }
}

/// The object with key "namespace/name" in `store`, if any.
fn lookup<K>(store: &Store<K>, key: &str) -> Vec<Arc<K>>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone + Default,
{
    let (ns, name) = key.split_once('/').unwrap_or(("default", key));
    store
        .get(&ObjectRef::new(name).within(ns))
        .into_iter()
        .collect()
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
                            Kind::Services,
                            |s: Service| ServiceObj::new(&s),
                        ),
                        watch(
                            Api::<EndpointSlice>::all(client.clone()),
                            labels,
                            slices_w,
                            sh.clone(),
                            Kind::EndpointSlices,
                            |s: EndpointSlice| SliceObj::new(&s),
                        ),
                        watch(
                            Api::<Node>::all(client),
                            node,
                            nodes_w,
                            sh,
                            Kind::Nodes,
                            compact_node
                        ),
                    );
                })
            })?;
        rx.recv()
            .context("the kubernetes source thread died")?
            .context("kubernetes client configuration")?;
        Ok(KubeSource {
            shared,
            services,
            slices,
            nodes,
        })
    }
}

impl Source for KubeSource {
    fn poll(&mut self) -> Option<Update> {
        let (events, full, keys) = {
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
            (
                std::mem::take(&mut p.events),
                std::mem::take(&mut p.full),
                std::mem::take(&mut p.keys),
            )
        };
        let delta = (!full).then(|| Delta {
            services: keys
                .services
                .iter()
                .map(|k| (k.clone(), lookup(&self.services, k)))
                .collect(),
            slices: keys
                .slices
                .iter()
                .map(|k| (k.clone(), lookup(&self.slices, k)))
                .collect(),
            nodes: keys.nodes.then(|| self.nodes.state()),
        });
        Some(Update { events, delta })
    }

    fn objects(&self) -> Objects {
        Objects {
            services: self.services.state(),
            slices: self.slices.state(),
            nodes: self.nodes.state(),
        }
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

/// Runs one watcher into its store for ever, telling `shared` about every change. The store
/// holds `compact(object)`, made as each object arrives.
async fn watch<K, C>(
    api: Api<K>,
    config: watcher::Config,
    writer: reflector::store::Writer<C>,
    shared: Arc<Shared>,
    kind: Kind,
    compact: fn(K) -> C,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
    C: Lookup + Keyed + Clone + 'static,
    C::DynamicType: Default + Eq + Hash + Clone,
{
    let stream = watcher::watcher(api, config)
        .map_ok(move |event| map_event(event, compact))
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
                    Event::InitDone => shared.changed(kind, at, None),
                    Event::Apply(o) | Event::Delete(o) => shared.changed(kind, at, Some(o.key())),
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

/// The same event with `f` applied to its object.
fn map_event<K, C>(event: Event<K>, f: fn(K) -> C) -> Event<C> {
    match event {
        Event::Apply(o) => Event::Apply(f(o)),
        Event::Delete(o) => Event::Delete(f(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(f(o)),
        Event::InitDone => Event::InitDone,
    }
}

/// A Node reduced to its name, labels and addresses.
fn compact_node(n: Node) -> Node {
    Node {
        metadata: ObjectMeta {
            name: n.metadata.name,
            labels: n.metadata.labels,
            ..Default::default()
        },
        spec: None,
        status: n.status.map(|s| NodeStatus {
            addresses: s.addresses,
            ..Default::default()
        }),
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

    fn svc(name: &str, ip: &str) -> ServiceObj {
        ServiceObj::new(&Service {
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
        })
    }

    fn ips(objects: &[Arc<ServiceObj>]) -> Vec<(String, String)> {
        let mut v: Vec<_> = objects
            .iter()
            .map(|s| {
                let ip = s.spec.as_ref().and_then(|s| s.cluster_ip.clone());
                (s.name.clone(), ip.unwrap())
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn lookup_by_key() {
        let (store, mut writer) = reflector::store::<ServiceObj>();
        writer.apply_watcher_event(&Event::Apply(svc("a", "10.0.0.1")));
        writer.apply_watcher_event(&Event::Apply(svc("b", "10.0.0.2")));
        assert_eq!(
            ips(&lookup(&store, "default/b")),
            [("b".into(), "10.0.0.2".into())]
        );
        assert!(lookup(&store, "other/b").is_empty());
        writer.apply_watcher_event(&Event::Delete(svc("b", "10.0.0.2")));
        assert!(lookup(&store, "default/b").is_empty());
    }

    #[test]
    fn compact_node_keeps_name_labels_and_addresses() {
        let n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n", "labels": {"topology.kubernetes.io/zone": "a"},
                         "annotations": {"x": "y"}},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.0.1"}],
                       "images": [{"names": ["x"]}]},
        }))
        .unwrap();
        let n = compact_node(n);
        assert!(n.spec.is_none());
        assert!(n.metadata.annotations.is_none());
        let status = n.status.unwrap();
        assert!(status.images.is_none());
        assert_eq!(status.addresses.unwrap().len(), 1);
        assert!(n.metadata.labels.is_some());
        assert_eq!(n.metadata.name.as_deref(), Some("n"));
    }

    #[test]
    fn events_map_to_compact_objects() {
        let e = map_event(Event::Apply(svc("a", "10.0.0.1")), |s| s.key());
        assert!(matches!(e, Event::Apply(k) if k == "default/a"));
        assert!(matches!(
            map_event(Event::<ServiceObj>::InitDone, |s| s.key()),
            Event::InitDone
        ));
    }
}
