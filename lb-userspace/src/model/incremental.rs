//! [`Incremental`]: the model kept between syncs, one cache entry per Service key, with the
//! claims on every frontend address ranked as [`build`](super::build) ranks them, and the [`Changes`] since
//! the reconciler last took them.
use super::frontends::service_frontends;
use super::node::node_addresses;
use super::{DesiredState, FrontendSpec, NodeInfo};
use crate::objects::{ServiceObj, SliceObj, SliceView};
use crate::types::FrontendAddr;
use k8s_openapi::api::core::v1::Node;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

/// The conflict-resolution rank of a frontend claim, as in [`build`](super::build): kind precedence, then
/// Service key, then the claim's position among that Service's frontends.
type Rank = (u8, Arc<str>, u32);

/// What one Service key contributed at its last computation.
#[derive(Default)]
struct ServiceCache {
    /// The objects with this key (several only with duplicate manifests), shared with the
    /// source.
    objects: Vec<Arc<ServiceObj>>,
    cluster_ips: Vec<IpAddr>,
    /// The addresses it claims (a claim's spec lives in [`Incremental::claims`]).
    claims: Vec<FrontendAddr>,
    warnings: Vec<String>,
}

/// What changed in [`Incremental::state`] since the last [`Incremental::take_changes`].
#[derive(Debug, Default)]
pub struct Changes {
    /// Frontends added, changed or removed, with the spec they had before (None: new).
    pub frontends: BTreeMap<FrontendAddr, Option<FrontendSpec>>,
    /// ClusterIPs that may have been added or removed.
    pub cluster_ips: BTreeSet<IpAddr>,
    /// `node_addresses` changed (the SNAT configuration may have).
    pub node_addresses: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty() && self.cluster_ips.is_empty() && !self.node_addresses
    }
}

/// The model kept between syncs: the result of [`build`](super::build) over the objects it was given,
/// maintained object by object. A Service's frontends are recomputed only when its inputs
/// change: its Service object, the EndpointSlices labelled with its name, or the node
/// addresses (which recompute every Service). `state()` always equals what [`build`](super::build) returns
/// for the same objects, and `warnings()` its warnings.
pub struct Incremental {
    node: NodeInfo,
    nodes: Vec<Arc<Node>>,
    /// Where NodePorts are served (`state.node_addresses` are the SNAT addresses).
    nodeport_addresses: Vec<IpAddr>,
    node_warnings: Vec<String>,
    services: HashMap<String, ServiceCache>,
    /// Slice key -> the versions with that key (several only with duplicate manifests),
    /// shared with the source.
    slices: HashMap<String, Vec<Arc<SliceObj>>>,
    /// Service key -> the keys of the slices labelled with it.
    /// (A sorted Vec rather than a set: most Services have one or two slices.)
    service_slices: HashMap<String, Vec<String>>,
    /// Every claim of an address, best rank first; the first one is in `state`.
    claims: HashMap<FrontendAddr, Vec<(Rank, FrontendSpec)>>,
    /// Addresses with more than one claim.
    conflicts: BTreeSet<FrontendAddr>,
    /// How many Services have each ClusterIP.
    cluster_ip_refs: HashMap<IpAddr, u32>,
    dirty: BTreeSet<String>,
    state: DesiredState,
    changes: Changes,
}

impl Incremental {
    pub fn new(node: NodeInfo) -> Self {
        let state = DesiredState {
            cluster_cidrs: node.cluster_cidrs.clone(),
            ..DesiredState::default()
        };
        let mut m = Incremental {
            node,
            nodes: Vec::new(),
            nodeport_addresses: Vec::new(),
            node_warnings: Vec::new(),
            services: HashMap::new(),
            slices: HashMap::new(),
            service_slices: HashMap::new(),
            claims: HashMap::new(),
            conflicts: BTreeSet::new(),
            cluster_ip_refs: HashMap::new(),
            dirty: BTreeSet::new(),
            state,
            changes: Changes::default(),
        };
        m.refresh_node_addresses();
        m.take_changes();
        m
    }

    /// The model of these objects, computed from scratch.
    pub fn from_objects(
        services: &[Arc<ServiceObj>],
        slices: &[Arc<SliceObj>],
        nodes: &[Arc<Node>],
        node: NodeInfo,
    ) -> Self {
        let mut m = Incremental::new(node);
        m.set_nodes(nodes.to_vec());
        let mut by_key: HashMap<String, Vec<Arc<SliceObj>>> = HashMap::new();
        for s in slices {
            by_key.entry(s.key()).or_default().push(s.clone());
        }
        for (k, v) in by_key {
            m.set_slices(&k, &v);
        }
        let mut by_key: HashMap<String, Vec<Arc<ServiceObj>>> = HashMap::new();
        for s in services {
            by_key.entry(s.key()).or_default().push(s.clone());
        }
        for (k, v) in by_key {
            m.set_services(&k, v);
        }
        m.recompute();
        m
    }

    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    pub fn node_name(&self) -> &str {
        &self.node.name
    }

