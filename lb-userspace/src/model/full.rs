//! [`build`]: the desired state computed from scratch over every object, with a warning for
//! each object, address or frontend left out. [`super::Incremental`] maintains the same result
//! object by object.
use super::frontends::service_frontends;
use super::node::node_addresses;
use super::{Built, DesiredState, NodeInfo};
use crate::objects::{ServiceObj, SliceObj, SliceView};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::borrow::Borrow;
use std::collections::btree_map::Entry;
use std::collections::HashMap;

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
    let addrs = node_addresses(nodes, node, &mut warnings);
    let mut state = DesiredState {
        node_addresses: addrs.node,
        cluster_cidrs: node.cluster_cidrs.clone(),
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
        match service_frontends(svc, &key, &slices, &addrs.nodeports, node) {
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
