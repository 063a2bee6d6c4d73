//! `--nodeport-addresses`: NodePorts on the default addresses, on the primary address of each
//! family, or on the node's addresses within CIDRs; masquerading keeps the default selection.
use super::*;
use std::sync::Arc;

const DUAL_WEB: &str = r#"
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  clusterIPs: [10.96.0.10, "fd00:96::10"]
  ipFamilies: [IPv4, IPv6]
  ports: [{name: http, port: 80, nodePort: 30080}]
"#;
const NODE: &str = r#"
kind: Node
metadata: {name: node-a}
status:
  addresses:
  - {type: ExternalIP, address: 203.0.113.5}
  - {type: InternalIP, address: "fd00::5"}
  - {type: InternalIP, address: 10.1.0.5}
  - {type: InternalIP, address: 10.1.0.6}
  - {type: Hostname, address: node-a}
"#;

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

fn node(mode: NodePortAddresses, local: &[&str]) -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        fallback_addresses: ips(&["192.168.0.1", "192.168.0.2", "fd00:77::1"]),
        nodeport_addresses: mode,
        local_addresses: ips(local),
        ..NodeInfo::default()
    }
}

fn build_on(yaml: &str, node: &NodeInfo) -> Built {
    let o = objects(yaml);
    build(&o.services, &o.slices, &o.nodes, node)
}

/// The addresses the NodePort frontends are on.
fn nodeports(b: &Built) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = of_kind(b, FrontendKind::NodePort)
        .iter()
        .map(|f| f.ip)
        .collect();
    out.sort();
    out
}

fn sorted(list: &[&str]) -> Vec<IpAddr> {
    let mut v = ips(list);
    v.sort();
    v
}

fn cidrs(list: &[&str]) -> NodePortAddresses {
    NodePortAddresses::Cidrs(list.iter().map(|c| c.parse().unwrap()).collect())
}

#[test]
fn default_is_every_node_object_address() {
    let b = build_on(
        &format!("{DUAL_WEB}---{NODE}"),
        &node(NodePortAddresses::Default, &[]),
    );
    let all = ["203.0.113.5", "fd00::5", "10.1.0.5", "10.1.0.6"];
    assert_eq!(b.state.node_addresses, ips(&all));
    assert_eq!(nodeports(&b), sorted(&all));
}

#[test]
fn primary_is_the_first_internal_ip_of_each_family() {
    let b = build_on(
        &format!("{DUAL_WEB}---{NODE}"),
        &node(NodePortAddresses::Primary, &[]),
    );
    assert_eq!(nodeports(&b), sorted(&["fd00::5", "10.1.0.5"]));
    // Masquerading keeps the default selection's first address of each family.
    assert_eq!(
        b.state.node_addresses,
        ips(&["203.0.113.5", "fd00::5", "10.1.0.5", "10.1.0.6"])
    );
    // Only ExternalIPs: the first of them.
    let ext_only = "
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: ExternalIP, address: 203.0.113.5}, {type: ExternalIP, address: 203.0.113.6}]}
";
    let b = build_on(
        &format!("{DUAL_WEB}---{ext_only}"),
        &node(NodePortAddresses::Primary, &[]),
    );
    assert_eq!(nodeports(&b), ips(&["203.0.113.5"]));
    // No Node object: the first external interface address of each family.
    let b = build_on(DUAL_WEB, &node(NodePortAddresses::Primary, &[]));
    assert_eq!(nodeports(&b), sorted(&["192.168.0.1", "fd00:77::1"]));
    assert_eq!(
        b.state.node_addresses,
        ips(&["192.168.0.1", "192.168.0.2", "fd00:77::1"])
    );
}

#[test]
fn cidrs_select_the_node_addresses_within_them() {
    let local = [
        "10.1.0.5",
        "192.168.77.3",
        "127.0.0.1",
        "fd00::5",
        "fe80::1",
        "10.244.0.1",
        "192.168.77.3",
    ];
    let mode = cidrs(&["192.168.77.0/24", "fd00::/64", "127.0.0.0/8", "fe80::/10"]);
    let b = build_on(&format!("{DUAL_WEB}---{NODE}"), &node(mode.clone(), &local));
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    // Loopback and link-local never count; an address on two interfaces counts once.
    assert_eq!(nodeports(&b), sorted(&["192.168.77.3", "fd00::5"]));
    assert_eq!(b.state.node_addresses[0], ip("203.0.113.5"));
    // A CIDR that holds the Node object's address but no local address: not served there.
    let b = build_on(
        &format!("{DUAL_WEB}---{NODE}"),
        &node(cidrs(&["203.0.113.0/24"]), &local),
    );
    assert_eq!(nodeports(&b), Vec::<IpAddr>::new());
    assert_eq!(
        b.warnings,
        [
            "nodePortAddresses: no address of this node is within 203.0.113.0/24; NodePorts are \
          served on none"
        ]
    );
    // The ClusterIPs stay.
    assert_eq!(
        of_kind(&b, FrontendKind::ClusterIp).len(),
        2,
        "{:?}",
        addrs(&b)
    );
}

#[test]
fn incremental_follows_the_local_addresses() {
    let o = objects(&format!("{DUAL_WEB}---{NODE}"));
    let services: Vec<Arc<crate::objects::ServiceObj>> = o
        .services
        .iter()
        .map(|s| Arc::new(crate::objects::ServiceObj::new(s)))
        .collect();
    let nodes: Vec<Arc<Node>> = o.nodes.iter().cloned().map(Arc::new).collect();
    let mode = cidrs(&["192.168.77.0/24"]);
    let mut inc = Incremental::from_objects(
        &services,
        &[],
        &nodes,
        node(mode.clone(), &["192.168.77.3"]),
    );
    inc.take_changes();
    assert_eq!(inc.nodeport_addresses(), ips(&["192.168.77.3"]));
    inc.set_local_addresses(ips(&["192.168.77.4", "10.0.0.1"]));
    inc.recompute();
    let changes = inc.take_changes();
    assert_eq!(inc.nodeport_addresses(), ips(&["192.168.77.4"]));
    let want = build_on(
        &format!("{DUAL_WEB}---{NODE}"),
        &node(mode, &["192.168.77.4", "10.0.0.1"]),
    );
    assert_eq!(*inc.state(), want.state);
    // The NodePort moved; the SNAT addresses did not change.
    assert!(!changes.node_addresses);
    let moved: Vec<IpAddr> = changes.frontends.keys().map(|f| f.ip).collect();
    assert_eq!(moved, ips(&["192.168.77.3", "192.168.77.4"]));
}
