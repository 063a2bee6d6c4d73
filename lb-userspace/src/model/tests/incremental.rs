//! Property test: the incremental model equals [`build`] over random sequences of changes, and
//! its change set names every frontend that changed.
use super::*;
use crate::objects::{ServiceObj, SliceObj};
use std::collections::BTreeSet;
use std::sync::Arc;
use testkit::Rng;

fn random_service(r: &mut Rng, name: &str) -> Service {
    let ns = *r.pick(&["default", "kube-system"]);
    let v4 = format!("10.96.0.{}", r.below(4) + 1);
    let v6 = format!("fd00:96::{}", r.below(4) + 1);
    let (ips, families): (Vec<String>, Vec<&str>) = match r.below(6) {
        0 => (vec![v6], vec!["IPv6"]),
        1 => (vec![v4, v6], vec!["IPv4", "IPv6"]),
        2 => (vec!["None".into()], vec![]),
        3 => (vec!["bad".into()], vec![]),
        _ => (vec![v4], vec!["IPv4"]),
    };
    let type_ = *r.pick(&["ClusterIP", "ClusterIP", "NodePort", "LoadBalancer"]);
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
    let ns = *r.pick(&["default", "kube-system"]);
    let family = *r.pick(&["IPv4", "IPv4", "IPv6", "FQDN"]);
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
    let name = *r.pick(&["node-a", "node-a", "node-b"]);
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
        let mut r = Rng::new(seed * 0x9e37_79b9_7f4a_7c15);
        let node = || NodeInfo {
            name: "node-a".into(),
            fallback_addresses: vec![ip("192.168.0.1")],
            cluster_cidrs: Vec::new(),
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
                        let name = *r.pick(&["s0", "s1", "s2", "s3"]);
                        let s = Arc::new(random_service(&mut r, name));
                        let key = object_key(&s.metadata);
                        services.retain(|o| object_key(&o.metadata) != key);
                        if !r.chance(20) {
                            services.push(s);
                        }
                        changed_services.insert(key);
                    }
                    4..=7 => {
                        let name = *r.pick(&["e0", "e1", "e2", "e3", "e4"]);
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
                    cluster_cidrs: Vec::new(),
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
            let fresh = Incremental::from_objects(&compact_services, &compact_slices, &nodes, {
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
