//! `--cluster-cidr` (contract point 12): ClusterIP frontends of a family with a cluster CIDR
//! masquerade sources outside it (`masq_off_cluster`), for either internalTrafficPolicy, as
//! kube-proxy's per-family local detector; a family without a CIDR, and every other frontend
//! kind, does not. The CIDRs reach the datapath's configuration as network and mask.
use super::*;
use crate::reconcile::{config_for, flags_and_kind};
use lb_common::{FE_MASQ_OFF_CLUSTER, FE_SNAT};

/// A dual-stack NodePort Service (internalTrafficPolicy `itp`) with an endpoint of each family
/// on this node.
fn dual_web(itp: &str) -> String {
    format!(
        r#"
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  ipFamilies: [IPv4, IPv6]
  internalTrafficPolicy: {itp}
  ports: [{{name: http, port: 80, nodePort: 30080}}]
---
kind: EndpointSlice
metadata: {{name: web-v4, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: [10.244.0.5], nodeName: node-a}}]
---
kind: EndpointSlice
metadata: {{name: web-v6, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv6
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: ["fd00:10:244::5"], nodeName: node-a}}]
"#
    )
}

fn node(cidrs: &[&str]) -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        fallback_addresses: vec![ip("192.168.0.1"), ip("2001:db8::1")],
        cluster_cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
        ..NodeInfo::default()
    }
}

fn build_with(yaml: &str, cidrs: &[&str]) -> Built {
    let o = objects(yaml);
    build(&o.services, &o.slices, &o.nodes, &node(cidrs))
}

/// (frontend, masq_off_cluster) of every frontend, in order.
fn masq(b: &Built) -> Vec<(String, bool)> {
    let fes = b.state.frontends.iter();
    fes.map(|(a, f)| (a.to_string(), f.masq_off_cluster))
        .collect()
}

#[test]
fn only_cluster_ips_of_a_family_with_a_cidr_masquerade_off_cluster_sources() {
    let b = build_with(&dual_web("Cluster"), &["10.244.0.0/16"]);
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(
        masq(&b),
        vec![
            ("10.96.0.10:80/TCP".to_string(), true),
            ("192.168.0.1:30080/TCP".to_string(), false),
            ("[2001:db8::1]:30080/TCP".to_string(), false),
            ("[fd00:96::10]:80/TCP".to_string(), false),
        ]
    );
    let cip = &b.state.frontends[&fe("10.96.0.10", 80, Proto::Tcp)];
    assert_eq!(flags_and_kind(cip).0, FE_MASQ_OFF_CLUSTER);
    let np = &b.state.frontends[&fe("192.168.0.1", 30080, Proto::Tcp)];
    assert_eq!(flags_and_kind(np).0, FE_SNAT);

    let both = build_with(&dual_web("Cluster"), &["10.244.0.0/16", "fd00:10:244::/48"]);
    let flagged: Vec<bool> = masq(&both).into_iter().map(|m| m.1).collect();
    assert_eq!(flagged, vec![true, false, false, true]);

    let none = build_with(&dual_web("Cluster"), &[]);
    assert!(masq(&none).iter().all(|m| !m.1), "{:?}", masq(&none));
}

#[test]
fn internal_traffic_policy_local_masquerades_off_cluster_sources_too() {
    // kube-proxy writes `! -s clusterCIDR -j KUBE-MARK-MASQ` into the chain internal traffic
    // goes to, the Local one with internalTrafficPolicy Local.
    let b = build_with(&dual_web("Local"), &["10.244.0.0/16", "fd00:10:244::/48"]);
    let cip = &b.state.frontends[&fe("fd00:96::10", 80, Proto::Tcp)];
    assert!(cip.masq_off_cluster && cip.drop_when_empty, "{cip:?}");
    assert_eq!(
        flags_and_kind(cip).0 & FE_MASQ_OFF_CLUSTER,
        FE_MASQ_OFF_CLUSTER
    );
}

#[test]
fn cidrs_reach_the_datapath_config_as_network_and_mask() {
    // The address as written keeps its host bits; the config holds the network.
    let b = build_with(
        &dual_web("Cluster"),
        &["10.244.7.1/16", "fd00:10:244:1::/48"],
    );
    let c = config_for(&b.state);
    assert_eq!(
        (c.cluster_net, c.cluster_mask),
        ([10, 244, 0, 0], [255, 255, 0, 0])
    );
    let net6: std::net::Ipv6Addr = "fd00:10:244::".parse().unwrap();
    let mask6: std::net::Ipv6Addr = "ffff:ffff:ffff::".parse().unwrap();
    assert_eq!(
        (c.cluster_net6, c.cluster_mask6),
        (net6.octets(), mask6.octets())
    );
    assert_eq!(c.snat_addr, [192, 168, 0, 1]);

    // Only IPv6: the IPv4 prefix stays all zeros.
    let c = config_for(&build_with(&dual_web("Cluster"), &["fd00:10:244::/48"]).state);
    assert_eq!((c.cluster_net, c.cluster_mask), ([0; 4], [0; 4]));
    assert_eq!(c.cluster_mask6, mask6.octets());
    // An odd prefix: /12 and /60.
    let c = config_for(&build_with(&dual_web("Cluster"), &["10.240.0.0/12", "fd00::/60"]).state);
    assert_eq!(c.cluster_mask, [255, 240, 0, 0]);
    let mask60: std::net::Ipv6Addr = "ffff:ffff:ffff:fff0::".parse().unwrap();
    assert_eq!(c.cluster_mask6, mask60.octets());
}

#[test]
fn incremental_model_carries_the_cidrs() {
    let o = objects(&dual_web("Cluster"));
    let arc = |v: &[Service]| -> Vec<_> {
        v.iter()
            .map(|s| std::sync::Arc::new(crate::objects::ServiceObj::new(s)))
            .collect()
    };
    let slices: Vec<_> = o
        .slices
        .iter()
        .map(|s| std::sync::Arc::new(crate::objects::SliceObj::new(s)))
        .collect();
    let cidrs = ["10.244.0.0/16", "fd00:10:244::/48"];
    let inc = Incremental::from_objects(&arc(&o.services), &slices, &[], node(&cidrs));
    let full = build(&o.services, &o.slices, &o.nodes, &node(&cidrs));
    assert_eq!(*inc.state(), full.state);
    assert_eq!(inc.state().cluster_cidrs.len(), 2);
}
