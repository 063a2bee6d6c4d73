//! Multi-node end-to-end tests with real traffic: a two-node [`Cluster`] (`podlb::testbed`) on a
//! shared underlay 192.168.50.0/24, one real `podlb agent` per node (each with its own bpf root,
//! `--node-name node-k` and `--external-interface eth0`), all fed the SAME manifests, as every
//! kube-proxy of a cluster watches the same API objects. EndpointSlice endpoints carry
//! `nodeName: node-k`, so each agent knows which endpoints are its own.
//!
//! Scenarios (each with routed /32 pods and with a Linux bridge):
//! 1. NodePort on node A whose only endpoint is on node B: masqueraded through A (the backend
//!    sees A's address), replies come from A:nodePort (TCP and UDP); B's own NodePort works too.
//! 2. Pod on node A to a ClusterIP whose endpoint is on node B: no SNAT, replies from the VIP;
//!    with endpoints on both nodes both answer.
//! 3. Two external clients with the same source port to A's NodePort at once: two SNAT ports
//!    (backend on the other node and on the same node).
//! 4. externalTrafficPolicy: Local: the node with the endpoint serves it without SNAT (the backend
//!    sees the real client); the node without one drops.
//!
//! Addresses: nodes 192.168.50.10 (node-0) and .11 (node-1), clients 192.168.50.2 and .3, pods
//! 10.244.k.(10+i), ClusterIPs 10.96.0.x.
//!
//! Needs root (fails, never skips, without it). Run with the eBPF object built:
//! `cargo xtask build && PODLB_EBPF_OBJ=... cargo test --release -p lb-userspace --test multinode_e2e`

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use anyhow::{bail, ensure, Result};
use common::e2e::*;
use podlb::testbed::*;
use serde_json::Value;

const NODES: usize = 2;
const PODS_PER_NODE: usize = 2;

// ---------------------------------------------------------------------------------------------
// Manifests

/// One entry of a Service's `spec.ports`.
struct Port {
    name: &'static str,
    port: u16,
    l4: L4,
    target: u16,
    node_port: Option<u16>,
}

fn http(node_port: Option<u16>) -> Port {
    Port {
        name: "http",
        port: 80,
        l4: L4::Tcp,
        target: TCP_BACKEND_PORT,
        node_port,
    }
}

fn dns(node_port: Option<u16>) -> Port {
    Port {
        name: "dns",
        port: 53,
        l4: L4::Udp,
        target: UDP_BACKEND_PORT,
        node_port,
    }
}

/// A Service of `type_` on `cluster_ip`, with `externalTrafficPolicy` when given.
fn service_yaml(
    name: &str,
    type_: &str,
    cluster_ip: Ipv4Addr,
    etp: Option<&str>,
    ports: &[Port],
) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n\
         spec:\n  type: {type_}\n  clusterIP: {cluster_ip}\n  clusterIPs: [{cluster_ip}]\n"
    );
    if let Some(p) = etp {
        s += &format!("  externalTrafficPolicy: {p}\n");
    }
    s += "  ports:\n";
    for p in ports {
        s += &format!(
            "  - {{name: {}, port: {}, protocol: {}, targetPort: {}",
            p.name,
            p.port,
            p.l4.proto(),
            p.target
        );
        if let Some(np) = p.node_port {
            s += &format!(", nodePort: {np}");
        }
        s += "}\n";
    }
    s
}

/// The EndpointSlice of Service `service` (the ports of `ports`), with ready endpoints given as
/// (pod address, node index): each carries `nodeName: node-k`.
fn slice_yaml(service: &str, ports: &[Port], endpoints: &[(Ipv4Addr, usize)]) -> String {
    let mut s = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  \
         namespace: default\n  labels:\n    kubernetes.io/service-name: {service}\n\
         addressType: IPv4\nports:\n"
    );
    for p in ports {
        s += &format!(
            "- {{name: {}, port: {}, protocol: {}}}\n",
            p.name,
            p.target,
            p.l4.proto()
        );
    }
    if endpoints.is_empty() {
        s += "endpoints: []\n";
    } else {
        s += "endpoints:\n";
        for (ip, k) in endpoints {
            s += &format!(
                "- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n  nodeName: node-{k}\n"
            );
        }
    }
    s
}

