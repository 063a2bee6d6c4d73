//! Desired datapath state, IPv4 and IPv6, computed from Kubernetes objects.
//!
//! Pure functions, no I/O. The rules are kube-proxy's (kube-proxy-contract.md points 1-10,
//! 13-16, 19, 21, 24 and 25): which Services and EndpointSlices count, how slice ports are matched
//! to Service ports, which frontends every Service type gets (ClusterIP, NodePort, externalIPs,
//! LoadBalancer ingress), and which endpoints become the backends of each frontend.
//!
//! Dual-stack (point 8) works the way kube-proxy's per-family proxiers do: a Service has the
//! families of its ClusterIPs (`spec.ipFamilies` paired with `spec.clusterIPs`), and each family
//! is programmed on its own. A frontend's backends come only from EndpointSlices of its family;
//! NodePorts are served on the node addresses of the Service's families; externalIPs and
//! LoadBalancer ingress IPs of a family the Service does not have are ignored.

use crate::objects::{Conditions, ServiceObj, ServiceSpecObj, SliceEndpoint, SliceObj, SliceView};
use crate::types::{parse_ip, BackendAddr, Family, FrontendAddr, FrontendKind, Proto};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::borrow::Borrow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendSpec {
    /// "namespace/name:portname", or "namespace/name" when the port has no name.
    pub name: String,
    pub kind: FrontendKind,
    /// Masquerade (SNAT to the node address) every new flow: externally reachable frontends
    /// (NodePort, ExternalIp, LoadBalancer) with externalTrafficPolicy Cluster (contract point 13).
    pub snat: bool,
    /// With no backends: drop silently (true: iTP=Local / eTP=Local with no local endpoints,
    /// points 14-15) instead of rejecting (false: point 16).
    pub drop_when_empty: bool,
    /// Sorted and deduplicated, all of the frontend's family; empty when the Service has no
    /// usable endpoints of that family.
    pub backends: Vec<BackendAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub frontends: BTreeMap<FrontendAddr, FrontendSpec>,
    /// Every programmed ClusterIP, of both families: traffic to one of these on a port that is
    /// not a frontend is rejected (point 24).
    pub cluster_ips: BTreeSet<IpAddr>,
    /// The addresses NodePorts are served on, of both families, in order (point 21 and DESIGN:
    /// the Node object's InternalIP and ExternalIP addresses, else
    /// NodeInfo.fallback_addresses). Never loopback, unspecified or IPv6 link-local. The first
    /// address of each family is that family's SNAT address.
    pub node_addresses: Vec<IpAddr>,
}

pub struct NodeInfo {
    /// This node's name: the Node object to read addresses from, and endpoints whose `nodeName`
    /// is this name are local.
    pub name: String,
    /// Where NodePorts are served when the Node object is missing or has no usable address
    /// (the external interfaces' addresses, both families).
    pub fallback_addresses: Vec<IpAddr>,
}

pub struct Built {
    pub state: DesiredState,
    /// One line per skipped malformed object, address or frontend, naming its object.
    pub warnings: Vec<String>,
}

fn push_unique(list: &mut Vec<IpAddr>, ip: IpAddr) {
    if !list.contains(&ip) {
        list.push(ip);
    }
}

/// The addresses of `addrs` in order, without duplicates; a string that is no IP address is
/// left out with a warning naming `what`.
fn ip_list<'a>(
    addrs: impl IntoIterator<Item = &'a str>,
    what: &str,
    warnings: &mut Vec<String>,
) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for a in addrs {
        match parse_ip(a) {
            Ok(ip) => push_unique(&mut out, ip),
            Err(e) => warnings.push(format!("{what} {e}; skipped")),
        }
    }
    out
}

/// An address NodePorts can be served on: not loopback or unspecified, and for IPv6 not
/// link-local (fe80::/10: only meaningful with an interface scope).
fn usable_node_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unspecified() && !v6.is_unicast_link_local(),
    }
}

/// Where NodePorts are served (point 21): the InternalIP and ExternalIP addresses (both
/// families) of the Node object named `node.name`, else `node.fallback_addresses`.
fn node_addresses<N: Borrow<Node>>(
    nodes: &[N],
    node: &NodeInfo,
    warnings: &mut Vec<String>,
) -> Vec<IpAddr> {
    let mut own = Vec::new();
    if let Some(obj) = nodes
        .iter()
        .map(Borrow::borrow)
        .find(|n| n.metadata.name.as_deref() == Some(node.name.as_str()))
    {
        let addrs = obj.status.iter().flat_map(|s| s.addresses.iter().flatten());
        let addrs = addrs
            .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
            .map(|a| a.address.as_str());
        let what = format!("node {}: address", node.name);
        own = ip_list(addrs, &what, warnings);
        own.retain(usable_node_address);
    }
    if own.is_empty() {
        for ip in node
            .fallback_addresses
            .iter()
            .filter(|ip| usable_node_address(ip))
        {
            push_unique(&mut own, *ip);
        }
    }
    own
}

/// kube-proxy's two endpoint sets for one Service port and family (point 6).
struct EndpointSets {
    /// Ready endpoints, else the ones that are serving and terminating.
    cluster: Vec<BackendAddr>,
    /// The same rule applied to this node's endpoints only.
    local: Vec<BackendAddr>,
}

/// The endpoint sets of one Service port in one family, from the slices of that family only.
/// A non-terminating endpoint wins over a duplicate.
fn endpoint_sets(
    slices: &[&SliceView],
    family: Family,
    port_name: &str,
    proto: Proto,
    node_name: &str,
) -> EndpointSets {
    let mut seen: BTreeMap<BackendAddr, &SliceEndpoint> = BTreeMap::new();
    for slice in slices.iter().filter(|s| s.family == family) {
        let Some(sp) = slice
            .ports
            .iter()
            .find(|p| p.name == port_name && p.proto == proto)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            match seen.entry(BackendAddr {
                ip: ep.ip,
                port: sp.port,
            }) {
                Entry::Vacant(v) => {
                    v.insert(ep);
                }
                Entry::Occupied(mut o)
                    if o.get().conditions.terminating && !ep.conditions.terminating =>
                {
                    o.insert(ep);
                }
                Entry::Occupied(_) => {}
            }
        }
    }
    let usable = |local_only: bool| -> Vec<BackendAddr> {
        let pick = |f: fn(&Conditions) -> bool| -> Vec<BackendAddr> {
            seen.iter()
                .filter(|(_, e)| {
                    (!local_only || e.node.as_deref() == Some(node_name)) && f(&e.conditions)
                })
                .map(|(a, _)| *a)
                .collect()
        };
        let ready = pick(|c| c.ready);
        if ready.is_empty() {
            pick(|c| c.serving && c.terminating)
        } else {
            ready
        }
    };
    EndpointSets {
        cluster: usable(false),
        local: usable(true),
    }
}

/// What one accepted Service contributes.
struct ServiceOutput {
    /// At most one per family.
    cluster_ips: Vec<IpAddr>,
    /// Port by port, in Service port order; several may claim the same address.
    frontends: Vec<(FrontendAddr, FrontendSpec)>,
    /// Addresses and frontends left out of an otherwise good Service.
    warnings: Vec<String>,
}

struct PortView<'a> {
    name: &'a str,
    proto: Proto,
    port: u16,
    node_port: Option<i32>,
}

/// The ClusterIPs of a Service, at most one per family: the Service's families (point 8).
/// `None` when kube-proxy would skip the Service (no ClusterIP, or "None": headless), Err when
/// an address or family is malformed.
///
/// Like kube-proxy's `GetClusterIPByFamily`: with `ipFamilies` set, family `ipFamilies[i]` has
/// the ClusterIP `clusterIPs[i]` (a family without one is not programmed). Without
/// `ipFamilies` (older objects, hand-written manifests) each address of `clusterIPs`, or of
/// `clusterIP` when `clusterIPs` is empty, brings its own family; the first of a family counts.
fn service_cluster_ips(spec: &ServiceSpecObj) -> Result<Option<Vec<IpAddr>>, String> {
    let listed = spec.cluster_ips.as_deref().unwrap_or_default();
    let ips: Vec<&String> = match (listed.is_empty(), spec.cluster_ip.as_ref()) {
        (false, _) => listed.iter().collect(),
        (true, Some(ip)) => vec![ip],
        (true, None) => vec![],
    };
    match spec.cluster_ip.as_ref().or(ips.first().copied()) {
        Some(ip) if !ip.is_empty() && ip != "None" => {}
        _ => return Ok(None),
    }
    let parse = |ip: &String| parse_ip(ip).map_err(|e| format!("clusterIP {e}"));
    let mut out: Vec<IpAddr> = Vec::new();
    match spec.ip_families.as_deref().filter(|f| !f.is_empty()) {
        Some(families) => {
            for (i, name) in families.iter().enumerate() {
                let family = Family::parse(name)
                    .ok_or_else(|| format!("ipFamilies[{i}] {name:?} is not IPv4 or IPv6"))?;
                let Some(ip) = ips.get(i) else { continue };
                let ip = parse(ip)?;
                if Family::of(ip) != family {
                    return Err(format!(
                        "clusterIP {:?} is not an {family} address (ipFamilies[{i}] is {family})",
                        ip.to_string()
                    ));
                }
                if !out.iter().any(|o| Family::of(*o) == family) {
                    out.push(ip);
                }
            }
        }
        None => {
            for ip in ips {
                let ip = parse(ip)?;
                if !out.iter().any(|o| Family::of(*o) == Family::of(ip)) {
                    out.push(ip);
                }
            }
        }
    }
    Ok(Some(out))
}