    /// The number of Service keys with at least one frontend in the state.
    pub fn services_with_frontends(&self) -> usize {
        self.services
            .values()
            .filter(|c| !c.claims.is_empty())
            .count()
    }

    /// The Services with key `key` are now `objects` (empty: deleted).
    pub fn set_services(&mut self, key: &str, objects: Vec<Arc<ServiceObj>>) {
        let cache = self.services.get(key);
        let same = match cache {
            Some(c) => {
                c.objects.len() == objects.len()
                    && c.objects
                        .iter()
                        .zip(&objects)
                        .all(|(a, b)| Arc::ptr_eq(a, b) || a == b)
            }
            None => objects.is_empty(),
        };
        if same {
            return;
        }
        self.services.entry(key.to_string()).or_default().objects = objects;
        self.dirty.insert(key.to_string());
    }

    /// The EndpointSlices with key `key` are now `objects` (empty: deleted).
    pub fn set_slices(&mut self, key: &str, objects: &[Arc<SliceObj>]) {
        let entries = objects.to_vec();
        let old = match entries.is_empty() {
            true => self.slices.remove(key),
            false => self.slices.insert(key.to_string(), entries),
        };
        let new = self.slices.get(key);
        if old.as_ref() == new {
            return;
        }
        let services = |e: Option<&Vec<Arc<SliceObj>>>| -> BTreeSet<String> {
            e.into_iter()
                .flatten()
                .filter_map(|e| e.service.clone())
                .collect()
        };
        let (before, after) = (services(old.as_ref()), services(new));
        for s in before.difference(&after) {
            if let Some(set) = self.service_slices.get_mut(s) {
                if let Ok(at) = set.binary_search_by(|k| k.as_str().cmp(key)) {
                    set.remove(at);
                }
                if set.is_empty() {
                    self.service_slices.remove(s);
                }
            }
        }
        for s in after.difference(&before) {
            let set = self.service_slices.entry(s.clone()).or_default();
            if let Err(at) = set.binary_search_by(|k| k.as_str().cmp(key)) {
                set.reserve_exact(1);
                set.insert(at, key.to_string());
            }
        }
        self.dirty.extend(before.union(&after).cloned());
    }

    /// The Node objects are now `nodes`.
    pub fn set_nodes(&mut self, nodes: Vec<Arc<Node>>) {
        self.nodes = nodes;
        self.refresh_node_addresses();
    }

    /// The addresses NodePorts are served on without a usable Node object.
    pub fn set_fallback_addresses(&mut self, addresses: Vec<IpAddr>) {
        if self.node.fallback_addresses != addresses {
            self.node.fallback_addresses = addresses;
            self.refresh_node_addresses();
        }
    }

    /// The node's addresses (all interfaces of its network namespace), for
    /// `--nodeport-addresses` CIDRs.
    pub fn set_local_addresses(&mut self, addresses: Vec<IpAddr>) {
        if self.node.local_addresses != addresses {
            self.node.local_addresses = addresses;
            self.refresh_node_addresses();
        }
    }

    /// Where NodePorts are served.
    pub fn nodeport_addresses(&self) -> &[IpAddr] {
        &self.nodeport_addresses
    }

    fn refresh_node_addresses(&mut self) {
        let mut warnings = Vec::new();
        let addrs = node_addresses(&self.nodes, &self.node, &mut warnings);
        self.node_warnings = warnings;
        if addrs.node != self.state.node_addresses {
            self.state.node_addresses = addrs.node;
            self.changes.node_addresses = true;
        }
        if addrs.nodeports != self.nodeport_addresses {
            self.nodeport_addresses = addrs.nodeports;
            self.dirty.extend(self.services.keys().cloned());
        }
    }

    /// Recomputes the Services whose inputs changed and updates the state.
    pub fn recompute(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        let mut touched: HashSet<FrontendAddr> = HashSet::new();
        for key in &dirty {
            self.recompute_service(key, &mut touched);
        }
        for addr in touched {
            let winner = self.claims.get(&addr).and_then(|c| c.first());
            let current = self.state.frontends.get(&addr);
            if winner.map(|w| &w.1) == current {
                continue;
            }
            let old = match winner {
                Some((_, spec)) => self.state.frontends.insert(addr, spec.clone()),
                None => self.state.frontends.remove(&addr),
            };
            self.changes.frontends.entry(addr).or_insert(old);
        }
    }