/// The Node objects of the cluster (InternalIP = the node's underlay address), as every
/// kube-proxy sees them.
fn nodes_yaml() -> String {
    (0..NODES)
        .map(|k| {
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-{k}\nstatus:\n  addresses:\n  \
                 - {{type: InternalIP, address: {}}}\n  - {{type: Hostname, address: node-{k}}}\n",
                cluster_node_ip(k)
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

// ---------------------------------------------------------------------------------------------
// Fixture

/// Cluster + one agent per node + servers. Field order is drop order: servers, then the agents,
/// then the cluster.
struct Fixture {
    tcp: BTreeMap<String, TcpServer>,
    udp: BTreeMap<String, UdpServer>,
    agents: Vec<Agent>,
    cluster: Cluster,
}

impl Fixture {
    /// Two nodes with two pods each, `clients` external clients (at least 1), an agent per node.
    fn new(network: PodNetwork, clients: usize) -> Fixture {
        require_root().expect("multinode_e2e tests must run as root");
        let mut cluster = Cluster::new(ClusterOptions {
            nodes: NODES,
            pods_per_node: PODS_PER_NODE,
            network,
            external_client: true,
        })
        .expect("building the cluster");
        for _ in 1..clients {
            cluster.add_client().expect("adding a client");
        }
        let bin = Path::new(env!("CARGO_BIN_EXE_podlb"));
        let agents = (0..NODES)
            .map(|k| {
                Agent::start(bin, cluster.node(k))
                    .unwrap_or_else(|e| panic!("starting the agent on node {k}: {e:#}"))
            })
            .collect();
        Fixture {
            tcp: BTreeMap::new(),
            udp: BTreeMap::new(),
            agents,
            cluster,
        }
    }

    fn pod(&self, k: usize, i: usize) -> &Pod {
        self.cluster.node(k).pod(i)
    }

    /// `node{k}-pod{i}`: what the servers of that pod answer.
    fn ident(k: usize, i: usize) -> String {
        format!("node{k}-pod{i}")
    }

    fn client(&self, n: usize) -> &Netns {
        &self.cluster.clients()[n]
    }

    /// Starts TCP (8080) and UDP (5353) servers in pod `i` of node `k`.
    fn serve(&mut self, k: usize, i: usize) {
        let ident = Self::ident(k, i);
        let ns = self.cluster.node(k).pod(i).ns();
        let t = TcpServer::start(ns, TCP_BACKEND_PORT, &ident);
        let u = UdpServer::start(ns, UDP_BACKEND_PORT, &ident);
        assert!(self.tcp.insert(ident.clone(), t).is_none(), "{ident}");
        assert!(self.udp.insert(ident.clone(), u).is_none(), "{ident}");
    }

    /// Connections accepted plus datagrams received by every server so far.
    fn total_hits(&self) -> usize {
        self.tcp.values().map(TcpServer::accepted).sum::<usize>()
            + self.udp.values().map(UdpServer::received).sum::<usize>()
    }

    /// Writes the same manifest file (several YAML documents) to EVERY agent.
    fn apply(&self, file: &str, docs: &[String]) {
        let yaml = docs.join("---\n");
        for a in &self.agents {
            a.write_manifest(&format!("{file}.yaml"), &yaml).unwrap();
        }
    }

    /// The logs of all agents, labelled by node, without colour codes.
    fn logs(&self) -> String {
        self.agents
            .iter()
            .enumerate()
            .map(|(k, a)| format!("===== agent log, node-{k} =====\n{}", strip_ansi(&a.log())))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `podlb service list -o json` on node `k`, parsed.
    fn try_services(&self, k: usize) -> Result<Vec<Value>> {
        try_services(&self.agents[k])
    }

    /// `podlb status -o json` on node `k`, parsed.
    fn try_status(&self, k: usize) -> Result<Value> {
        try_status(&self.agents[k])
    }

    /// Waits until node `k`'s datapath has every (frontend, protocol, kind, backends).
    fn wait_programmed(&self, k: usize, want: &[(SocketAddrV4, L4, &str, &[SocketAddrV4])]) {
        let r = wait_for(SETTLE, || {
            let rows = self.try_services(k)?;
            for &(fe, l4, kind, backends) in want {
                let fe_s = fe.to_string();
                let Some(row) = rows
                    .iter()
                    .find(|r| r["frontend"] == fe_s.as_str() && r["protocol"] == l4.proto())
                else {
                    bail!("node-{k}: {fe}/{} is not programmed: {rows:?}", l4.proto());
                };
                ensure!(
                    row["kind"] == kind,
                    "node-{k}: {fe}/{} is not a {kind} frontend: {row}",
                    l4.proto()
                );
                let have: BTreeSet<String> = row["backends"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|b| b.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                let want: BTreeSet<String> = backends.iter().map(|b| b.to_string()).collect();
                ensure!(
                    have == want,
                    "node-{k}: {fe}/{} has backends {have:?}, want {want:?}: {row}",
                    l4.proto()
                );
            }
            Ok(())
        });
        r.unwrap_or_else(|e| panic!("{e:#}\n{}", self.logs()));
    }

    /// Waits until a request from `client` to `dst` is answered from `dst` as `seen`.
    fn wait_reply(&self, client: &Netns, dst: SocketAddrV4, l4: L4, seen: Seen) -> Reply {
        wait_for(SETTLE, || {
            let r = l4.request(client, dst, SHORT)?;
            check_reply(&r, dst, seen)?;
            Ok(r)
        })
        .unwrap_or_else(|e| {
            panic!(
                "{l4:?} {dst} never answered from netns {}: {e:#}\n{}",
                client.name(),
                self.logs()
            )
        })
    }

    /// `n` requests from `client` to `dst`; asserts on each reply that it came from `dst` and
    /// that the backend saw `seen`. Returns how often each server ident answered.
    fn collect(
        &self,
        client: &Netns,
        dst: SocketAddrV4,
        l4: L4,
        n: usize,
        seen: Seen,
    ) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for i in 0..n {
            let r = l4
                .request(client, dst, T)
                .and_then(|r| check_reply(&r, dst, seen).map(|()| r))
                .unwrap_or_else(|e| {
                    panic!("{l4:?} request {i} of {n} to {dst}: {e:#}\n{}", self.logs())
                });
            *counts.entry(r.ident).or_insert(0) += 1;
        }
        counts
    }

    /// Asserts that `n` requests from `client` to `dst` all fail within [`SHORT`] and that no
    /// server saw anything meanwhile.
    fn assert_unreachable(&self, client: &Netns, dst: SocketAddrV4, l4: L4, n: usize, why: &str) {
        let before = self.total_hits();
        for i in 0..n {
            if let Ok(r) = l4.request(client, dst, SHORT) {
                panic!(
                    "{why}: {l4:?} request {i} to {dst} was answered: {r:?}\n{}",
                    self.logs()
                );
            }
        }
        assert_eq!(
            self.total_hits(),
            before,
            "{why}: a {l4:?} request to {dst} reached a backend\n{}",
            self.logs()
        );
    }

    /// Asserts (waiting for the hooks to show) that node `k`'s `podlb status` reports `eth0` with
    /// an XDP hook (native or generic) and TC, and every pod interface `lxc*` with TC.
    fn assert_hooks(&self, k: usize) {
        let want_pods: Vec<String> = self
            .cluster
            .node(k)
            .pods()
            .iter()
            .map(|p| p.host_if().to_string())
            .collect();
        let r = wait_for(SETTLE, || {
            let status = self.try_status(k)?;
            let ifs: BTreeSet<(String, String)> = status["interfaces"]
                .as_array()
                .ok_or_else(|| anyhow::anyhow!("no interfaces array: {status}"))?
                .iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or_default().to_string(),
                        v["hook"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            let has = |name: &str, hook: &str| ifs.contains(&(name.to_string(), hook.to_string()));
            ensure!(
                has("eth0", "xdp-native") || has("eth0", "xdp-generic"),
                "node-{k}: eth0 has no XDP hook: {ifs:?}"
            );
            ensure!(has("eth0", "tc"), "node-{k}: eth0 has no TC hook: {ifs:?}");
            for p in &want_pods {
                ensure!(has(p, "tc"), "node-{k}: {p} has no TC hook: {ifs:?}");
            }
            let stray: Vec<_> = ifs
                .iter()
                .filter(|(n, _)| n != "eth0" && !n.starts_with("lxc"))
                .collect();
            ensure!(
                stray.is_empty(),
                "node-{k}: hooked interfaces that are neither eth0 nor lxc*: {stray:?}"
            );
            Ok(status)
        });
        let status = r.unwrap_or_else(|e| panic!("{e:#}\n{}", self.logs()));
        eprintln!("node-{k} status interfaces: {}", status["interfaces"]);
    }

    /// Asserts that node `k`'s SNAT address (podlb status) is its own underlay address.
    fn assert_snat_address(&self, k: usize) {
        let status = self
            .try_status(k)
            .unwrap_or_else(|e| panic!("podlb status on node-{k}: {e:#}"));
        assert_eq!(
            status["snat_address"],
            cluster_node_ip(k).to_string().as_str(),
            "node-{k} masquerades with the wrong address: {status}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. NodePort on node A (node-0) with its only endpoint on node B (node-1): an external client
// reaches A:nodePort; the reply comes from A:nodePort; the backend sees A's address
// (eTP=Cluster: masquerade, so that the reply goes back through A). TCP and UDP. B's NodePort
// (local endpoint) works as well, masqueraded to B. Also: the hooks on node A.
fn nodeport_on_node_a_endpoint_on_node_b(network: PodNetwork) {
    let mut f = Fixture::new(network, 1);
    f.serve(1, 0);
    let backend = f.pod(1, 0).ip();
    let ports = [http(Some(30080)), dns(Some(30053))];
    f.apply(
        "web",
        &[
            nodes_yaml(),
            service_yaml("web", "NodePort", vip(10), None, &ports),
            slice_yaml("web", &ports, &[(backend, 1)]),
        ],
    );
    let (tbe, ube) = (sa(backend, TCP_BACKEND_PORT), sa(backend, UDP_BACKEND_PORT));
    for k in 0..NODES {
        let ip = cluster_node_ip(k);
        f.wait_programmed(
            k,
            &[
                (sa(ip, 30080), L4::Tcp, "NodePort", &[tbe]),
                (sa(ip, 30053), L4::Udp, "NodePort", &[ube]),
                (sa(vip(10), 80), L4::Tcp, "ClusterIP", &[tbe]),
            ],
        );
        f.assert_snat_address(k);
    }

    let (a, b) = (cluster_node_ip(0), cluster_node_ip(1));
    let client = f.client(0);
    let want = set(&[Fixture::ident(1, 0)]);
    for l4 in [L4::Tcp, L4::Udp] {
        let np = if l4 == L4::Tcp { 30080 } else { 30053 };
        // Through A: masqueraded to A.
        let dst = sa(a, np);
        f.wait_reply(client, dst, l4, Seen::Snat(a));
        let counts = f.collect(client, dst, l4, 10, Seen::Snat(a));
        assert_eq!(idents(&counts), want, "{l4:?} via node-0: {counts:?}");
        // Through B (the endpoint's own node): masqueraded to B (eTP=Cluster).
        let dst = sa(b, np);
        f.wait_reply(client, dst, l4, Seen::Snat(b));
        let counts = f.collect(client, dst, l4, 10, Seen::Snat(b));
        assert_eq!(idents(&counts), want, "{l4:?} via node-1: {counts:?}");
    }
    // A persistent connection through A keeps its backend and its SNAT address and port.
    let dst = sa(a, 30080);
    let mut s =
        TcpSession::connect(client, dst, T).unwrap_or_else(|e| panic!("{e:#}\n{}", f.logs()));
    let first = s.request().unwrap();
    check_reply(&first, dst, Seen::Snat(a)).unwrap();
    for i in 0..5 {
        let r = s
            .request()
            .unwrap_or_else(|e| panic!("session request {i}: {e:#}\n{}", f.logs()));
        assert_eq!(
            (&r.ident, r.seen_client, r.peer),
            (&first.ident, first.seen_client, first.peer)
        );
    }
    f.assert_hooks(0);
    f.assert_hooks(1);
}

#[test]
fn nodeport_on_node_a_endpoint_on_node_b_routed() {
    nodeport_on_node_a_endpoint_on_node_b(PodNetwork::Routed);
}

#[test]
fn nodeport_on_node_a_endpoint_on_node_b_bridge() {
    nodeport_on_node_a_endpoint_on_node_b(PodNetwork::Bridge);
}

// ---------------------------------------------------------------------------------------------
// 2. A pod on node A to a ClusterIP whose only endpoint is on node B: works, the reply comes from
// VIP:port and the backend sees the client pod's own address (no SNAT for pod-to-ClusterIP).
// Then with endpoints on both nodes: both answer.
fn clusterip_pod_on_a_to_endpoint_on_b(network: PodNetwork) {
    let mut f = Fixture::new(network, 1);
    f.serve(1, 0);
    f.serve(0, 1);
    let remote = f.pod(1, 0).ip();
    let local = f.pod(0, 1).ip();
    let ports = [http(None), dns(None)];
    f.apply(
        "web",
        &[
            nodes_yaml(),
            service_yaml("web", "ClusterIP", vip(20), None, &ports),
            slice_yaml("web", &ports, &[(remote, 1)]),
        ],
    );
    let (tdst, udst) = (sa(vip(20), 80), sa(vip(20), 53));
    for k in 0..NODES {
        f.wait_programmed(
            k,
            &[
                (tdst, L4::Tcp, "ClusterIP", &[sa(remote, TCP_BACKEND_PORT)]),
                (udst, L4::Udp, "ClusterIP", &[sa(remote, UDP_BACKEND_PORT)]),
            ],
        );
    }
    let (client, client_ip) = (f.pod(0, 0).ns(), f.pod(0, 0).ip());
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        f.wait_reply(client, dst, l4, Seen::Client(client_ip));
        let counts = f.collect(client, dst, l4, 10, Seen::Client(client_ip));
        assert_eq!(
            idents(&counts),
            set(&[Fixture::ident(1, 0)]),
            "{l4:?}: {counts:?}"
        );
    }

    // Endpoints on both nodes.
    f.apply(
        "web",
        &[
            nodes_yaml(),
            service_yaml("web", "ClusterIP", vip(20), None, &ports),
            slice_yaml("web", &ports, &[(remote, 1), (local, 0)]),
        ],
    );
    for k in 0..NODES {
        f.wait_programmed(
            k,
            &[
                (
                    tdst,
                    L4::Tcp,
                    "ClusterIP",
                    &[sa(remote, TCP_BACKEND_PORT), sa(local, TCP_BACKEND_PORT)],
                ),
                (
                    udst,
                    L4::Udp,
                    "ClusterIP",
                    &[sa(remote, UDP_BACKEND_PORT), sa(local, UDP_BACKEND_PORT)],
                ),
            ],
        );
    }
    let both = set(&[Fixture::ident(1, 0), Fixture::ident(0, 1)]);
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        let counts = f.collect(client, dst, l4, 30, Seen::Client(client_ip));
        assert_eq!(
            idents(&counts),
            both,
            "{l4:?}: not both nodes' endpoints: {counts:?}"
        );
    }
    // The same from a pod on node B (its agent has the same Service).
    let (client, client_ip) = (f.pod(1, 1).ns(), f.pod(1, 1).ip());
    f.wait_reply(client, tdst, L4::Tcp, Seen::Client(client_ip));
    let counts = f.collect(client, tdst, L4::Tcp, 30, Seen::Client(client_ip));
    assert_eq!(idents(&counts), both, "from node-1: {counts:?}");
}

#[test]
fn clusterip_pod_on_a_to_endpoint_on_b_routed() {
    clusterip_pod_on_a_to_endpoint_on_b(PodNetwork::Routed);
}

#[test]
fn clusterip_pod_on_a_to_endpoint_on_b_bridge() {
    clusterip_pod_on_a_to_endpoint_on_b(PodNetwork::Bridge);
}

// ---------------------------------------------------------------------------------------------
// 3. Two external clients, both from source port 40000, to node A's NodePort at the same time:
// both connections work side by side and the backend sees two different SNAT source ports on
// A's address. Once with the backend on node B, once with it on node A itself. This test writes
// no Node objects: NodePorts are served on, and SNAT uses, eth0's address (the fallback).

const SRC_PORT: u16 = 40000;

fn two_clients_same_port(f: &Fixture, tdst: SocketAddrV4, udst: SocketAddrV4, backend: &str) {
    let a = cluster_node_ip(0);
    let (c0, c1) = (f.client(0), f.client(1));
    for c in [c0, c1] {
        f.wait_reply(c, tdst, L4::Tcp, Seen::Snat(a));
    }
    let mut s0 = TcpSession::connect_from(c0, SRC_PORT, tdst, T)
        .unwrap_or_else(|e| panic!("first client: {e:#}\n{}", f.logs()));
    let mut s1 = TcpSession::connect_from(c1, SRC_PORT, tdst, T).unwrap_or_else(|e| {
        panic!(
            "second client (same source port, first still open): {e:#}\n{}",
            f.logs()
        )
    });
    let mut seen: BTreeMap<&str, BTreeSet<SocketAddr>> = BTreeMap::new();
    for round in 0..4 {
        for (who, s) in [("first", &mut s0), ("second", &mut s1)] {
            let r = s
                .request()
                .and_then(|r| check_reply(&r, tdst, Seen::Snat(a)).map(|()| r))
                .unwrap_or_else(|e| {
                    panic!("{tdst}: {who} client, round {round}: {e:#}\n{}", f.logs())
                });
            assert_eq!(r.ident, backend, "{r:?}");
            assert_eq!(r.local.port(), SRC_PORT, "{r:?}");
            seen.entry(who).or_default().insert(r.seen_client);
        }
    }
    assert_eq!(
        seen["first"].len(),
        1,
        "first flow's SNAT changed: {seen:?}"
    );
    assert_eq!(
        seen["second"].len(),
        1,
        "second flow's SNAT changed: {seen:?}"
    );
    assert_ne!(
        seen["first"], seen["second"],
        "{tdst}: both flows got the same SNAT address and port: {seen:?}"
    );
    drop((s0, s1));

    // UDP from the same source port.
    let mut useen: BTreeMap<&str, SocketAddr> = BTreeMap::new();
    for c in [c0, c1] {
        f.wait_reply(c, udst, L4::Udp, Seen::Snat(a));
    }
    for round in 0..3 {
        for (who, ns) in [("first", c0), ("second", c1)] {
            let r = udp_request_from(ns, SRC_PORT, udst, T)
                .and_then(|r| check_reply(&r, udst, Seen::Snat(a)).map(|()| r))
                .unwrap_or_else(|e| {
                    panic!(
                        "{udst}: UDP {who} client, round {round}: {e:#}\n{}",
                        f.logs()
                    )
                });
            assert_eq!(r.ident, backend, "{r:?}");
            let prev = useen.insert(who, r.seen_client);
            assert!(
                prev.is_none() || prev == Some(r.seen_client),
                "UDP {who}: SNAT changed {prev:?} -> {r:?}"
            );
        }
    }
    assert_ne!(
        useen["first"], useen["second"],
        "UDP flows collided: {useen:?}"
    );
}

fn nodeport_two_clients_same_source_port(network: PodNetwork) {
    let mut f = Fixture::new(network, 2);
    f.serve(1, 0);
    f.serve(0, 1);
    let (remote, local) = (f.pod(1, 0).ip(), f.pod(0, 1).ip());
    let rports = [http(Some(30080)), dns(Some(30053))];
    let lports = [http(Some(30081)), dns(Some(30054))];
    f.apply(
        "remote",
        &[
            service_yaml("remote", "NodePort", vip(30), None, &rports),
            slice_yaml("remote", &rports, &[(remote, 1)]),
        ],
    );
    f.apply(
        "local",
        &[
            service_yaml("local", "NodePort", vip(31), None, &lports),
            slice_yaml("local", &lports, &[(local, 0)]),
        ],
    );
    let a = cluster_node_ip(0);
    f.wait_programmed(
        0,
        &[
            (
                sa(a, 30080),
                L4::Tcp,
                "NodePort",
                &[sa(remote, TCP_BACKEND_PORT)],
            ),
            (
                sa(a, 30053),
                L4::Udp,
                "NodePort",
                &[sa(remote, UDP_BACKEND_PORT)],
            ),
            (
                sa(a, 30081),
                L4::Tcp,
                "NodePort",
                &[sa(local, TCP_BACKEND_PORT)],
            ),
            (
                sa(a, 30054),
                L4::Udp,
                "NodePort",
                &[sa(local, UDP_BACKEND_PORT)],
            ),
        ],
    );
    f.assert_snat_address(0);
    // Backend on node B.
    two_clients_same_port(&f, sa(a, 30080), sa(a, 30053), &Fixture::ident(1, 0));
    // Backend on node A itself.
    two_clients_same_port(&f, sa(a, 30081), sa(a, 30054), &Fixture::ident(0, 1));
}

#[test]
fn nodeport_two_clients_same_source_port_routed() {
    nodeport_two_clients_same_source_port(PodNetwork::Routed);
}

#[test]
fn nodeport_two_clients_same_source_port_bridge() {
    nodeport_two_clients_same_source_port(PodNetwork::Bridge);
}

// ---------------------------------------------------------------------------------------------
// 4. externalTrafficPolicy: Local with the only endpoint on node B: B's NodePort works and the
// backend sees the real client address and port (no SNAT); A's NodePort (no local endpoint)
// drops, like kube-proxy: the connection times out and reaches no backend. The ClusterIP of the
// same Service still works from a pod on A (iTP is Cluster).
fn external_traffic_policy_local(network: PodNetwork) {
    let mut f = Fixture::new(network, 1);
    f.serve(1, 0);
    let backend = f.pod(1, 0).ip();
    let ports = [http(Some(30090)), dns(Some(30091))];
    f.apply(
        "web",
        &[
            nodes_yaml(),
            service_yaml("web", "NodePort", vip(40), Some("Local"), &ports),
            slice_yaml("web", &ports, &[(backend, 1)]),
        ],
    );
    let (a, b) = (cluster_node_ip(0), cluster_node_ip(1));
    let (tbe, ube) = (sa(backend, TCP_BACKEND_PORT), sa(backend, UDP_BACKEND_PORT));
    f.wait_programmed(
        1,
        &[
            (sa(b, 30090), L4::Tcp, "NodePort", &[tbe]),
            (sa(b, 30091), L4::Udp, "NodePort", &[ube]),
        ],
    );
    f.wait_programmed(
        0,
        &[
            (sa(a, 30090), L4::Tcp, "NodePort", &[]),
            (sa(a, 30091), L4::Udp, "NodePort", &[]),
            (sa(vip(40), 80), L4::Tcp, "ClusterIP", &[tbe]),
        ],
    );
    let client = f.client(0);
    let client_ip = cluster_client_ip(0);
    let want = set(&[Fixture::ident(1, 0)]);
    for (np, l4) in [(30090, L4::Tcp), (30091, L4::Udp)] {
        let dst = sa(b, np);
        f.wait_reply(client, dst, l4, Seen::Client(client_ip));
        let counts = f.collect(client, dst, l4, 10, Seen::Client(client_ip));
        assert_eq!(idents(&counts), want, "{l4:?} via node-1: {counts:?}");
    }
    for (np, l4) in [(30090, L4::Tcp), (30091, L4::Udp)] {
        f.assert_unreachable(
            client,
            sa(a, np),
            l4,
            3,
            "eTP=Local NodePort on a node without a local endpoint",
        );
    }
    // ... and B still serves it afterwards.
    let counts = f.collect(client, sa(b, 30090), L4::Tcp, 5, Seen::Client(client_ip));
    assert_eq!(idents(&counts), want, "{counts:?}");
    // The ClusterIP follows internalTrafficPolicy (Cluster): reachable from a pod on A.
    let (pod, pod_ip) = (f.pod(0, 0).ns(), f.pod(0, 0).ip());
    let dst = sa(vip(40), 80);
    f.wait_reply(pod, dst, L4::Tcp, Seen::Client(pod_ip));
    let counts = f.collect(pod, dst, L4::Tcp, 5, Seen::Client(pod_ip));
    assert_eq!(idents(&counts), want, "ClusterIP from node-0: {counts:?}");
}

#[test]
fn external_traffic_policy_local_routed() {
    external_traffic_policy_local(PodNetwork::Routed);
}

#[test]
fn external_traffic_policy_local_bridge() {
    external_traffic_policy_local(PodNetwork::Bridge);
}