/// The frontends of one Service; `None` when kube-proxy would skip it, Err when malformed.
fn service_frontends(
    svc: &ServiceObj,
    key: &str,
    slices: &[&SliceView],
    node_addresses: &[IpAddr],
    node_name: &str,
) -> Result<Option<ServiceOutput>, String> {
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(None);
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if svc.foreign_or_headless || type_ == "ExternalName" {
        return Ok(None);
    }
    let Some(cluster_ips) = service_cluster_ips(spec)? else {
        return Ok(None);
    };
    let families: BTreeSet<Family> = cluster_ips.iter().map(|ip| Family::of(*ip)).collect();
    let has_family = |ip: &IpAddr| families.contains(&Family::of(*ip));
    let mut ports = Vec::new();
    for sp in &spec.ports {
        ports.push(PortView {
            name: sp.name.as_deref().unwrap_or(""),
            proto: Proto::parse(sp.protocol.as_deref())?,
            port: u16::try_from(sp.port)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("port {} is out of range", sp.port))?,
            // 0 is the API's "no nodePort" (kube-proxy tests `NodePort() != 0`).
            node_port: sp.node_port.filter(|&n| n != 0),
        });
    }

    // Point 8: externalIPs and ingress IPs of a family the Service does not have are ignored
    // (kube-proxy only logs them at a high verbosity); bad strings are warned about.
    let mut warnings = Vec::new();
    let mut external_ips = ip_list(
        spec.external_ips.iter().flatten().map(String::as_str),
        &format!("service {key}: externalIP"),
        &mut warnings,
    );
    external_ips.retain(has_family);
    let mut lb_ips = if type_ == "LoadBalancer" {
        let ingress = svc
            .ingress
            .iter()
            // Point 9: with ipMode Proxy (anything but VIP) the load balancer delivers to the
            // nodes itself; hostname-only entries have nothing to program.
            .filter(|ing| ing.ip_mode.as_deref().is_none_or(|m| m == "VIP"))
            .filter_map(|ing| ing.ip.as_deref().filter(|ip| !ip.is_empty()));
        ip_list(
            ingress,
            &format!("service {key}: loadBalancer ingress IP"),
            &mut warnings,
        )
    } else {
        Vec::new()
    };
    lb_ips.retain(has_family);
    let node_ports = matches!(type_, "NodePort" | "LoadBalancer");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");

    let mut frontends = Vec::new();
    for p in &ports {
        let name = match p.name {
            "" => key.to_string(),
            n => format!("{key}:{n}"),
        };
        let sets: BTreeMap<Family, EndpointSets> = families
            .iter()
            .map(|f| (*f, endpoint_sets(slices, *f, p.name, p.proto, node_name)))
            .collect();
        let mut add = |kind: FrontendKind, ip: IpAddr, port: u16| {
            // Point 10: the Local set when the policy that applies to this kind is Local.
            let local = if kind.is_external() {
                external_local
            } else {
                internal_local
            };
            let set = &sets[&Family::of(ip)];
            let addr = FrontendAddr {
                ip,
                port,
                proto: p.proto,
            };
            let spec = FrontendSpec {
                name: name.clone(),
                kind,
                snat: kind.is_external() && !local,
                drop_when_empty: local,
                backends: if local { &set.local } else { &set.cluster }.clone(),
            };
            frontends.push((addr, spec));
        };
        for &ip in &cluster_ips {
            add(FrontendKind::ClusterIp, ip, p.port);
        }
        if let (true, Some(number)) = (node_ports, p.node_port) {
            match u16::try_from(number) {
                Ok(np) => {
                    for &ip in node_addresses.iter().filter(|ip| has_family(ip)) {
                        add(FrontendKind::NodePort, ip, np);
                    }
                }
                Err(_) => warnings.push(format!(
                    "service {key}: nodePort {number} of port {}/{} is out of range; skipped",
                    p.port, p.proto
                )),
            }
        }
        for &ip in &external_ips {
            add(FrontendKind::ExternalIp, ip, p.port);
        }
        for &ip in &lb_ips {
            add(FrontendKind::LoadBalancer, ip, p.port);
        }
    }
    Ok(Some(ServiceOutput {
        cluster_ips,
        frontends,
        warnings,
    }))
}

/// Computes the desired state. Malformed objects are skipped with a warning. When several
/// frontends claim one address, the kind with the higher precedence keeps it (ClusterIP, then
/// NodePort, LoadBalancer, ExternalIP), then the first Service in "namespace/name" order, then
/// the first port of that Service; the others are left out with a warning naming both.
pub fn build<S: Borrow<Service>, E: Borrow<EndpointSlice>, N: Borrow<Node>>(
    services: &[S],
    slices: &[E],
    nodes: &[N],
    node: &NodeInfo,
) -> Built {
    let mut warnings = Vec::new();
    let mut state = DesiredState {
        node_addresses: node_addresses(nodes, node, &mut warnings),
        ..DesiredState::default()
    };

    let mut sorted: Vec<SliceObj> = slices.iter().map(|s| SliceObj::new(s.borrow())).collect();
    sorted.sort_by_cached_key(|s| s.key());
    let mut by_service: HashMap<String, Vec<SliceView>> = HashMap::new();
    for slice in sorted {
        let Some(service) = slice.service else {
            continue;
        };
        match slice.view {
            Ok(view) => by_service.entry(service).or_default().push(view),
            Err(e) => warnings.push(format!(
                "endpointslice {}/{}: {e}",
                slice.namespace, slice.name
            )),
        }
    }

    let mut sorted: Vec<ServiceObj> = services
        .iter()
        .map(|s| ServiceObj::new(s.borrow()))
        .collect();
    sorted.sort_by_cached_key(|s| s.key());
    let mut claims = Vec::new();
    for svc in &sorted {
        let key = svc.key();
        let slices: Vec<&SliceView> = by_service.get(&key).into_iter().flatten().collect();
        match service_frontends(svc, &key, &slices, &state.node_addresses, &node.name) {
            Ok(Some(out)) => {
                state.cluster_ips.extend(out.cluster_ips);
                claims.extend(out.frontends);
                warnings.extend(out.warnings);
            }
            Ok(None) => {}
            Err(e) => warnings.push(format!("service {key}: {e}")),
        }
    }
    // Stable: within one kind, Service order and then port order are kept.
    claims.sort_by_key(|(_, spec)| spec.kind.precedence());
    for (addr, spec) in claims {
        match state.frontends.entry(addr) {
            Entry::Vacant(v) => {
                v.insert(spec);
            }
            Entry::Occupied(o) => warnings.push(format!(
                "service {}: frontend {addr} ({}) is already used by {} ({})",
                spec.name,
                spec.kind,
                o.get().name,
                o.get().kind
            )),
        }
    }
    Built { state, warnings }
}

/// The conflict-resolution rank of a frontend claim, as in [`build`]: kind precedence, then
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

