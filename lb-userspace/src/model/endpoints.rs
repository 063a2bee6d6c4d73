//! Endpoint selection for one Service port in one family, kube-proxy's
//! `CategorizeEndpoints` (contract point 6): which endpoints of the Service's EndpointSlices
//! are usable (ready ones, else the serving and terminating ones), for the whole cluster and
//! for this node alone (the set a traffic policy `Local` uses, point 10). A non-terminating
//! endpoint wins over a duplicate of its address. Which of the two sets a frontend takes is
//! decided where its kind is known ([`super::frontends`]).
use crate::objects::{Conditions, SliceEndpoint, SliceView};
use crate::types::{BackendAddr, Family, Proto};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

/// kube-proxy's two endpoint sets for one Service port and family (point 6).
pub(super) struct EndpointSets {
    /// Ready endpoints, else the ones that are serving and terminating.
    pub(super) cluster: Vec<BackendAddr>,
    /// The same rule applied to this node's endpoints only.
    pub(super) local: Vec<BackendAddr>,
}

/// The endpoint sets of one Service port in one family, from the slices of that family only.
/// A non-terminating endpoint wins over a duplicate.
pub(super) fn endpoint_sets(
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