    fn recompute_service(&mut self, key: &str, touched: &mut HashSet<FrontendAddr>) {
        let Some(cache) = self.services.get_mut(key) else {
            return;
        };
        // Take back what it contributed.
        for ip in cache.cluster_ips.drain(..) {
            if let Some(n) = self.cluster_ip_refs.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.cluster_ip_refs.remove(&ip);
                    self.state.cluster_ips.remove(&ip);
                    self.changes.cluster_ips.insert(ip);
                }
            }
        }
        for addr in cache.claims.drain(..) {
            if let Some(c) = self.claims.get_mut(&addr) {
                c.retain(|(r, _)| &*r.1 != key);
                match c.len() {
                    0 => {
                        self.claims.remove(&addr);
                        self.conflicts.remove(&addr);
                    }
                    1 => {
                        self.conflicts.remove(&addr);
                    }
                    _ => {}
                }
            }
            touched.insert(addr);
        }
        cache.warnings.clear();
        if cache.objects.is_empty() {
            self.services.remove(key);
            return;
        }
        // And compute it again.
        let views: Vec<&SliceView> = self
            .service_slices
            .get(key)
            .into_iter()
            .flatten()
            .flat_map(|k| self.slices.get(k).into_iter().flatten())
            .filter(|e| e.service.as_deref() == Some(key))
            .filter_map(|e| e.view.as_ref().ok())
            .collect();
        let name: Arc<str> = Arc::from(key);
        let mut seq = 0u32;
        for svc in &cache.objects {
            match service_frontends(svc, key, &views, &self.nodeport_addresses, &self.node) {
                Ok(Some(out)) => {
                    for ip in out.cluster_ips {
                        cache.cluster_ips.push(ip);
                        let n = self.cluster_ip_refs.entry(ip).or_default();
                        *n += 1;
                        if *n == 1 {
                            self.state.cluster_ips.insert(ip);
                            self.changes.cluster_ips.insert(ip);
                        }
                    }
                    for (addr, spec) in out.frontends {
                        let rank = (spec.kind.precedence(), name.clone(), seq);
                        seq += 1;
                        let c = self.claims.entry(addr).or_default();
                        let at = c.partition_point(|(r, _)| *r < rank);
                        // Almost every address has one claim: no room for more.
                        c.reserve_exact(1);
                        c.insert(at, (rank, spec));
                        if c.len() > 1 {
                            self.conflicts.insert(addr);
                        }
                        cache.claims.push(addr);
                        touched.insert(addr);
                    }
                    cache.warnings.extend(out.warnings);
                }
                Ok(None) => {}
                Err(e) => cache.warnings.push(format!("service {key}: {e}")),
            }
        }
        cache.claims.shrink_to_fit();
        cache.cluster_ips.shrink_to_fit();
    }

    /// The changes since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// The warnings [`build`](super::build) gives for the same objects, in the same order.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.node_warnings.clone();
        let mut slices: Vec<(&String, &String)> = self
            .slices
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |e| (k, e)))
            .filter_map(|(k, e)| match (&e.service, &e.view) {
                (Some(_), Err(w)) => Some((k, w)),
                _ => None,
            })
            .collect();
        slices.sort_by(|a, b| a.0.cmp(b.0));
        out.extend(
            slices
                .into_iter()
                .map(|(k, e)| format!("endpointslice {k}: {e}")),
        );
        let mut services: Vec<(&String, &Vec<String>)> = self
            .services
            .iter()
            .filter(|(_, c)| !c.warnings.is_empty())
            .map(|(k, c)| (k, &c.warnings))
            .collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        out.extend(services.into_iter().flat_map(|(_, w)| w.iter().cloned()));
        let mut losers: Vec<(&Rank, FrontendAddr, &FrontendSpec, &FrontendSpec)> = Vec::new();
        for addr in &self.conflicts {
            let c = &self.claims[addr];
            for (rank, spec) in &c[1..] {
                losers.push((rank, *addr, spec, &c[0].1));
            }
        }
        losers.sort_by(|a, b| a.0.cmp(b.0));
        for (_, addr, spec, winner) in losers {
            out.push(format!(
                "service {}: frontend {addr} ({}) is already used by {} ({})",
                spec.name, spec.kind, winner.name, winner.kind
            ));
        }
        out
    }
}