/// The model kept between syncs: the result of [`build`] over the objects it was given,
/// maintained object by object. A Service's frontends are recomputed only when its inputs
/// change: its Service object, the EndpointSlices labelled with its name, or the node
/// addresses (which recompute every Service). `state()` always equals what [`build`] returns
/// for the same objects, and `warnings()` its warnings.
pub struct Incremental {
    node: NodeInfo,
    nodes: Vec<Arc<Node>>,
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
        let mut m = Incremental {
            node,
            nodes: Vec::new(),
            node_warnings: Vec::new(),
            services: HashMap::new(),
            slices: HashMap::new(),
            service_slices: HashMap::new(),
            claims: HashMap::new(),
            conflicts: BTreeSet::new(),
            cluster_ip_refs: HashMap::new(),
            dirty: BTreeSet::new(),
            state: DesiredState::default(),
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

    fn refresh_node_addresses(&mut self) {
        let mut warnings = Vec::new();
        let addrs = node_addresses(&self.nodes, &self.node, &mut warnings);
        self.node_warnings = warnings;
        if addrs != self.state.node_addresses {
            self.state.node_addresses = addrs;
            self.changes.node_addresses = true;
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
            match service_frontends(
                svc,
                key,
                &views,
                &self.state.node_addresses,
                &self.node.name,
            ) {
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

    /// The warnings [`build`] gives for the same objects, in the same order.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;
    use serde::Deserialize;
    use std::net::SocketAddr;

    #[derive(Default)]
    struct Objects {
        services: Vec<Service>,
        slices: Vec<EndpointSlice>,
        nodes: Vec<Node>,
    }

    fn objects(yaml: &str) -> Objects {
        let mut o = Objects::default();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            match v["kind"].as_str() {
                Some("Service") => o.services.push(serde_yaml::from_value(v).unwrap()),
                Some("EndpointSlice") => o.slices.push(serde_yaml::from_value(v).unwrap()),
                Some("Node") => o.nodes.push(serde_yaml::from_value(v).unwrap()),
                other => panic!("unexpected kind {other:?}"),
            }
        }
        o
    }

    /// Builds on "node-a", whose fallback address is 192.168.0.1.
    fn run(yaml: &str) -> Built {
        run_with(yaml, &["192.168.0.1"])
    }

    fn run_with(yaml: &str, fallback: &[&str]) -> Built {
        let o = objects(yaml);
        build(
            &o.services,
            &o.slices,
            &o.nodes,
            &NodeInfo {
                name: "node-a".into(),
                fallback_addresses: fallback.iter().map(|a| a.parse().unwrap()).collect(),
            },
        )
    }

    fn fe(ip: &str, port: u16, proto: Proto) -> FrontendAddr {
        FrontendAddr {
            ip: ip.parse().unwrap(),
            port,
            proto,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// "10.0.0.1:80" or "[fd00::1]:80".
    fn be(s: &str) -> BackendAddr {
        let a: SocketAddr = s.parse().unwrap();
        BackendAddr {
            ip: a.ip(),
            port: a.port(),
        }
    }

    fn bes(list: &[&str]) -> Vec<BackendAddr> {
        list.iter().map(|s| be(s)).collect()
    }

    /// Backends of the frontend, panicking when it is missing.
    fn backends_of(b: &Built, ip: &str, port: u16, proto: Proto) -> Vec<BackendAddr> {
        b.state.frontends[&fe(ip, port, proto)].backends.clone()
    }

    const WEB: &str = r#"
kind: Service
apiVersion: v1
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: metrics, port: 9090, targetPort: metrics}
"#;

    #[test]
    fn proto_parse_and_number() {
        assert_eq!(Proto::parse(None), Ok(Proto::Tcp));
        assert_eq!(Proto::parse(Some("UDP")).map(Proto::number), Ok(17));
        assert_eq!(Proto::parse(Some("SCTP")).map(Proto::number), Ok(132));
        assert_eq!(Proto::Tcp.number(), 6);
        assert!(Proto::parse(Some("tcp")).is_err());
        assert_eq!(
            fe("10.0.0.1", 53, Proto::Udp).to_string(),
            "10.0.0.1:53/UDP"
        );
        assert_eq!(
            fe("fd00::1", 53, Proto::Udp).to_string(),
            "[fd00::1]:53/UDP"
        );
        assert_eq!(fe("fd00::1", 53, Proto::Udp).family(), Family::V6);
        assert_eq!(Family::parse("IPv6"), Some(Family::V6));
        assert_eq!(Family::parse("FQDN"), None);
    }

    #[test]
    fn named_ports_resolved_per_slice_and_target_port_ignored() {
        let b = run(&format!(
            r#"{WEB}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: web-a, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports:
- {{name: http, port: 8080}}
- {{name: metrics, port: 9100}}
endpoints:
- addresses: [10.0.1.1]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: web-b, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports:
- {{name: http, port: 8081}}
- {{name: metrics, port: 9101}}
endpoints:
- addresses: [10.0.2.1]
"#
        ));
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(b.state.frontends.len(), 2);
        let http = &b.state.frontends[&fe("10.96.0.10", 80, Proto::Tcp)];
        assert_eq!(http.name, "default/web:http");
        assert_eq!(http.backends, bes(&["10.0.1.1:8080", "10.0.2.1:8081"]));
        assert_eq!(
            backends_of(&b, "10.96.0.10", 9090, Proto::Tcp),
            bes(&["10.0.1.1:9100", "10.0.2.1:9101"])
        );
    }

    #[test]
    fn unnamed_port_matches_missing_or_empty_name_and_protocol() {
        let b = run(r#"
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.53
  ports:
  - {port: 53, protocol: UDP}
---
kind: EndpointSlice
metadata: {name: dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports:
- {port: 5353}
- {name: "", port: 5300, protocol: UDP}
endpoints:
- addresses: [10.0.0.5]
---
kind: EndpointSlice
metadata: {name: dns-2, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports:
- {protocol: UDP, port: 5301}
- {name: other, protocol: UDP, port: 9}
- {protocol: UDP}
endpoints:
- addresses: [10.0.0.6]
"#);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        let f = &b.state.frontends[&fe("10.96.0.53", 53, Proto::Udp)];
        assert_eq!(f.name, "kube-system/dns");
        assert_eq!(f.backends, bes(&["10.0.0.5:5300", "10.0.0.6:5301"]));
    }

    #[test]
    fn same_port_tcp_and_udp_are_two_frontends() {
        let b = run(r#"
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.53
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
  - {name: sctp, port: 53, protocol: SCTP}
---
kind: EndpointSlice
metadata: {name: dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports:
- {name: dns, port: 1053, protocol: UDP}
- {name: dns-tcp, port: 2053, protocol: TCP}
- {name: sctp, port: 3053, protocol: SCTP}
endpoints:
- addresses: [10.0.0.5]
"#);
        assert_eq!(b.state.frontends.len(), 3);
        assert_eq!(
            backends_of(&b, "10.96.0.53", 53, Proto::Udp),
            bes(&["10.0.0.5:1053"])
        );
        assert_eq!(
            backends_of(&b, "10.96.0.53", 53, Proto::Tcp),
            bes(&["10.0.0.5:2053"])
        );
        assert_eq!(
            backends_of(&b, "10.96.0.53", 53, Proto::Sctp),
            bes(&["10.0.0.5:3053"])
        );
    }

    #[test]
    fn slice_port_must_match_protocol_too() {
        let b = run(r#"
kind: Service
metadata: {name: s}
spec:
  clusterIP: 10.96.0.1
  ports: [{name: p, port: 80}]
---
kind: EndpointSlice
metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{name: p, port: 8080, protocol: UDP}]
endpoints: [{addresses: [10.0.0.1]}]
"#);
        assert_eq!(backends_of(&b, "10.96.0.1", 80, Proto::Tcp), vec![]);
    }

    #[test]
    fn readiness_and_terminating_fallback() {
        let svc = r#"
kind: Service
metadata: {name: s}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
"#;
        // ready: nil counts as ready; not-ready endpoints are excluded.
        let b = run(&format!(
            "{svc}
- {{addresses: [10.0.0.1]}}
- {{addresses: [10.0.0.2], conditions: {{ready: true}}}}
- {{addresses: [10.0.0.3], conditions: {{ready: false}}}}
- {{addresses: [10.0.0.4], conditions: {{ready: false, serving: true, terminating: true}}}}
- {{addresses: []}}
"
        ));
        assert_eq!(
            backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
            bes(&["10.0.0.1:8080", "10.0.0.2:8080"])
        );
        // No ready endpoint: fall back to serving+terminating (serving nil = true).
        let b = run(&format!(
            "{svc}
- {{addresses: [10.0.0.3], conditions: {{ready: false}}}}
- {{addresses: [10.0.0.4], conditions: {{ready: false, serving: true, terminating: true}}}}
- {{addresses: [10.0.0.5], conditions: {{ready: false, terminating: true}}}}
- {{addresses: [10.0.0.6], conditions: {{ready: false, serving: false, terminating: true}}}}
"
        ));
        assert_eq!(
            backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
            bes(&["10.0.0.4:8080", "10.0.0.5:8080"])
        );
        // Nothing usable: the frontend stays, with no backends.
        let b = run(&format!(
            "{svc}
- {{addresses: [10.0.0.3], conditions: {{ready: false}}}}
- {{addresses: [10.0.0.6], conditions: {{ready: false, serving: false, terminating: true}}}}
"
        ));
        assert_eq!(backends_of(&b, "10.96.0.1", 80, Proto::Tcp), vec![]);
    }

    #[test]
    fn uses_first_address_only() {
        let b = run(r#"
kind: Service
metadata: {name: s}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1, 10.0.0.2]}]
"#);
        assert_eq!(
            backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
            bes(&["10.0.0.1:8080"])
        );
    }

    #[test]
    fn duplicate_ip_non_terminating_wins_and_backends_deduplicated() {
        let slice = |name: &str, eps: &str| {
            format!(
                "---
kind: EndpointSlice
metadata: {{name: {name}, labels: {{kubernetes.io/service-name: s}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints: {eps}
"
            )
        };
        let svc = "kind: Service
metadata: {name: s}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
";
        // The terminating (not ready) copy comes first; the ready copy must win.
        let b = run(&format!(
            "{svc}{}{}",
            slice("s-1", "[{addresses: [10.0.0.9], conditions: {ready: false, terminating: true}}, {addresses: [10.0.0.1]}]"),
            slice("s-2", "[{addresses: [10.0.0.9]}, {addresses: [10.0.0.1]}]"),
        ));
        assert_eq!(
            backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
            bes(&["10.0.0.1:8080", "10.0.0.9:8080"])
        );
        // Reverse order: the non-terminating one is kept.
        let b = run(&format!(
            "{svc}{}{}",
            slice("s-1", "[{addresses: [10.0.0.9]}]"),
            slice(
                "s-2",
                "[{addresses: [10.0.0.9], conditions: {ready: false, terminating: true}}]"
            ),
        ));
        assert_eq!(
            backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
            bes(&["10.0.0.9:8080"])
        );
    }

    #[test]
    fn skip_labels_headless_external_name() {
        let b = run(r#"
kind: Service
metadata: {name: other-proxy, labels: {service.kubernetes.io/service-proxy-name: foo}}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: Service
metadata: {name: labelled-headless, labels: {service.kubernetes.io/headless: ""}}
spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
---
kind: Service
metadata: {name: headless}
spec: {clusterIP: None, ports: [{port: 80}]}
---
kind: Service
metadata: {name: no-ip}
spec: {clusterIP: "", ports: [{port: 80}]}
---
kind: Service
metadata: {name: no-spec}
---
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.com, clusterIP: 10.96.0.3, ports: [{port: 80}]}
---
kind: Service
metadata: {name: ok}
spec: {clusterIP: 10.96.0.4, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata:
  name: ok-foreign
  labels: {kubernetes.io/service-name: ok, service.kubernetes.io/service-proxy-name: foo}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
---
kind: EndpointSlice
metadata:
  name: ok-headless
  labels: {kubernetes.io/service-name: ok, service.kubernetes.io/headless: ""}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.2]}]
---
kind: EndpointSlice
metadata: {name: ok-good, labels: {kubernetes.io/service-name: ok}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.3]}]
"#);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(
            b.state.frontends.keys().copied().collect::<Vec<_>>(),
            vec![fe("10.96.0.4", 80, Proto::Tcp)]
        );
        assert_eq!(
            backends_of(&b, "10.96.0.4", 80, Proto::Tcp),
            bes(&["10.0.0.3:8080"])
        );
    }

    #[test]
    fn slices_need_service_name_label_same_namespace_and_family() {
        let b = run(r#"
kind: Service
metadata: {name: s, namespace: a}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: unlabelled, namespace: a}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
---
kind: EndpointSlice
metadata: {name: other-ns, namespace: b, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.2]}]
---
kind: EndpointSlice
metadata: {name: v6, namespace: a, labels: {kubernetes.io/service-name: s}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00::1"]}]
---
kind: EndpointSlice
metadata: {name: fqdn, namespace: a, labels: {kubernetes.io/service-name: s}}
addressType: FQDN
ports: [{port: 8080}]
endpoints: [{addresses: [example.com]}]
---
kind: EndpointSlice
metadata: {name: good, namespace: a, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.3]}]
"#);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(
            backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
            bes(&["10.0.0.3:8080"])
        );
    }

    #[test]
    fn cluster_ips_of_both_families() {
        let b = run(r#"
kind: Service
metadata: {name: v6only}
spec: {clusterIP: "fd00::10", clusterIPs: ["fd00::10"], ipFamilies: [IPv6], ports: [{port: 80}]}
---
kind: Service
metadata: {name: dual}
spec: {clusterIP: "fd00::11", clusterIPs: ["fd00::11", 10.96.0.11], ports: [{name: http, port: 80}]}
---
kind: Service
metadata: {name: no-cluster-ips}
spec: {clusterIP: 10.96.0.12, ports: [{port: 81}]}
---
kind: Service
metadata: {name: v6-no-families}
spec: {clusterIP: "fd00::13", ports: [{port: 82}]}
"#);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(
            b.state.frontends.keys().copied().collect::<Vec<_>>(),
            vec![
                fe("10.96.0.11", 80, Proto::Tcp),
                fe("10.96.0.12", 81, Proto::Tcp),
                fe("fd00::10", 80, Proto::Tcp),
                fe("fd00::11", 80, Proto::Tcp),
                fe("fd00::13", 82, Proto::Tcp),
            ]
        );
        for a in ["10.96.0.11", "fd00::11"] {
            assert_eq!(
                b.state.frontends[&fe(a, 80, Proto::Tcp)].name,
                "default/dual:http"
            );
        }
    }

    #[test]
    fn ip_families_pick_the_cluster_ips() {
        let b = run(r#"
kind: Service
metadata: {name: a-v4-of-dual}
spec:
  clusterIP: 10.96.0.1
  clusterIPs: [10.96.0.1, "fd00::1"]
  ipFamilies: [IPv4]
  ports: [{port: 80}]
---
kind: Service
metadata: {name: b-v6-first}
spec:
  clusterIP: "fd00::2"
  clusterIPs: ["fd00::2", 10.96.0.2]
  ipFamilies: [IPv6, IPv4]
  ports: [{port: 80}]
---
kind: Service
metadata: {name: c-only-cluster-ip}
spec: {clusterIP: "fd00::3", ipFamilies: [IPv6], ports: [{port: 80}]}
---
kind: Service
metadata: {name: d-mismatch}
spec: {clusterIP: 10.96.0.4, clusterIPs: [10.96.0.4], ipFamilies: [IPv6], ports: [{port: 80}]}
---
kind: Service
metadata: {name: e-bad-family}
spec: {clusterIP: 10.96.0.5, ipFamilies: [IPv5], ports: [{port: 80}]}
---
kind: Service
metadata: {name: f-bad-second}
spec: {clusterIP: 10.96.0.6, clusterIPs: [10.96.0.6, "fd00::x"], ports: [{port: 80}]}
---
kind: Service
metadata: {name: g-two-of-a-family}
spec: {clusterIP: 10.96.0.7, clusterIPs: [10.96.0.7, 10.96.0.77], ports: [{port: 80}]}
---
kind: Service
metadata: {name: h-headless-dual}
spec: {clusterIP: None, clusterIPs: [None], ipFamilies: [IPv4, IPv6], ports: [{port: 80}]}
"#);
        assert_eq!(
            b.warnings,
            vec![
                r#"service default/d-mismatch: clusterIP "10.96.0.4" is not an IPv6 address (ipFamilies[0] is IPv6)"#,
                r#"service default/e-bad-family: ipFamilies[0] "IPv5" is not IPv4 or IPv6"#,
                r#"service default/f-bad-second: clusterIP "fd00::x" is not an IP address"#,
            ]
        );
        assert_eq!(
            b.state.cluster_ips,
            ["10.96.0.1", "10.96.0.2", "10.96.0.7", "fd00::2", "fd00::3"]
                .map(ip)
                .into()
        );
        assert_eq!(b.state.frontends.len(), 5);
    }

    #[test]
    fn malformed_objects_warn_and_are_skipped() {
        let b = run(r#"
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.0.0.300, ports: [{port: 80}]}
---
kind: Service
metadata: {name: proto}
spec: {clusterIP: 10.96.0.2, ports: [{port: 80, protocol: ICMP}]}
---
kind: Service
metadata: {name: range}
spec: {clusterIP: 10.96.0.3, ports: [{port: 70000}]}
---
kind: Service
metadata: {name: good}
spec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: good-bad, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1]}, {addresses: ["fd00::1"]}]
---
kind: EndpointSlice
metadata: {name: good-proto, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
ports: [{port: 8080, protocol: tcp}]
endpoints: [{addresses: [10.0.0.2]}]
---
kind: EndpointSlice
metadata: {name: good-ok, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.3]}]
"#);
        assert_eq!(
            b.warnings,
            vec![
                r#"endpointslice default/good-bad: address "fd00::1" is not an IPv4 address"#,
                r#"endpointslice default/good-proto: unknown protocol "tcp""#,
                r#"service default/proto: unknown protocol "ICMP""#,
                "service default/range: port 70000 is out of range",
                r#"service default/web: clusterIP "10.0.0.300" is not an IP address"#,
            ]
        );
        assert_eq!(b.state.frontends.len(), 1);
        assert_eq!(b.state.cluster_ips, [ip("10.96.0.5")].into());
        assert_eq!(
            backends_of(&b, "10.96.0.5", 80, Proto::Tcp),
            bes(&["10.0.0.3:8080"])
        );
    }

    #[test]
    fn conflicting_frontend_keeps_first_service_and_port() {
        let b = run(r#"
kind: Service
metadata: {name: b}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}, {port: 81}]}
---
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: Service
metadata: {name: twice}
spec: {clusterIP: 10.96.0.4, ports: [{name: a, port: 80}, {name: b, port: 80}]}
"#);
        assert_eq!(
            b.warnings,
            vec![
                "service default/b: frontend 10.96.0.1:80/TCP (ClusterIP) is already used by default/a (ClusterIP)",
                "service default/twice:b: frontend 10.96.0.4:80/TCP (ClusterIP) is already used by default/twice:a (ClusterIP)",
            ]
        );
        // Only the conflicting frontends are left out, not their Services.
        let names: Vec<(FrontendAddr, &str)> = b
            .state
            .frontends
            .iter()
            .map(|(a, f)| (*a, f.name.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                (fe("10.96.0.1", 80, Proto::Tcp), "default/a"),
                (fe("10.96.0.1", 81, Proto::Tcp), "default/b"),
                (fe("10.96.0.4", 80, Proto::Tcp), "default/twice:a"),
            ]
        );
    }

    #[test]
    fn service_without_slices_has_empty_backends() {
        let b = run(WEB);
        assert_eq!(b.state.frontends.len(), 2);
        assert!(b.state.frontends.values().all(|f| f.backends.is_empty()));
    }

    /// Frontend addresses of the given kind, in order.
    fn of_kind(b: &Built, kind: FrontendKind) -> Vec<FrontendAddr> {
        let fes = b.state.frontends.iter();
        fes.filter(|(_, f)| f.kind == kind)
            .map(|(a, _)| *a)
            .collect()
    }

    const NODE_A: &str = r#"
kind: Node
apiVersion: v1
metadata: {name: node-a}
status:
  addresses:
  - {type: Hostname, address: node-a}
  - {type: InternalIP, address: 10.1.0.5}
  - {type: InternalIP, address: "fd00::5"}
  - {type: InternalIP, address: 127.0.0.1}
  - {type: ExternalIP, address: 203.0.113.5}
  - {type: InternalDNS, address: 10.1.0.99}
  - {type: ExternalIP, address: 10.1.0.5}
"#;

    /// Ready endpoints on node-a and node-b, a serving+terminating one on node-a, and one
    /// without a node name.
    const WEB_SLICE: &str = r#"
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.0.1.1], nodeName: node-a}
- {addresses: [10.0.2.1], nodeName: node-b}
- {addresses: [10.0.1.2], nodeName: node-a, conditions: {ready: false, terminating: true}}
- {addresses: [10.0.3.1]}
"#;

    const NODE_PORT_WEB: &str = r#"
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, nodePort: 30080}]
"#;

    #[test]
    fn node_port_served_on_node_object_addresses() {
        let b = run(&format!(
            "{NODE_PORT_WEB}---{NODE_A}---
kind: Node
metadata: {{name: node-b}}
status: {{addresses: [{{type: InternalIP, address: 10.1.0.6}}]}}
---{WEB_SLICE}"
        ));
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        // Loopback, Hostname and InternalDNS entries are ignored, duplicates dropped, and the
        // fallback is not used; node-b's addresses are not ours. The IPv6 address is a node
        // address, but this single-stack IPv4 Service gets no NodePort on it.
        assert_eq!(
            b.state.node_addresses,
            vec![ip("10.1.0.5"), ip("fd00::5"), ip("203.0.113.5")]
        );
        assert_eq!(
            of_kind(&b, FrontendKind::NodePort),
            vec![
                fe("10.1.0.5", 30080, Proto::Tcp),
                fe("203.0.113.5", 30080, Proto::Tcp)
            ]
        );
        assert_eq!(
            of_kind(&b, FrontendKind::ClusterIp),
            vec![fe("10.96.0.10", 80, Proto::Tcp)]
        );
        assert_eq!(b.state.frontends.len(), 3);
        let np = &b.state.frontends[&fe("203.0.113.5", 30080, Proto::Tcp)];
        assert_eq!(
            np,
            &FrontendSpec {
                name: "default/web:http".into(),
                kind: FrontendKind::NodePort,
                snat: true,
                drop_when_empty: false,
                backends: bes(&["10.0.1.1:8080", "10.0.2.1:8080", "10.0.3.1:8080"]),
            }
        );
        let cip = &b.state.frontends[&fe("10.96.0.10", 80, Proto::Tcp)];
        assert_eq!(
            (cip.kind, cip.snat, cip.drop_when_empty),
            (FrontendKind::ClusterIp, false, false)
        );
        assert_eq!(cip.backends, np.backends);
    }

    #[test]
    fn node_port_on_fallback_addresses_without_usable_node_object() {
        // No Node object at all; loopback and duplicate fallbacks are dropped.
        let b = run_with(
            NODE_PORT_WEB,
            &["192.168.0.1", "127.0.0.1", "192.168.0.2", "192.168.0.1"],
        );
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(
            b.state.node_addresses,
            vec![ip("192.168.0.1"), ip("192.168.0.2")]
        );
        assert_eq!(
            of_kind(&b, FrontendKind::NodePort),
            vec![
                fe("192.168.0.1", 30080, Proto::Tcp),
                fe("192.168.0.2", 30080, Proto::Tcp)
            ]
        );
        // A Node object with no usable address: the fallback too, and a bad address warns.
        let b = run(&format!(
            "{NODE_PORT_WEB}---
kind: Node
metadata: {{name: node-a}}
status:
  addresses:
  - {{type: InternalIP, address: 127.0.0.1}}
  - {{type: InternalIP, address: \"::1\"}}
  - {{type: InternalIP, address: \"fe80::5\"}}
  - {{type: ExternalIP, address: not-an-ip}}
"
        ));
        assert_eq!(
            b.warnings,
            vec![r#"node node-a: address "not-an-ip" is not an IP address; skipped"#]
        );
        assert_eq!(b.state.node_addresses, vec![ip("192.168.0.1")]);
        assert_eq!(
            of_kind(&b, FrontendKind::NodePort),
            vec![fe("192.168.0.1", 30080, Proto::Tcp)]
        );
        // Nothing at all: no NodePort frontends, the ClusterIP stays.
        let b = run_with(NODE_PORT_WEB, &[]);
        assert!(b.state.node_addresses.is_empty());
        assert_eq!(
            b.state.frontends.keys().copied().collect::<Vec<_>>(),
            vec![fe("10.96.0.10", 80, Proto::Tcp)]
        );
    }

    #[test]
    fn load_balancer_ingress_ip_modes() {
        let b = run(r#"
kind: Service
metadata: {name: lb}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  ports: [{port: 443, nodePort: 30443}]
status:
  loadBalancer:
    ingress:
    - {ip: 198.51.100.1}
    - {ip: 198.51.100.2, ipMode: VIP}
    - {ip: 198.51.100.3, ipMode: Proxy}
    - {hostname: lb.example.com}
    - {hostname: lb2.example.com, ip: 198.51.100.4}
    - {ip: "2001:db8::1"}
    - {ip: 198.51.100.300}
    - {ip: 198.51.100.1, ipMode: VIP}
---
kind: Service
metadata: {name: stale}
spec: {clusterIP: 10.96.0.21, ports: [{port: 443}]}
status: {loadBalancer: {ingress: [{ip: 198.51.100.9}]}}
"#);
        assert_eq!(
            b.warnings,
            vec![
                r#"service default/lb: loadBalancer ingress IP "198.51.100.300" is not an IP address; skipped"#
            ]
        );
        // Proxy and hostname-only entries are not programmed; neither is the status of a
        // Service that is not of type LoadBalancer.
        assert_eq!(
            of_kind(&b, FrontendKind::LoadBalancer),
            vec![
                fe("198.51.100.1", 443, Proto::Tcp),
                fe("198.51.100.2", 443, Proto::Tcp),
                fe("198.51.100.4", 443, Proto::Tcp),
            ]
        );
        let f = &b.state.frontends[&fe("198.51.100.2", 443, Proto::Tcp)];
        assert_eq!(
            (f.name.as_str(), f.snat, f.drop_when_empty),
            ("default/lb", true, false)
        );
        assert!(f.backends.is_empty());
    }

    #[test]
    fn load_balancer_also_gets_node_ports_and_cluster_ip() {
        let b = run(&format!(
            r#"
kind: Service
metadata: {{name: web}}
spec:
  type: LoadBalancer
  allocateLoadBalancerNodePorts: false
  clusterIP: 10.96.0.10
  ports:
  - {{name: http, port: 80, nodePort: 30080}}
  - {{name: https, port: 443}}
status: {{loadBalancer: {{ingress: [{{ip: 198.51.100.1}}]}}}}
---{WEB_SLICE}"#
        ));
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        let kinds: Vec<(FrontendAddr, FrontendKind)> = b
            .state
            .frontends
            .iter()
            .map(|(a, f)| (*a, f.kind))
            .collect();
        // https has no nodePort (allocateLoadBalancerNodePorts: false): no NodePort frontend.
        assert_eq!(
            kinds,
            vec![
                (fe("10.96.0.10", 80, Proto::Tcp), FrontendKind::ClusterIp),
                (fe("10.96.0.10", 443, Proto::Tcp), FrontendKind::ClusterIp),
                (fe("192.168.0.1", 30080, Proto::Tcp), FrontendKind::NodePort),
                (
                    fe("198.51.100.1", 80, Proto::Tcp),
                    FrontendKind::LoadBalancer
                ),
                (
                    fe("198.51.100.1", 443, Proto::Tcp),
                    FrontendKind::LoadBalancer
                ),
            ]
        );
        assert!(b
            .state
            .frontends
            .values()
            .all(|f| f.snat == f.kind.is_external()));
        assert_eq!(
            backends_of(&b, "198.51.100.1", 80, Proto::Tcp),
            bes(&["10.0.1.1:8080", "10.0.2.1:8080", "10.0.3.1:8080"])
        );
        assert_eq!(b.state.cluster_ips, [ip("10.96.0.10")].into());
    }

    #[test]
    fn external_ips_on_cluster_ip_service() {
        let b = run(r#"
kind: Service
metadata: {name: ext, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  externalIPs: [203.0.113.10, "fd00::10", bogus, 203.0.113.11, 203.0.113.10]
  ports: [{name: dns, port: 53, protocol: UDP}, {name: web, port: 80, nodePort: 30080}]
---
kind: Service
metadata: {name: extname, namespace: shop}
spec: {type: ExternalName, externalName: example.com, externalIPs: [203.0.113.20], ports: [{port: 80}]}
"#);
        assert_eq!(
            b.warnings,
            vec![r#"service shop/ext: externalIP "bogus" is not an IP address; skipped"#]
        );
        assert_eq!(
            of_kind(&b, FrontendKind::ExternalIp),
            vec![
                fe("203.0.113.10", 53, Proto::Udp),
                fe("203.0.113.10", 80, Proto::Tcp),
                fe("203.0.113.11", 53, Proto::Udp),
                fe("203.0.113.11", 80, Proto::Tcp),
            ]
        );
        // A ClusterIP Service gets no NodePort even if a port carries one.
        assert!(of_kind(&b, FrontendKind::NodePort).is_empty());
        assert_eq!(b.state.frontends.len(), 6);
        let f = &b.state.frontends[&fe("203.0.113.11", 53, Proto::Udp)];
        assert_eq!(
            (f.name.as_str(), f.snat, f.drop_when_empty),
            ("shop/ext:dns", true, false)
        );
    }

    #[test]
    fn external_traffic_policy_local_uses_local_endpoints_without_snat() {
        let svc = r#"
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  clusterIP: 10.96.0.10
  externalIPs: [203.0.113.10]
  ports: [{name: http, port: 80, nodePort: 30080}]
status: {loadBalancer: {ingress: [{ip: 198.51.100.1}]}}
"#;
        let b = run(&format!("{svc}---{WEB_SLICE}"));
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(b.state.frontends.len(), 4);
        for (addr, f) in &b.state.frontends {
            if f.kind == FrontendKind::ClusterIp {
                // iTP Cluster: the whole cluster set, rejected when empty.
                assert_eq!((f.snat, f.drop_when_empty), (false, false), "{addr}");
                assert_eq!(
                    f.backends,
                    bes(&["10.0.1.1:8080", "10.0.2.1:8080", "10.0.3.1:8080"])
                );
            } else {
                assert_eq!((f.snat, f.drop_when_empty), (false, true), "{addr}");
                assert_eq!(f.backends, bes(&["10.0.1.1:8080"]), "{addr}");
            }
        }
        // No local ready endpoint: local serving+terminating ones, even with remote ready ones.
        let b = run(&format!(
            r#"{svc}---
kind: EndpointSlice
metadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
- {{addresses: [10.0.2.1], nodeName: node-b}}
- {{addresses: [10.0.1.2], nodeName: node-a, conditions: {{ready: false, terminating: true}}}}
- {{addresses: [10.0.1.3], nodeName: node-a, conditions: {{ready: false}}}}
"#
        ));
        assert_eq!(
            backends_of(&b, "192.168.0.1", 30080, Proto::Tcp),
            bes(&["10.0.1.2:8080"])
        );
        assert_eq!(
            backends_of(&b, "10.96.0.10", 80, Proto::Tcp),
            bes(&["10.0.2.1:8080"])
        );
        // No local endpoint at all: empty, dropped rather than rejected.
        let b = run(&format!(
            r#"{svc}---
kind: EndpointSlice
metadata: {{name: web-1, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: [10.0.2.1], nodeName: node-b}}]
"#
        ));
        let f = &b.state.frontends[&fe("198.51.100.1", 80, Proto::Tcp)];
        assert!(f.backends.is_empty() && f.drop_when_empty && !f.snat);
        let f = &b.state.frontends[&fe("10.96.0.10", 80, Proto::Tcp)];
        assert_eq!(f.backends, bes(&["10.0.2.1:8080"]));
    }

    #[test]
    fn external_traffic_policy_cluster_snats() {
        for policy in ["", "externalTrafficPolicy: Cluster"] {
            let b = run(&format!(
                r#"
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  {policy}
  clusterIP: 10.96.0.10
  externalIPs: [203.0.113.10]
  ports: [{{name: http, port: 80, nodePort: 30080}}]
---{WEB_SLICE}"#
            ));
            assert!(b.warnings.is_empty(), "{:?}", b.warnings);
            assert_eq!(b.state.frontends.len(), 3);
            for f in b.state.frontends.values() {
                assert_eq!(f.snat, f.kind != FrontendKind::ClusterIp, "{policy}");
                assert!(!f.drop_when_empty);
                assert_eq!(
                    f.backends,
                    bes(&["10.0.1.1:8080", "10.0.2.1:8080", "10.0.3.1:8080"])
                );
            }
        }
    }

    #[test]
    fn internal_traffic_policy_local_for_cluster_ip() {
        let svc = r#"
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  internalTrafficPolicy: Local
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, nodePort: 30080}]
"#;
        let b = run(&format!("{svc}---{WEB_SLICE}"));
        let f = &b.state.frontends[&fe("10.96.0.10", 80, Proto::Tcp)];
        assert_eq!(
            f,
            &FrontendSpec {
                name: "default/web:http".into(),
                kind: FrontendKind::ClusterIp,
                snat: false,
                drop_when_empty: true,
                backends: bes(&["10.0.1.1:8080"]),
            }
        );
        // The NodePort follows externalTrafficPolicy (Cluster), not iTP.
        let f = &b.state.frontends[&fe("192.168.0.1", 30080, Proto::Tcp)];
        assert_eq!((f.snat, f.drop_when_empty), (true, false));
        assert_eq!(
            f.backends,
            bes(&["10.0.1.1:8080", "10.0.2.1:8080", "10.0.3.1:8080"])
        );
        // No local endpoints: the ClusterIP is dropped, not rejected.
        let b = run(svc);
        let f = &b.state.frontends[&fe("10.96.0.10", 80, Proto::Tcp)];
        assert!(f.backends.is_empty() && f.drop_when_empty);
    }

    #[test]
    fn type_change_cluster_ip_to_node_port_adds_frontends() {
        let svc = |type_: &str| {
            format!(
                r#"
kind: Service
metadata: {{name: web}}
spec:
  type: {type_}
  clusterIP: 10.96.0.10
  ports: [{{name: http, port: 80, nodePort: 30080}}, {{name: dns, port: 53, protocol: UDP, nodePort: 30053}}]
---{WEB_SLICE}"#
            )
        };
        let before = run(&svc("ClusterIP"));
        let after = run(&svc("NodePort"));
        assert!(after.warnings.is_empty(), "{:?}", after.warnings);
        assert_eq!(
            before.state.frontends.keys().copied().collect::<Vec<_>>(),
            vec![
                fe("10.96.0.10", 53, Proto::Udp),
                fe("10.96.0.10", 80, Proto::Tcp)
            ]
        );
        let added: Vec<FrontendAddr> = after
            .state
            .frontends
            .keys()
            .filter(|a| !before.state.frontends.contains_key(a))
            .copied()
            .collect();
        assert_eq!(
            added,
            vec![
                fe("192.168.0.1", 30053, Proto::Udp),
                fe("192.168.0.1", 30080, Proto::Tcp)
            ]
        );
        for (addr, f) in &before.state.frontends {
            assert_eq!(&after.state.frontends[addr], f);
        }
        // And back: the NodePorts go away.
        assert_eq!(run(&svc("ClusterIP")).state, before.state);
    }

    #[test]
    fn cluster_ips_of_accepted_services() {
        let b = run(r#"
kind: Service
metadata: {name: a-plain}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: Service
metadata: {name: b-dual}
spec: {clusterIP: "fd00::2", clusterIPs: ["fd00::2", 10.96.0.2], ports: [{port: 80}]}
---
kind: Service
metadata: {name: c-node-port}
spec: {type: NodePort, clusterIP: 10.96.0.3, ports: [{port: 80, nodePort: 30003}]}
---
kind: Service
metadata: {name: d-no-ports}
spec: {clusterIP: 10.96.0.4}
---
kind: Service
metadata: {name: e-loses-conflict}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: Service
metadata: {name: f-headless}
spec: {clusterIP: None, ports: [{port: 80}]}
---
kind: Service
metadata: {name: g-foreign, labels: {service.kubernetes.io/service-proxy-name: other}}
spec: {clusterIP: 10.96.0.7, ports: [{port: 80}]}
---
kind: Service
metadata: {name: h-external-name}
spec: {type: ExternalName, externalName: example.com, clusterIP: 10.96.0.8}
---
kind: Service
metadata: {name: i-malformed}
spec: {clusterIP: 10.96.0.9, ports: [{port: 80, protocol: ICMP}]}
---
kind: Service
metadata: {name: j-v6}
spec: {clusterIP: "fd00::10", ports: [{port: 80}]}
"#);
        assert_eq!(
            b.state.cluster_ips,
            [
                "10.96.0.1",
                "10.96.0.2",
                "10.96.0.3",
                "10.96.0.4",
                "fd00::2",
                "fd00::10"
            ]
            .map(ip)
            .into()
        );
    }

    #[test]
    fn conflicting_node_ports_warn() {
        let b = run_with(
            r#"
kind: Service
metadata: {name: b}
spec:
  type: NodePort
  clusterIP: 10.96.0.2
  ports: [{name: web, port: 80, nodePort: 30080}, {name: other, port: 81, nodePort: 30081}]
---
kind: Service
metadata: {name: a}
spec: {type: NodePort, clusterIP: 10.96.0.1, ports: [{port: 80, nodePort: 30080}]}
---
kind: Service
metadata: {name: c-udp}
spec: {type: NodePort, clusterIP: 10.96.0.3, ports: [{port: 80, protocol: UDP, nodePort: 30080}]}
---
kind: Service
metadata: {name: d-range}
spec: {type: NodePort, clusterIP: 10.96.0.4, ports: [{port: 80, nodePort: 70000}]}
"#,
            &["192.168.0.1", "192.168.0.2"],
        );
        assert_eq!(
            b.warnings,
            vec![
                "service default/d-range: nodePort 70000 of port 80/TCP is out of range; skipped",
                "service default/b:web: frontend 192.168.0.1:30080/TCP (NodePort) is already used by default/a (NodePort)",
                "service default/b:web: frontend 192.168.0.2:30080/TCP (NodePort) is already used by default/a (NodePort)",
            ]
        );
        let np: Vec<(FrontendAddr, &str)> = b
            .state
            .frontends
            .iter()
            .filter(|(_, f)| f.kind == FrontendKind::NodePort)
            .map(|(a, f)| (*a, f.name.as_str()))
            .collect();
        assert_eq!(
            np,
            vec![
                (fe("192.168.0.1", 30080, Proto::Tcp), "default/a"),
                (fe("192.168.0.1", 30080, Proto::Udp), "default/c-udp"),
                (fe("192.168.0.1", 30081, Proto::Tcp), "default/b:other"),
                (fe("192.168.0.2", 30080, Proto::Tcp), "default/a"),
                (fe("192.168.0.2", 30080, Proto::Udp), "default/c-udp"),
                (fe("192.168.0.2", 30081, Proto::Tcp), "default/b:other"),
            ]
        );
        // The Services' other frontends are kept, d-range's ClusterIP included.
        assert_eq!(of_kind(&b, FrontendKind::ClusterIp).len(), 5);
    }

    #[test]
    fn external_ip_cannot_take_another_services_cluster_ip() {
        let b = run(r#"
kind: Service
metadata: {name: a-hijack}
spec: {clusterIP: 10.96.0.1, externalIPs: [10.96.0.2], ports: [{port: 80}]}
---
kind: Service
metadata: {name: b-victim}
spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
"#);
        assert_eq!(
            b.warnings,
            vec!["service default/a-hijack: frontend 10.96.0.2:80/TCP (ExternalIP) is already used by default/b-victim (ClusterIP)"]
        );
        let f = &b.state.frontends[&fe("10.96.0.2", 80, Proto::Tcp)];
        assert_eq!(
            (f.name.as_str(), f.kind),
            ("default/b-victim", FrontendKind::ClusterIp)
        );
    }

    /// A dual-stack NodePort Service with an IPv4 and an IPv6 EndpointSlice.
    const DUAL_WEB: &str = r#"
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  ipFamilies: [IPv4, IPv6]
  ipFamilyPolicy: PreferDualStack
  ports: [{name: http, port: 80, nodePort: 30080}]
---
kind: EndpointSlice
metadata: {name: web-v4, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: [10.0.1.1], nodeName: node-a}
- {addresses: [10.0.2.1], nodeName: node-b}
---
kind: EndpointSlice
metadata: {name: web-v6, labels: {kubernetes.io/service-name: web}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
- {addresses: ["fd00:1::1"], nodeName: node-a}
- {addresses: ["fd00:2::1"], nodeName: node-b}
- {addresses: ["fd00:1::2"], nodeName: node-a, conditions: {ready: false}}
---
kind: EndpointSlice
metadata: {name: web-fqdn, labels: {kubernetes.io/service-name: web}}
addressType: FQDN
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [web.example.com]}]
"#;

    #[test]
    fn dual_stack_frontends_take_backends_of_their_family() {
        let b = run_with(DUAL_WEB, &["192.168.0.1", "2001:db8::1"]);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(
            b.state.frontends.keys().copied().collect::<Vec<_>>(),
            vec![
                fe("10.96.0.10", 80, Proto::Tcp),
                fe("192.168.0.1", 30080, Proto::Tcp),
                fe("2001:db8::1", 30080, Proto::Tcp),
                fe("fd00:96::10", 80, Proto::Tcp),
            ]
        );
        let v4 = bes(&["10.0.1.1:8080", "10.0.2.1:8080"]);
        let v6 = bes(&["[fd00:1::1]:8080", "[fd00:2::1]:8080"]);
        assert_eq!(backends_of(&b, "10.96.0.10", 80, Proto::Tcp), v4);
        assert_eq!(backends_of(&b, "192.168.0.1", 30080, Proto::Tcp), v4);
        assert_eq!(backends_of(&b, "fd00:96::10", 80, Proto::Tcp), v6);
        assert_eq!(backends_of(&b, "2001:db8::1", 30080, Proto::Tcp), v6);
        for (addr, f) in &b.state.frontends {
            assert_eq!(f.name, "default/web:http");
            assert_eq!(f.snat, f.kind == FrontendKind::NodePort, "{addr}");
            assert!(f.backends.iter().all(|b| Family::of(b.ip) == addr.family()));
        }
        assert_eq!(
            b.state.cluster_ips,
            [ip("10.96.0.10"), ip("fd00:96::10")].into()
        );
        // eTP Local: the local set of each family.
        let b = run_with(
            &DUAL_WEB.replace(
                "ipFamilyPolicy: PreferDualStack",
                "externalTrafficPolicy: Local",
            ),
            &["192.168.0.1", "2001:db8::1"],
        );
        assert_eq!(
            backends_of(&b, "2001:db8::1", 30080, Proto::Tcp),
            bes(&["[fd00:1::1]:8080"])
        );
        assert_eq!(
            backends_of(&b, "192.168.0.1", 30080, Proto::Tcp),
            bes(&["10.0.1.1:8080"])
        );
        // The same Service single-stack IPv4: the IPv6 slice and node address are not used.
        let b = run_with(
            &DUAL_WEB
                .replace(
                    "clusterIPs: [10.96.0.10, \"fd00:96::10\"]",
                    "clusterIPs: [10.96.0.10]",
                )
                .replace("ipFamilies: [IPv4, IPv6]", "ipFamilies: [IPv4]"),
            &["192.168.0.1", "2001:db8::1"],
        );
        assert_eq!(
            b.state.frontends.keys().copied().collect::<Vec<_>>(),
            vec![
                fe("10.96.0.10", 80, Proto::Tcp),
                fe("192.168.0.1", 30080, Proto::Tcp),
            ]
        );
    }

    #[test]
    fn single_stack_ipv6_service() {
        let b = run_with(
            r#"
kind: Service
metadata: {name: web6, namespace: shop}
spec:
  type: NodePort
  clusterIP: "fd00:96::20"
  clusterIPs: ["fd00:96::20"]
  ipFamilies: [IPv6]
  ports: [{name: http, port: 80, nodePort: 30080}, {name: dns, port: 53, protocol: UDP}]
---
kind: EndpointSlice
metadata: {name: web6-1, namespace: shop, labels: {kubernetes.io/service-name: web6}}
addressType: IPv6
ports: [{name: http, port: 8080}, {name: dns, port: 5353, protocol: UDP}]
endpoints:
- {addresses: ["fd00:1::1"]}
- {addresses: ["fd00:1::2"], conditions: {ready: false, terminating: true}}
- {addresses: ["fd00:1::3"]}
---
kind: EndpointSlice
metadata: {name: web6-v4, namespace: shop, labels: {kubernetes.io/service-name: web6}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
"#,
            &["192.168.0.1", "2001:db8::1"],
        );
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(
            b.state.frontends.keys().copied().collect::<Vec<_>>(),
            vec![
                fe("2001:db8::1", 30080, Proto::Tcp),
                fe("fd00:96::20", 53, Proto::Udp),
                fe("fd00:96::20", 80, Proto::Tcp),
            ]
        );
        assert_eq!(
            backends_of(&b, "fd00:96::20", 80, Proto::Tcp),
            bes(&["[fd00:1::1]:8080", "[fd00:1::3]:8080"])
        );
        assert_eq!(
            backends_of(&b, "fd00:96::20", 53, Proto::Udp),
            bes(&["[fd00:1::1]:5353", "[fd00:1::3]:5353"])
        );
        let np = &b.state.frontends[&fe("2001:db8::1", 30080, Proto::Tcp)];
        assert_eq!(
            (np.name.as_str(), np.kind, np.snat),
            ("shop/web6:http", FrontendKind::NodePort, true)
        );
        assert_eq!(b.state.cluster_ips, [ip("fd00:96::20")].into());
    }

    #[test]
    fn ipv6_node_ports_on_ipv6_node_addresses() {
        let node = r#"
kind: Node
metadata: {name: node-a}
status:
  addresses:
  - {type: InternalIP, address: 10.1.0.5}
  - {type: InternalIP, address: "fd00:1::5"}
  - {type: InternalIP, address: "fe80::5"}
  - {type: InternalIP, address: "::1"}
  - {type: ExternalIP, address: "2001:db8::5"}
  - {type: ExternalIP, address: "fd00:1::5"}
"#;
        let b = run(&format!("{DUAL_WEB}---{node}"));
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        // Link-local and loopback addresses are no node addresses; duplicates are dropped.
        assert_eq!(
            b.state.node_addresses,
            vec![ip("10.1.0.5"), ip("fd00:1::5"), ip("2001:db8::5")]
        );
        assert_eq!(
            of_kind(&b, FrontendKind::NodePort),
            vec![
                fe("10.1.0.5", 30080, Proto::Tcp),
                fe("2001:db8::5", 30080, Proto::Tcp),
                fe("fd00:1::5", 30080, Proto::Tcp),
            ]
        );
        assert_eq!(
            backends_of(&b, "fd00:1::5", 30080, Proto::Tcp),
            bes(&["[fd00:1::1]:8080", "[fd00:2::1]:8080"])
        );
        // Without a Node object: the fallback addresses of both families, link-local and
        // loopback left out.
        let b = run_with(
            DUAL_WEB,
            &["fe80::1", "192.168.0.1", "::1", "2001:db8::1", "::"],
        );
        assert_eq!(
            b.state.node_addresses,
            vec![ip("192.168.0.1"), ip("2001:db8::1")]
        );
        // Only IPv6 node addresses: the IPv4 family has no NodePort frontend.
        let b = run_with(DUAL_WEB, &["2001:db8::1"]);
        assert_eq!(
            of_kind(&b, FrontendKind::NodePort),
            vec![fe("2001:db8::1", 30080, Proto::Tcp)]
        );
    }

    #[test]
    fn ipv6_external_and_load_balancer_ips_by_family() {
        let svc = |families: &str, cluster_ips: &str| {
            format!(
                r#"
kind: Service
metadata: {{name: lb}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.20
  clusterIPs: {cluster_ips}
  ipFamilies: {families}
  externalIPs: [203.0.113.10, "2001:db8:e::10", "2001:db8:e::zz"]
  ports: [{{port: 443}}]
status:
  loadBalancer:
    ingress:
    - {{ip: 198.51.100.1}}
    - {{ip: "2001:db8:1b::1"}}
    - {{ip: "2001:db8:1b::2", ipMode: Proxy}}
    - {{ip: "2001:db8:1b::3", ipMode: VIP}}
"#
            )
        };
        let warning =
            r#"service default/lb: externalIP "2001:db8:e::zz" is not an IP address; skipped"#;
        let dual = run(&svc("[IPv4, IPv6]", r#"[10.96.0.20, "fd00:96::20"]"#));
        assert_eq!(dual.warnings, vec![warning]);
        assert_eq!(
            of_kind(&dual, FrontendKind::ExternalIp),
            vec![
                fe("203.0.113.10", 443, Proto::Tcp),
                fe("2001:db8:e::10", 443, Proto::Tcp),
            ]
        );
        assert_eq!(
            of_kind(&dual, FrontendKind::LoadBalancer),
            vec![
                fe("198.51.100.1", 443, Proto::Tcp),
                fe("2001:db8:1b::1", 443, Proto::Tcp),
                fe("2001:db8:1b::3", 443, Proto::Tcp),
            ]
        );
        let f = &dual.state.frontends[&fe("2001:db8:1b::1", 443, Proto::Tcp)];
        assert_eq!(
            (f.kind, f.snat, f.drop_when_empty),
            (FrontendKind::LoadBalancer, true, false)
        );
        // Single-stack IPv4: the IPv6 addresses are ignored without a warning (kube-proxy
        // only logs them at a high verbosity); the bad one still warns.
        let v4 = run(&svc("[IPv4]", "[10.96.0.20]"));
        assert_eq!(v4.warnings, vec![warning]);
        assert!(v4.state.frontends.keys().all(|a| a.family() == Family::V4));
        // ClusterIP, externalIP, ingress IP (the port has no nodePort).
        assert_eq!(v4.state.frontends.len(), 3);
    }

    #[test]
    fn family_mismatches_are_ignored() {
        // An IPv4-only Service with an IPv6 slice, and an IPv6-only Service with an IPv4
        // slice: neither gets backends from the other family.
        let b = run(r#"
kind: Service
metadata: {name: v4}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: v4-1, labels: {kubernetes.io/service-name: v4}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00::1"]}]
---
kind: Service
metadata: {name: v6}
spec: {clusterIP: "fd00:96::1", ipFamilies: [IPv6], ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: v6-1, labels: {kubernetes.io/service-name: v6}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
"#);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(b.state.frontends.len(), 2);
        assert!(b.state.frontends.values().all(|f| f.backends.is_empty()));
    }

    #[test]
    fn bad_ipv6_addresses_warn() {
        let b = run(r#"
kind: Service
metadata: {name: s}
spec: {clusterIP: "fd00:96::1", ipFamilies: [IPv6], ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: s-v4-in-v6, labels: {kubernetes.io/service-name: s}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00::1"]}, {addresses: [10.0.0.1]}]
---
kind: EndpointSlice
metadata: {name: s-garbage, labels: {kubernetes.io/service-name: s}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00::2", "fd00::zz"]}]
---
kind: EndpointSlice
metadata: {name: s-good, labels: {kubernetes.io/service-name: s}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00::3"]}]
---
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: "fd00::zz"}]}
"#);
        assert_eq!(
            b.warnings,
            vec![
                r#"node node-a: address "fd00::zz" is not an IP address; skipped"#,
                r#"endpointslice default/s-garbage: address "fd00::zz" is not an IPv6 address"#,
                r#"endpointslice default/s-v4-in-v6: address "10.0.0.1" is not an IPv6 address"#,
            ]
        );
        assert_eq!(
            backends_of(&b, "fd00:96::1", 80, Proto::Tcp),
            bes(&["[fd00::3]:8080"])
        );
    }

    /// A small deterministic PRNG (xorshift64*), so the property tests need no crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len() as u64) as usize]
        }
    }

    fn random_service(r: &mut Rng, name: &str) -> Service {
        let ns = r.pick(&["default", "kube-system"]);
        let v4 = format!("10.96.0.{}", r.below(4) + 1);
        let v6 = format!("fd00:96::{}", r.below(4) + 1);
        let (ips, families): (Vec<String>, Vec<&str>) = match r.below(6) {
            0 => (vec![v6], vec!["IPv6"]),
            1 => (vec![v4, v6], vec!["IPv4", "IPv6"]),
            2 => (vec!["None".into()], vec![]),
            3 => (vec!["bad".into()], vec![]),
            _ => (vec![v4], vec!["IPv4"]),
        };
        let type_ = r.pick(&["ClusterIP", "ClusterIP", "NodePort", "LoadBalancer"]);
        let mut ports = Vec::new();
        for (i, pname) in ["http", "dns", ""].iter().enumerate() {
            if i > 0 && r.chance(50) {
                continue;
            }
            ports.push(serde_json::json!({
                "name": pname,
                "port": 80 + r.below(2) as i32,
                "protocol": r.pick(&["TCP", "TCP", "UDP"]),
                "nodePort": 30000 + r.below(3) as i32,
            }));
        }
        let mut spec = serde_json::json!({
            "type": type_,
            "clusterIP": ips[0],
            "clusterIPs": ips,
            "ports": ports,
            "externalTrafficPolicy": r.pick(&["Cluster", "Local"]),
            "internalTrafficPolicy": r.pick(&["Cluster", "Local"]),
        });
        if !families.is_empty() {
            spec["ipFamilies"] = serde_json::json!(families);
        }
        if r.chance(30) {
            spec["externalIPs"] =
                serde_json::json!([r.pick(&["192.0.2.1", "10.96.0.1", "fd00:96::1", "nope"])]);
        }
        let mut labels = serde_json::json!({});
        if r.chance(10) {
            labels[LABEL_HEADLESS] = "".into();
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": spec,
            "status": {"loadBalancer": {"ingress": [{"ip": r.pick(&["192.0.2.9", "10.96.0.2", "fd00:96::9"])}]}},
        }))
        .unwrap()
    }

    fn random_slice(r: &mut Rng, name: &str) -> EndpointSlice {
        let ns = r.pick(&["default", "kube-system"]);
        let family = r.pick(&["IPv4", "IPv4", "IPv6", "FQDN"]);
        let mut endpoints = Vec::new();
        for _ in 0..r.below(4) {
            let n = r.below(6) + 1;
            let ip = match (family, r.chance(5)) {
                (_, true) => "garbage".to_string(),
                ("IPv6", _) => format!("fd00:244::{n}"),
                _ => format!("10.244.0.{n}"),
            };
            endpoints.push(serde_json::json!({
                "addresses": [ip],
                "nodeName": r.pick(&["node-a", "node-b"]),
                "conditions": {"ready": r.chance(70), "serving": r.chance(80),
                               "terminating": r.chance(30)},
            }));
        }
        let mut ports = Vec::new();
        for pname in ["http", "dns", ""] {
            if r.chance(60) {
                ports.push(serde_json::json!({
                    "name": pname, "port": 8080 + r.below(2) as i32,
                    "protocol": r.pick(&["TCP", "UDP"]),
                }));
            }
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns,
                         "labels": {LABEL_SERVICE_NAME: r.pick(&["s0", "s1", "s2", "s3", ""])}},
            "addressType": family,
            "endpoints": endpoints,
            "ports": ports,
        }))
        .unwrap()
    }

    fn random_node(r: &mut Rng) -> Node {
        let name = r.pick(&["node-a", "node-a", "node-b"]);
        let addrs: Vec<_> = ["192.168.0.5", "fd00:1::5", "127.0.0.1", "192.168.0.6"]
            .iter()
            .filter(|_| r.chance(50))
            .map(|a| serde_json::json!({"type": "InternalIP", "address": a}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"addresses": addrs},
        }))
        .unwrap()
    }

    /// Random sequences of adds, updates and deletes of Services, EndpointSlices and Nodes
    /// (with address conflicts, duplicates, bad objects and node address changes): the
    /// incremental model always equals `build` over the same objects, and its change set
    /// names every frontend that changed, with its previous spec.
    #[test]
    fn incremental_equals_build() {
        let (mut frontends, mut conflicts, mut changed) = (0, 0, 0);
        for seed in 1..=40u64 {
            let mut r = Rng(seed * 0x9e37_79b9_7f4a_7c15);
            let node = || NodeInfo {
                name: "node-a".into(),
                fallback_addresses: vec![ip("192.168.0.1")],
            };
            let mut inc = Incremental::new(node());
            let mut services: Vec<Arc<Service>> = Vec::new();
            let mut slices: Vec<Arc<EndpointSlice>> = Vec::new();
            let mut nodes: Vec<Arc<Node>> = Vec::new();
            let mut fallback = vec![ip("192.168.0.1")];
            let mut prev = inc.state().clone();
            for step in 0..150 {
                let mut changed_services = BTreeSet::new();
                let mut changed_slices = BTreeSet::new();
                // A few changes per sync, like a burst of events.
                for _ in 0..=r.below(3) {
                    match r.below(10) {
                        0..=3 => {
                            let name = r.pick(&["s0", "s1", "s2", "s3"]);
                            let s = Arc::new(random_service(&mut r, name));
                            let key = object_key(&s.metadata);
                            services.retain(|o| object_key(&o.metadata) != key);
                            if !r.chance(20) {
                                services.push(s);
                            }
                            changed_services.insert(key);
                        }
                        4..=7 => {
                            let name = r.pick(&["e0", "e1", "e2", "e3", "e4"]);
                            let s = Arc::new(random_slice(&mut r, name));
                            let key = object_key(&s.metadata);
                            // Sometimes a duplicate key (two manifests holding one object).
                            if !r.chance(10) {
                                slices.retain(|o| object_key(&o.metadata) != key);
                            }
                            if !r.chance(20) {
                                slices.push(s);
                            }
                            changed_slices.insert(key);
                        }
                        8 => {
                            nodes = match r.chance(20) {
                                true => vec![],
                                false => vec![Arc::new(random_node(&mut r))],
                            };
                            inc.set_nodes(nodes.clone());
                        }
                        _ => {
                            fallback = match r.chance(50) {
                                true => vec![ip("192.168.0.1")],
                                false => vec![ip("192.168.0.2"), ip("fd00:2::1")],
                            };
                            inc.set_fallback_addresses(fallback.clone());
                        }
                    }
                }
                for key in &changed_services {
                    let objs = services
                        .iter()
                        .filter(|o| object_key(&o.metadata) == *key)
                        .map(|o| Arc::new(ServiceObj::new(o)))
                        .collect();
                    inc.set_services(key, objs);
                }
                for key in &changed_slices {
                    let objs: Vec<_> = slices
                        .iter()
                        .filter(|o| object_key(&o.metadata) == *key)
                        .map(|o| Arc::new(SliceObj::new(o)))
                        .collect();
                    inc.set_slices(key, &objs);
                }
                inc.recompute();
                let full = build(
                    &services,
                    &slices,
                    &nodes,
                    &NodeInfo {
                        name: "node-a".into(),
                        fallback_addresses: fallback.clone(),
                    },
                );
                assert_eq!(*inc.state(), full.state, "seed {seed} step {step}");
                assert_eq!(inc.warnings(), full.warnings, "seed {seed} step {step}");
                let changes = inc.take_changes();
                frontends += full.state.frontends.len();
                conflicts += full
                    .warnings
                    .iter()
                    .filter(|w| w.contains("already used"))
                    .count();
                changed += changes.frontends.len();
                let addrs: BTreeSet<&FrontendAddr> = prev
                    .frontends
                    .keys()
                    .chain(full.state.frontends.keys())
                    .collect();
                for a in addrs {
                    let (before, after) = (prev.frontends.get(a), full.state.frontends.get(a));
                    match changes.frontends.get(a) {
                        Some(old) => assert_eq!(old.as_ref(), before, "seed {seed} step {step}"),
                        None => assert_eq!(before, after, "seed {seed} step {step}: {a}"),
                    }
                }
                for ipa in prev
                    .cluster_ips
                    .symmetric_difference(&full.state.cluster_ips)
                {
                    assert!(changes.cluster_ips.contains(ipa), "seed {seed} step {step}");
                }
                if prev.node_addresses != full.state.node_addresses {
                    assert!(changes.node_addresses);
                }
                // From scratch, too.
                let compact_services: Vec<_> = services
                    .iter()
                    .map(|s| Arc::new(ServiceObj::new(s)))
                    .collect();
                let compact_slices: Vec<_> =
                    slices.iter().map(|s| Arc::new(SliceObj::new(s))).collect();
                let fresh =
                    Incremental::from_objects(&compact_services, &compact_slices, &nodes, {
                        let mut n = node();
                        n.fallback_addresses = fallback.clone();
                        n
                    });
                assert_eq!(*fresh.state(), full.state, "seed {seed} step {step}");
                prev = full.state;
            }
        }
        // The random objects do exercise the model.
        assert!(
            frontends > 10_000 && conflicts > 500 && changed > 2_000,
            "{frontends} {conflicts} {changed}"
        );
    }
}
