//! End-to-end tests of the Service types and port handling, with real traffic, named after the
//! upstream Kubernetes e2e tests (test/e2e/network/service.go) they mirror: NodePort, externalIPs,
//! LoadBalancer ingress (ipMode), multiport and named ports, same port with different protocols,
//! live port and type changes, deleted and recreated Services, the skip labels, hairpin, REJECT
//! without endpoints or on an unexposed ClusterIP port, and SNAT source-port collisions.
//!
//! Every test builds its own namespace node (`podlb::testbed`) with an external client
//! (192.168.77.2 behind the node's `ext0`, 192.168.77.1), runs a real `podlb agent` on it and
//! writes hand-written Service / EndpointSlice YAML into the agent's manifests directory. Without
//! a Node object, NodePorts are served on, and masquerading uses, the `ext0` address 192.168.77.1.
//! Addresses used: ClusterIPs 10.96.0.x, externalIPs 192.168.78.x, LoadBalancer ingress IPs
//! 192.168.79.x (never assigned to an interface).
//!
//! Needs root (fails, never skips, without it). Run with the eBPF object built:
//! `cargo xtask build && PODLB_EBPF_OBJ=... cargo test --release -p lb-userspace --test service_types_e2e`

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use common::e2e::*;
use podlb::testbed::*;
use serde_json::Value;

/// Timeout of a connection that must be refused: a REJECT must come far sooner.
const REJECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How fast a REJECT (TCP RST / ICMP port unreachable) must arrive.
const REJECT_FAST: Duration = Duration::from_secs(1);
/// The address NodePorts are served on and SNAT uses: `ext0` of the node.
const NODE_IP: Ipv4Addr = EXT_NODE_IP;

// ---------------------------------------------------------------------------------------------
// Manifests

/// One entry of `spec.ports`.
#[derive(Clone, Debug)]
struct SvcPort {
    name: &'static str,
    port: u16,
    proto: &'static str,
    /// `targetPort`: a number or a name (podlb, like kube-proxy, never reads it).
    target: String,
    node_port: Option<u16>,
}

/// A hand-written Service manifest.
#[derive(Clone, Debug)]
struct Svc {
    name: String,
    type_: &'static str,
    /// None: no `clusterIP` field (ExternalName).
    cluster_ip: Option<String>,
    ports: Vec<SvcPort>,
    external_ips: Vec<Ipv4Addr>,
    labels: Vec<(&'static str, &'static str)>,
    /// `status.loadBalancer.ingress`: (ip, ipMode).
    ingress: Vec<(Ipv4Addr, Option<&'static str>)>,
    external_name: Option<&'static str>,
}

impl Svc {
    fn new(name: &str, type_: &'static str, cluster_ip: Ipv4Addr) -> Svc {
        Svc {
            name: name.to_string(),
            type_,
            cluster_ip: Some(cluster_ip.to_string()),
            ports: Vec::new(),
            external_ips: Vec::new(),
            labels: Vec::new(),
            ingress: Vec::new(),
            external_name: None,
        }
    }

    fn port(mut self, name: &'static str, port: u16, proto: &'static str, target: &str) -> Svc {
        self.ports.push(SvcPort {
            name,
            port,
            proto,
            target: target.to_string(),
            node_port: None,
        });
        self
    }

    fn node_port(
        mut self,
        name: &'static str,
        port: u16,
        proto: &'static str,
        target: &str,
        node_port: u16,
    ) -> Svc {
        self.ports.push(SvcPort {
            name,
            port,
            proto,
            target: target.to_string(),
            node_port: Some(node_port),
        });
        self
    }

    fn external_ip(mut self, ip: Ipv4Addr) -> Svc {
        self.external_ips.push(ip);
        self
    }

    fn label(mut self, key: &'static str, value: &'static str) -> Svc {
        self.labels.push((key, value));
        self
    }

    fn ingress(mut self, ip: Ipv4Addr, ip_mode: Option<&'static str>) -> Svc {
        self.ingress.push((ip, ip_mode));
        self
    }

    fn yaml(&self) -> String {
        let mut s = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: default\n",
            self.name
        );
        if !self.labels.is_empty() {
            s += "  labels:\n";
            for (k, v) in &self.labels {
                s += &format!("    {k}: \"{v}\"\n");
            }
        }
        s += &format!("spec:\n  type: {}\n", self.type_);
        if let Some(ip) = &self.cluster_ip {
            s += &format!("  clusterIP: {ip}\n  clusterIPs: [{ip}]\n");
        }
        if let Some(n) = self.external_name {
            s += &format!("  externalName: {n}\n");
        }
        if !self.external_ips.is_empty() {
            let ips: Vec<String> = self.external_ips.iter().map(|i| i.to_string()).collect();
            s += &format!("  externalIPs: [{}]\n", ips.join(", "));
        }
        if !self.ports.is_empty() {
            s += "  ports:\n";
            for p in &self.ports {
                s += &format!(
                    "  - {{name: {}, port: {}, protocol: {}, targetPort: {}",
                    p.name, p.port, p.proto, p.target
                );
                if let Some(np) = p.node_port {
                    s += &format!(", nodePort: {np}");
                }
                s += "}\n";
            }
        }
        if !self.ingress.is_empty() {
            s += "status:\n  loadBalancer:\n    ingress:\n";
            for (ip, mode) in &self.ingress {
                s += &format!("    - ip: {ip}\n");
                if let Some(m) = mode {
                    s += &format!("      ipMode: {m}\n");
                }
            }
        }
        s
    }
}

/// An EndpointSlice of Service `service` with `(name, port, protocol)` ports and ready
/// endpoints `ips`; `labels` are added to `kubernetes.io/service-name`.
fn slice_yaml(
    service: &str,
    slice: &str,
    ports: &[(&str, u16, &str)],
    ips: &[Ipv4Addr],
    labels: &[(&str, &str)],
) -> String {
    let mut s = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  \
         namespace: default\n  labels:\n    kubernetes.io/service-name: {service}\n"
    );
    for (k, v) in labels {
        s += &format!("    {k}: \"{v}\"\n");
    }
    s += "addressType: IPv4\nports:\n";
    for (name, port, proto) in ports {
        s += &format!("- {{name: {name}, port: {port}, protocol: {proto}}}\n");
    }
    if ips.is_empty() {
        s += "endpoints: []\n";
    } else {
        s += "endpoints:\n";
        for ip in ips {
            s += &format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n");
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Fixture

/// Node (with the external client) + agent + servers. Field order is drop order: servers, then
/// the agent, then the node.
struct Fixture {
    tcp: BTreeMap<String, TcpServer>,
    udp: BTreeMap<String, UdpServer>,
    agent: Agent,
    node: Node,
}

impl Fixture {
    fn new(network: PodNetwork, pods: usize) -> Fixture {
        let (node, agent) = node_with_agent("service_types_e2e", network, pods, true);
        Fixture {
            tcp: BTreeMap::new(),
            udp: BTreeMap::new(),
            agent,
            node,
        }
    }

    fn ns(&self, pod: usize) -> &Netns {
        self.node.pod(pod).ns()
    }

    fn ip(&self, pod: usize) -> Ipv4Addr {
        self.node.pod(pod).ip()
    }

    fn ext(&self) -> &Netns {
        self.node.ext().expect("external client")
    }

    /// TCP server on `port` in `pod`, answering with `ident`.
    fn serve_tcp(&mut self, pod: usize, port: u16, ident: &str) {
        let s = TcpServer::start(self.node.pod(pod).ns(), port, ident);
        assert!(self.tcp.insert(ident.to_string(), s).is_none(), "{ident}");
    }

    /// UDP server on `port` in `pod`, answering with `ident`.
    fn serve_udp(&mut self, pod: usize, port: u16, ident: &str) {
        let s = UdpServer::start(self.node.pod(pod).ns(), port, ident);
        assert!(self.udp.insert(ident.to_string(), s).is_none(), "{ident}");
    }

    /// Connections accepted plus datagrams received by every server so far.
    fn total_hits(&self) -> usize {
        self.tcp.values().map(TcpServer::accepted).sum::<usize>()
            + self.udp.values().map(UdpServer::received).sum::<usize>()
    }

    /// Writes one manifest file with several YAML documents (atomically).
    fn apply(&self, file: &str, docs: &[String]) {
        self.agent
            .write_manifest(&format!("{file}.yaml"), &docs.join("---\n"))
            .unwrap();
    }

    fn remove(&self, file: &str) {
        self.agent.remove_manifest(&format!("{file}.yaml")).unwrap();
    }

    /// `podlb service list -o json`, parsed.
    fn try_services(&self) -> Result<Vec<Value>> {
        try_services(&self.agent)
    }

    fn services(&self) -> Vec<Value> {
        self.try_services()
            .unwrap_or_else(|e| panic!("podlb service list -o json: {e:#}"))
    }

    /// The row of `frontend` with `proto`, if the datapath has it.
    fn row(rows: &[Value], frontend: SocketAddrV4, proto: &str) -> Option<Value> {
        let fe = frontend.to_string();
        rows.iter()
            .find(|r| r["frontend"] == fe.as_str() && r["protocol"] == proto)
            .cloned()
    }

    /// Waits until the datapath has every `(frontend, protocol, kind)`; returns the rows.
    fn wait_programmed(&self, want: &[(SocketAddrV4, &str, &str)]) -> Vec<Value> {
        let r = wait_for(SETTLE, || {
            let rows = self.try_services()?;
            for &(fe, proto, kind) in want {
                match Self::row(&rows, fe, proto) {
                    Some(r) if r["kind"] == kind => {}
                    other => bail!("{fe}/{proto} is not a {kind} frontend: {other:?}"),
                }
            }
            Ok(rows)
        });
        r.unwrap_or_else(|e| panic!("{e:#}\n{}", self.agent.log()))
    }

    /// Waits until the datapath has none of `gone` (frontend, protocol).
    fn wait_unprogrammed(&self, gone: &[(SocketAddrV4, &str)]) {
        let r = wait_for(SETTLE, || {
            let rows = self.try_services()?;
            for &(fe, proto) in gone {
                if let Some(r) = Self::row(&rows, fe, proto) {
                    bail!("{fe}/{proto} is still programmed: {r}");
                }
            }
            Ok(())
        });
        r.unwrap_or_else(|e| panic!("{e:#}\n{}", self.agent.log()))
    }

    /// Backends (as "ip:port") the datapath holds for `frontend`/`proto`.
    fn backends(&self, frontend: SocketAddrV4, proto: &str) -> Option<BTreeSet<String>> {
        Self::row(&self.services(), frontend, proto).map(|r| row_backends(&r))
    }

    /// The packet counter of `frontend`/`proto` (0 if it is not programmed).
    fn packets(&self, frontend: SocketAddrV4, proto: &str) -> u64 {
        Self::row(&self.services(), frontend, proto)
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or(0)
    }

    /// `podlb status -o json`, parsed.
    fn status(&self) -> Value {
        let out = self.agent.cli(&["status", "-o", "json"]).expect("status");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("status is not JSON ({e}): {out}"))
    }

    /// Event counter `name` from `podlb status`.
    fn counter(&self, name: &str) -> u64 {
        let s = self.status();
        s["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in status: {s}"))
    }

    /// Waits until a request from `client` to `dst` is answered from `dst`.
    fn wait_reply(&self, client: &Netns, dst: SocketAddrV4, l4: L4) -> Reply {
        wait_answered(client, dst, l4, || self.agent.log())
    }

    /// `n` requests from `client` to `dst`; asserts on each reply that it came from `dst` and
    /// that the server saw the address `seen`. Returns how often each server ident answered.
    fn collect(
        &self,
        client: &Netns,
        dst: SocketAddrV4,
        l4: L4,
        n: usize,
        seen: Seen,
    ) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for k in 0..n {
            let r = l4
                .request(client, dst, T)
                .unwrap_or_else(|e| panic!("{l4:?} request {k} of {n} to {dst}: {e:#}"));
            assert_reply(&r, dst, seen);
            *counts.entry(r.ident).or_insert(0) += 1;
        }
        counts
    }

    /// Asserts that `n` requests from `client` to `dst` all fail and reach no server.
    fn assert_unreachable(&self, client: &Netns, dst: SocketAddrV4, l4: L4, n: usize, why: &str) {
        let before = self.total_hits();
        for k in 0..n {
            if let Ok(r) = l4.request(client, dst, SHORT) {
                panic!("{why}: {l4:?} request {k} to {dst} was answered: {r:?}");
            }
        }
        assert_eq!(
            self.total_hits(),
            before,
            "{why}: a request to {dst} reached a backend"
        );
    }
}

/// A TCP connect from `ns` to `dst`; returns the outcome and how long it took.
fn tcp_connect_timed(
    ns: &Netns,
    dst: SocketAddrV4,
    timeout: Duration,
) -> (io::Result<TcpStream>, Duration) {
    let start = Instant::now();
    let r = ns.run_in(|| TcpStream::connect_timeout(&dst.into(), timeout));
    (r, start.elapsed())
}

/// A CONNECTED UDP socket in `ns` sends one datagram to `dst` and waits for the answer; an ICMP
/// port unreachable shows up as ConnectionRefused. Returns the outcome and how long it took.
fn udp_connected_timed(
    ns: &Netns,
    dst: SocketAddrV4,
    timeout: Duration,
) -> (io::Result<String>, Duration) {
    let start = Instant::now();
    let r = ns.run_in(|| -> io::Result<String> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.connect(dst)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.send(b"hello\n")?;
        let mut buf = [0u8; 2048];
        let n = sock.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    (r, start.elapsed())
}

/// Checks that a TCP connect from `ns` to `dst` is refused (RST) within [`REJECT_FAST`].
fn check_tcp_refused(ns: &Netns, dst: SocketAddrV4, what: &str) -> Result<(), String> {
    let (r, took) = tcp_connect_timed(ns, dst, REJECT_TIMEOUT);
    match r {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && took < REJECT_FAST => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(format!(
            "{what}: TCP {dst} refused, but only after {took:?}"
        )),
        Err(e) => Err(format!(
            "{what}: TCP {dst}: want ConnectionRefused, got {:?} ({e}) after {took:?}",
            e.kind()
        )),
        Ok(s) => Err(format!(
            "{what}: TCP {dst} connected ({:?} -> {:?}) instead of being refused",
            s.local_addr(),
            s.peer_addr()
        )),
    }
}

/// Checks that a connected UDP socket in `ns` gets ConnectionRefused (ICMP port unreachable)
/// from `dst` within [`REJECT_FAST`].
fn check_udp_refused(ns: &Netns, dst: SocketAddrV4, what: &str) -> Result<(), String> {
    let (r, took) = udp_connected_timed(ns, dst, REJECT_TIMEOUT);
    match r {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && took < REJECT_FAST => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(format!(
                "{what}: UDP {dst}: want ConnectionRefused (ICMP port unreachable), got no \
                 answer at all within {took:?}"
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(format!(
            "{what}: UDP {dst} refused, but only after {took:?}"
        )),
        Err(e) => Err(format!(
            "{what}: UDP {dst}: want ConnectionRefused, got {:?} ({e}) after {took:?}",
            e.kind()
        )),
        Ok(reply) => Err(format!(
            "{what}: UDP {dst} answered {reply:?} instead of being refused"
        )),
    }
}

fn assert_tcp_refused(ns: &Netns, dst: SocketAddrV4, what: &str) {
    check_tcp_refused(ns, dst, what).unwrap_or_else(|e| panic!("{e}"));
}

/// Panics listing every failed check, if any.
fn assert_no_failures(what: &str, failures: &[String], agent: &Agent) {
    assert!(
        failures.is_empty(),
        "{what}: {} check(s) failed:\n  {}\n{}",
        failures.len(),
        failures.join("\n  "),
        agent.log()
    );
}

/// Waits until `ok()` holds (the datapath is programmed and hooked), e.g. a first refusal.
fn settle(what: &str, f: &Fixture, ok: impl FnMut() -> Result<()>) {
    wait_for(SETTLE, ok).unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", f.agent.log()));
}

// ---------------------------------------------------------------------------------------------
// 1. "should be able to create a functioning NodePort service": an external client reaches
// node-ip:nodePort; the replies come from node-ip:nodePort; the endpoints are balanced; the
// backends see the masquerade address (eTP=Cluster, contract point 13), not the client.

fn nodeport_external(network: PodNetwork) {
    let mut f = Fixture::new(network, 4);
    for i in 1..=3 {
        f.serve_tcp(i, 8080, &format!("pod{i}"));
        f.serve_udp(i, 5353, &format!("pod{i}"));
    }
    let svc = Svc::new("web", "NodePort", vip(10))
        .node_port("http", 80, "TCP", "8080", 30080)
        .node_port("dns", 53, "UDP", "5353", 30053);
    let eps = [f.ip(1), f.ip(2), f.ip(3)];
    let slice = slice_yaml(
        "web",
        "web-1",
        &[("http", 8080, "TCP"), ("dns", 5353, "UDP")],
        &eps,
        &[],
    );
    f.apply("web", &[svc.yaml(), slice]);
    let (tdst, udst) = (sa(NODE_IP, 30080), sa(NODE_IP, 30053));
    let rows = f.wait_programmed(&[
        (tdst, "TCP", "NodePort"),
        (udst, "UDP", "NodePort"),
        (sa(vip(10), 80), "TCP", "ClusterIP"),
        (sa(vip(10), 53), "UDP", "ClusterIP"),
    ]);
    let np = Fixture::row(&rows, tdst, "TCP").unwrap();
    assert!(
        np["flags"].as_array().unwrap().iter().any(|f| f == "snat"),
        "NodePort without the snat flag: {np}"
    );
    assert_eq!(np["service"], "default/web:http", "{np}");
    let want: BTreeSet<String> = eps.iter().map(|ip| format!("{ip}:8080")).collect();
    assert_eq!(f.backends(tdst, "TCP"), Some(want));

    let ext = f.ext();
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        f.wait_reply(ext, dst, l4);
        let counts = f.collect(ext, dst, l4, 30, Seen::Snat(NODE_IP));
        assert!(counts.len() >= 2, "{l4:?} {dst} not balanced: {counts:?}");
        assert!(
            idents(&counts).is_subset(&set(&["pod1", "pod2", "pod3"])),
            "{counts:?}"
        );
    }
    assert!(
        f.counter("snat") > 0,
        "snat counter did not move: {}",
        f.status()
    );
}

#[test]
fn nodeport_reachable_from_external_client() {
    nodeport_external(PodNetwork::Routed);
}

#[test]
fn nodeport_reachable_from_external_client_bridge() {
    nodeport_external(PodNetwork::Bridge);
}

// 2. The same NodePort from a pod (pod0, not an endpoint): works, masqueraded as well (the
// destination is external; kube-proxy's external chain masquerades with eTP=Cluster).

fn nodeport_pod(network: PodNetwork) {
    let mut f = Fixture::new(network, 3);
    f.serve_tcp(1, 8080, "pod1");
    f.serve_tcp(2, 8080, "pod2");
    let svc = Svc::new("web", "NodePort", vip(11)).node_port("http", 80, "TCP", "8080", 30080);
    let slice = slice_yaml(
        "web",
        "web-1",
        &[("http", 8080, "TCP")],
        &[f.ip(1), f.ip(2)],
        &[],
    );
    f.apply("web", &[svc.yaml(), slice]);
    let dst = sa(NODE_IP, 30080);
    f.wait_programmed(&[(dst, "TCP", "NodePort")]);
    f.wait_reply(f.ns(0), dst, L4::Tcp);
    let counts = f.collect(f.ns(0), dst, L4::Tcp, 30, Seen::Snat(NODE_IP));
    assert_eq!(idents(&counts), set(&["pod1", "pod2"]), "{counts:?}");
    // The ClusterIP of the same Service from the same pod keeps the pod's source address.
    let cdst = sa(vip(11), 80);
    let counts = f.collect(f.ns(0), cdst, L4::Tcp, 20, Seen::Client(f.ip(0)));
    assert_eq!(idents(&counts), set(&["pod1", "pod2"]), "{counts:?}");
}

#[test]
fn nodeport_reachable_from_pod() {
    nodeport_pod(PodNetwork::Routed);
}

#[test]
fn nodeport_reachable_from_pod_bridge() {
    nodeport_pod(PodNetwork::Bridge);
}

// 3. "should be possible to connect to a service via ExternalIP when the external IP is not
// assigned to a node" (contract point 19).
#[test]
fn externalip_not_assigned_to_node() {
    let mut f = Fixture::new(PodNetwork::Routed, 3);
    f.serve_tcp(1, 8080, "pod1");
    f.serve_tcp(2, 8080, "pod2");
    let eip = Ipv4Addr::new(192, 168, 78, 10);
    let svc = Svc::new("web", "ClusterIP", vip(12))
        .port("http", 80, "TCP", "8080")
        .external_ip(eip);
    let slice = slice_yaml(
        "web",
        "web-1",
        &[("http", 8080, "TCP")],
        &[f.ip(1), f.ip(2)],
        &[],
    );
    f.apply("web", &[svc.yaml(), slice]);
    let dst = sa(eip, 80);
    f.wait_programmed(&[
        (dst, "TCP", "ExternalIP"),
        (sa(vip(12), 80), "TCP", "ClusterIP"),
    ]);
    let addrs = f.node.ns().exec(&["ip", "-4", "-o", "addr"]).unwrap();
    assert!(
        !addrs.contains("192.168.78."),
        "the externalIP is on the node:\n{addrs}"
    );

    f.wait_reply(f.ext(), dst, L4::Tcp);
    let counts = f.collect(f.ext(), dst, L4::Tcp, 30, Seen::Snat(NODE_IP));
    assert_eq!(
        idents(&counts),
        set(&["pod1", "pod2"]),
        "from outside: {counts:?}"
    );
    f.wait_reply(f.ns(0), dst, L4::Tcp);
    let counts = f.collect(f.ns(0), dst, L4::Tcp, 30, Seen::Snat(NODE_IP));
    assert_eq!(
        idents(&counts),
        set(&["pod1", "pod2"]),
        "from a pod: {counts:?}"
    );
}

// 4. LoadBalancer ingress IPs are programmed when ipMode is unset or VIP; with ipMode Proxy
// (contract point 9) the ingress IP gets no rules, while the Service's ClusterIP and NodePort
// still work.
#[test]
fn loadbalancer_ingress_ip() {
    let mut f = Fixture::new(PodNetwork::Routed, 4);
    f.serve_tcp(1, 8080, "pod1");
    f.serve_tcp(2, 8080, "pod2");
    f.serve_tcp(3, 8080, "pod3");
    let (lb_ip, lb_vip_mode, lb_proxy) = (
        Ipv4Addr::new(192, 168, 79, 10),
        Ipv4Addr::new(192, 168, 79, 12),
        Ipv4Addr::new(192, 168, 79, 11),
    );
    let lb = Svc::new("lb", "LoadBalancer", vip(13))
        .node_port("http", 80, "TCP", "8080", 30080)
        .ingress(lb_ip, None)
        .ingress(lb_vip_mode, Some("VIP"));
    let lb_slice = slice_yaml(
        "lb",
        "lb-1",
        &[("http", 8080, "TCP")],
        &[f.ip(1), f.ip(2)],
        &[],
    );
    let proxy = Svc::new("lb-proxy", "LoadBalancer", vip(14))
        .node_port("http", 80, "TCP", "8080", 30081)
        .ingress(lb_proxy, Some("Proxy"));
    let proxy_slice = slice_yaml(
        "lb-proxy",
        "lb-proxy-1",
        &[("http", 8080, "TCP")],
        &[f.ip(3)],
        &[],
    );
    f.apply("lb", &[lb.yaml(), lb_slice]);
    f.apply("lb-proxy", &[proxy.yaml(), proxy_slice]);
    let rows = f.wait_programmed(&[
        (sa(lb_ip, 80), "TCP", "LoadBalancer"),
        (sa(lb_vip_mode, 80), "TCP", "LoadBalancer"),
        (sa(NODE_IP, 30080), "TCP", "NodePort"),
        (sa(vip(14), 80), "TCP", "ClusterIP"),
        (sa(NODE_IP, 30081), "TCP", "NodePort"),
    ]);
    let proxied: Vec<&Value> = rows
        .iter()
        .filter(|r| {
            r["frontend"]
                .as_str()
                .is_some_and(|s| s.starts_with("192.168.79.11:"))
        })
        .collect();
    assert!(
        proxied.is_empty(),
        "ipMode Proxy ingress IP programmed: {proxied:?}"
    );
    let lb_row = Fixture::row(&rows, sa(lb_ip, 80), "TCP").unwrap();
    assert!(
        lb_row["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "snat"),
        "{lb_row}"
    );

    for dst in [sa(lb_ip, 80), sa(lb_vip_mode, 80)] {
        f.wait_reply(f.ext(), dst, L4::Tcp);
        let counts = f.collect(f.ext(), dst, L4::Tcp, 30, Seen::Snat(NODE_IP));
        assert_eq!(idents(&counts), set(&["pod1", "pod2"]), "{dst}: {counts:?}");
    }
    // The Proxy-mode ingress IP: nothing answers for it.
    f.assert_unreachable(
        f.ext(),
        sa(lb_proxy, 80),
        L4::Tcp,
        3,
        "ipMode Proxy ingress IP",
    );
    // ... but its Service's ClusterIP and NodePort do.
    let counts = f.collect(f.ns(0), sa(vip(14), 80), L4::Tcp, 5, Seen::Client(f.ip(0)));
    assert_eq!(idents(&counts), set(&["pod3"]), "{counts:?}");
    let counts = f.collect(f.ext(), sa(NODE_IP, 30081), L4::Tcp, 5, Seen::Snat(NODE_IP));
    assert_eq!(idents(&counts), set(&["pod3"]), "{counts:?}");
}

// 5. "should serve multiport endpoints from pods" with named targetPorts: each slice resolves
// the port names to its own numbers (pod1: http 8080, metrics 9090; pod2: http 8081, metrics
// 9091). Decoy servers listen on the other pod's numbers, so a wrong resolution shows up as a
// wrong ident instead of a refused connection.
#[test]
fn multiport_named_ports() {
    let mut f = Fixture::new(PodNetwork::Routed, 3);
    for (pod, ports) in [(1, [8080, 9090, 8081, 9091]), (2, [8081, 9091, 8080, 9090])] {
        for port in ports {
            f.serve_tcp(pod, port, &format!("pod{pod}-{port}"));
        }
    }
    let svc = Svc::new("multi", "ClusterIP", vip(15))
        .port("http", 80, "TCP", "http")
        .port("metrics", 81, "TCP", "metrics");
    let a = slice_yaml(
        "multi",
        "multi-a",
        &[("http", 8080, "TCP"), ("metrics", 9090, "TCP")],
        &[f.ip(1)],
        &[],
    );
    let b = slice_yaml(
        "multi",
        "multi-b",
        &[("metrics", 9091, "TCP"), ("http", 8081, "TCP")],
        &[f.ip(2)],
        &[],
    );
    f.apply("multi", &[svc.yaml(), a, b]);
    let (http, metrics) = (sa(vip(15), 80), sa(vip(15), 81));
    f.wait_programmed(&[(http, "TCP", "ClusterIP"), (metrics, "TCP", "ClusterIP")]);
    let be = |pod: usize, port: u16| format!("{}:{port}", f.ip(pod));
    assert_eq!(
        f.backends(http, "TCP"),
        Some([be(1, 8080), be(2, 8081)].into())
    );
    assert_eq!(
        f.backends(metrics, "TCP"),
        Some([be(1, 9090), be(2, 9091)].into())
    );
    f.wait_reply(f.ns(0), http, L4::Tcp);
    let counts = f.collect(f.ns(0), http, L4::Tcp, 30, Seen::Client(f.ip(0)));
    assert_eq!(
        idents(&counts),
        set(&["pod1-8080", "pod2-8081"]),
        "port 80: {counts:?}"
    );
    let counts = f.collect(f.ns(0), metrics, L4::Tcp, 30, Seen::Client(f.ip(0)));
    assert_eq!(
        idents(&counts),
        set(&["pod1-9090", "pod2-9091"]),
        "port 81: {counts:?}"
    );
}

// 6. "should serve endpoints on same port and different protocols" (contract point 25), also on
// a NodePort with the same number for TCP and UDP ("should be able to update service type to
// NodePort listening on same port number but different protocols").
#[test]
fn same_port_different_protocols() {
    let mut f = Fixture::new(PodNetwork::Routed, 3);
    for pod in [1, 2] {
        f.serve_tcp(pod, 5353, &format!("pod{pod}-tcp"));
        f.serve_udp(pod, 5353, &format!("pod{pod}-udp"));
    }
    let svc = Svc::new("dns", "NodePort", vip(16))
        .node_port("dns-tcp", 53, "TCP", "5353", 30053)
        .node_port("dns-udp", 53, "UDP", "5353", 30053);
    let slice = slice_yaml(
        "dns",
        "dns-1",
        &[("dns-tcp", 5353, "TCP"), ("dns-udp", 5353, "UDP")],
        &[f.ip(1), f.ip(2)],
        &[],
    );
    f.apply("dns", &[svc.yaml(), slice]);
    let (cdst, ndst) = (sa(vip(16), 53), sa(NODE_IP, 30053));
    let rows = f.wait_programmed(&[
        (cdst, "TCP", "ClusterIP"),
        (cdst, "UDP", "ClusterIP"),
        (ndst, "TCP", "NodePort"),
        (ndst, "UDP", "NodePort"),
    ]);
    let tcp_row = Fixture::row(&rows, cdst, "TCP").unwrap();
    let udp_row = Fixture::row(&rows, cdst, "UDP").unwrap();
    assert_eq!(tcp_row["service"], "default/dns:dns-tcp", "{tcp_row}");
    assert_eq!(udp_row["service"], "default/dns:dns-udp", "{udp_row}");
    assert_ne!(
        tcp_row["id"], udp_row["id"],
        "one service id for both protocols"
    );

    for (client, dst, seen) in [
        (f.ns(0), cdst, Seen::Client(f.ip(0))),
        (f.ext(), ndst, Seen::Snat(NODE_IP)),
    ] {
        f.wait_reply(client, dst, L4::Tcp);
        f.wait_reply(client, dst, L4::Udp);
        let counts = f.collect(client, dst, L4::Tcp, 20, seen);
        assert_eq!(
            idents(&counts),
            set(&["pod1-tcp", "pod2-tcp"]),
            "TCP {dst}: {counts:?}"
        );
        let counts = f.collect(client, dst, L4::Udp, 20, seen);
        assert_eq!(
            idents(&counts),
            set(&["pod1-udp", "pod2-udp"]),
            "UDP {dst}: {counts:?}"
        );
    }
}

// 7. "should be updated after adding or deleting ports": a port added to a live Service starts
// working; once removed, connections to it are REFUSED (the ClusterIP is still programmed, so the
// unexposed port is rejected, contract point 24); the other port and an open connection on it
// keep working throughout.
#[test]
fn ports_added_and_removed_on_live_service() {
    let mut f = Fixture::new(PodNetwork::Routed, 2);
    f.serve_tcp(1, 8080, "pod1-8080");
    f.serve_tcp(1, 9090, "pod1-9090");
    let base = Svc::new("web", "ClusterIP", vip(17)).port("http", 80, "TCP", "8080");
    let one_port = [("http", 8080, "TCP")];
    let two_ports = [("http", 8080, "TCP"), ("metrics", 9090, "TCP")];
    f.apply(
        "web",
        &[
            base.yaml(),
            slice_yaml("web", "web-1", &one_port, &[f.ip(1)], &[]),
        ],
    );
    let (http, metrics) = (sa(vip(17), 80), sa(vip(17), 81));
    f.wait_programmed(&[(http, "TCP", "ClusterIP")]);
    f.wait_reply(f.ns(0), http, L4::Tcp);
    let mut session = TcpSession::connect(f.ns(0), http, T).unwrap();
    let first = session.request().unwrap();
    assert_reply(&first, http, Seen::Client(f.ip(0)));
    let check_http = |session: &mut TcpSession, when: &str| {
        let r = session
            .request()
            .unwrap_or_else(|e| panic!("open connection to port 80 broken {when}: {e:#}"));
        assert_eq!(r, first, "open connection changed {when}");
        let counts = f.collect(f.ns(0), http, L4::Tcp, 3, Seen::Client(f.ip(0)));
        assert_eq!(idents(&counts), set(&["pod1-8080"]), "{when}: {counts:?}");
    };
    // The unexposed port 81 is refused before it is added.
    assert_tcp_refused(f.ns(0), metrics, "port 81 before it is added");

    // Add port 81.
    let added = base.clone().port("metrics", 81, "TCP", "9090");
    f.apply(
        "web",
        &[
            added.yaml(),
            slice_yaml("web", "web-1", &two_ports, &[f.ip(1)], &[]),
        ],
    );
    f.wait_programmed(&[(metrics, "TCP", "ClusterIP")]);
    f.wait_reply(f.ns(0), metrics, L4::Tcp);
    let counts = f.collect(f.ns(0), metrics, L4::Tcp, 5, Seen::Client(f.ip(0)));
    assert_eq!(idents(&counts), set(&["pod1-9090"]), "port 81: {counts:?}");
    check_http(&mut session, "after adding port 81");

    // Remove it again.
    f.apply(
        "web",
        &[
            base.yaml(),
            slice_yaml("web", "web-1", &one_port, &[f.ip(1)], &[]),
        ],
    );
    f.wait_unprogrammed(&[(metrics, "TCP")]);
    let hits = f.tcp["pod1-9090"].accepted();
    let rejects = f.counter("reject_no_port");
    for _ in 0..3 {
        assert_tcp_refused(f.ns(0), metrics, "port 81 after it was removed");
    }
    assert_eq!(
        f.tcp["pod1-9090"].accepted(),
        hits,
        "removed port reached its backend"
    );
    assert!(
        f.counter("reject_no_port") >= rejects + 3,
        "reject_no_port did not count the rejected connections: {}",
        f.status()
    );
    check_http(&mut session, "after removing port 81");
}

// 8a. "should be able to up and down services": deleting one Service stops its VIP (no rules
// left; the packet goes to the node's routing and reaches no backend) while the others keep
// working; a Service created afterwards works.
#[test]
fn up_and_down_services() {
    let mut f = Fixture::new(PodNetwork::Routed, 5);
    for i in 1..=4 {
        f.serve_tcp(i, 8080, &format!("pod{i}"));
    }
    let apply = |f: &Fixture, n: usize| {
        let name = format!("svc{n}");
        let svc = Svc::new(&name, "ClusterIP", vip(20 + n as u8)).port("http", 80, "TCP", "8080");
        let slice = slice_yaml(
            &name,
            &format!("{name}-1"),
            &[("http", 8080, "TCP")],
            &[f.ip(n)],
            &[],
        );
        f.apply(&name, &[svc.yaml(), slice]);
        sa(vip(20 + n as u8), 80)
    };
    let dsts: Vec<SocketAddrV4> = (1..=3).map(|n| apply(&f, n)).collect();
    let check = |f: &Fixture, n: usize, dst: SocketAddrV4| {
        let counts = f.collect(f.ns(0), dst, L4::Tcp, 5, Seen::Client(f.ip(0)));
        assert_eq!(
            idents(&counts),
            set(&[&format!("pod{n}")]),
            "svc{n}: {counts:?}"
        );
    };
    for (n, &dst) in (1..).zip(&dsts) {
        f.wait_reply(f.ns(0), dst, L4::Tcp);
        check(&f, n, dst);
    }

    f.remove("svc2");
    f.wait_unprogrammed(&[(dsts[1], "TCP")]);
    f.assert_unreachable(f.ns(0), dsts[1], L4::Tcp, 3, "deleted svc2");
    check(&f, 1, dsts[0]);
    check(&f, 3, dsts[2]);

    let dst4 = apply(&f, 4);
    f.wait_reply(f.ns(0), dst4, L4::Tcp);
    check(&f, 4, dst4);
    check(&f, 1, dsts[0]);
    check(&f, 3, dsts[2]);
    f.assert_unreachable(f.ns(0), dsts[1], L4::Tcp, 2, "deleted svc2");
}

// 8b. "should work after the service has been recreated": delete a Service, its VIP stops;
// recreate it with the same ClusterIP, it works again; another Service is unaffected.
#[test]
fn recreated_service() {
    let mut f = Fixture::new(PodNetwork::Routed, 3);
    f.serve_tcp(1, 8080, "pod1");
    f.serve_tcp(2, 8080, "pod2");
    let web = Svc::new("web", "ClusterIP", vip(30)).port("http", 80, "TCP", "8080");
    let web_slice = slice_yaml("web", "web-1", &[("http", 8080, "TCP")], &[f.ip(1)], &[]);
    let other = Svc::new("other", "ClusterIP", vip(31)).port("http", 80, "TCP", "8080");
    let other_slice = slice_yaml(
        "other",
        "other-1",
        &[("http", 8080, "TCP")],
        &[f.ip(2)],
        &[],
    );
    f.apply("web", &[web.yaml(), web_slice.clone()]);
    f.apply("other", &[other.yaml(), other_slice]);
    let (dst, odst) = (sa(vip(30), 80), sa(vip(31), 80));
    let check = |f: &Fixture, dst: SocketAddrV4, want: &str| {
        let counts = f.collect(f.ns(0), dst, L4::Tcp, 5, Seen::Client(f.ip(0)));
        assert_eq!(idents(&counts), set(&[want]), "{dst}: {counts:?}");
    };
    f.wait_reply(f.ns(0), dst, L4::Tcp);
    f.wait_reply(f.ns(0), odst, L4::Tcp);
    check(&f, dst, "pod1");

    f.remove("web");
    f.wait_unprogrammed(&[(dst, "TCP")]);
    f.assert_unreachable(f.ns(0), dst, L4::Tcp, 3, "deleted Service");
    check(&f, odst, "pod2");

    f.apply("web", &[web.yaml(), web_slice]);
    f.wait_reply(f.ns(0), dst, L4::Tcp);
    check(&f, dst, "pod1");
    check(&f, odst, "pod2");
}

// 9. "should be able to change the type and ports of a TCP service" / "should be able to change
// the type from ExternalName to ClusterIP" and back: ClusterIP -> NodePort (the NodePort starts
// working) -> ClusterIP (the NodePort stops) -> ExternalName (no frontend at all) -> ClusterIP.
#[test]
fn type_changes() {
    let mut f = Fixture::new(PodNetwork::Routed, 3);
    f.serve_tcp(1, 8080, "pod1");
    f.serve_tcp(2, 8080, "pod2");
    let slice = slice_yaml(
        "web",
        "web-1",
        &[("http", 8080, "TCP")],
        &[f.ip(1), f.ip(2)],
        &[],
    );
    let cluster_ip = Svc::new("web", "ClusterIP", vip(40)).port("http", 80, "TCP", "8080");
    let node_port =
        Svc::new("web", "NodePort", vip(40)).node_port("http", 80, "TCP", "8080", 30080);
    let mut external_name =
        Svc::new("web", "ExternalName", vip(40)).port("http", 80, "TCP", "8080");
    external_name.cluster_ip = None;
    external_name.external_name = Some("web.example.com");
    let (cdst, ndst) = (sa(vip(40), 80), sa(NODE_IP, 30080));
    let both = |f: &Fixture, dst: SocketAddrV4, client: &Netns, seen: Seen, when: &str| {
        let counts = f.collect(client, dst, L4::Tcp, 20, seen);
        assert_eq!(
            idents(&counts),
            set(&["pod1", "pod2"]),
            "{when} {dst}: {counts:?}"
        );
    };

    f.apply("web", &[cluster_ip.yaml(), slice.clone()]);
    f.wait_programmed(&[(cdst, "TCP", "ClusterIP")]);
    f.wait_reply(f.ns(0), cdst, L4::Tcp);
    f.assert_unreachable(f.ext(), ndst, L4::Tcp, 2, "NodePort of a ClusterIP Service");

    f.apply("web", &[node_port.yaml(), slice.clone()]);
    f.wait_programmed(&[(ndst, "TCP", "NodePort"), (cdst, "TCP", "ClusterIP")]);
    f.wait_reply(f.ext(), ndst, L4::Tcp);
    both(&f, ndst, f.ext(), Seen::Snat(NODE_IP), "NodePort");
    both(&f, cdst, f.ns(0), Seen::Client(f.ip(0)), "NodePort");

    f.apply("web", &[cluster_ip.yaml(), slice.clone()]);
    f.wait_unprogrammed(&[(ndst, "TCP")]);
    let rows = f.services();
    assert!(
        rows.iter().all(|r| r["kind"] != "NodePort"),
        "a NodePort frontend is left: {rows:?}"
    );
    f.assert_unreachable(
        f.ext(),
        ndst,
        L4::Tcp,
        3,
        "NodePort after the change back to ClusterIP",
    );
    both(&f, cdst, f.ns(0), Seen::Client(f.ip(0)), "ClusterIP again");

    f.apply("web", &[external_name.yaml(), slice.clone()]);
    f.wait_unprogrammed(&[(cdst, "TCP")]);
    let rows = f.services();
    assert!(rows.is_empty(), "ExternalName Service programmed: {rows:?}");
    f.assert_unreachable(
        f.ns(0),
        cdst,
        L4::Tcp,
        3,
        "ClusterIP of an ExternalName Service",
    );

    f.apply("web", &[cluster_ip.yaml(), slice]);
    f.wait_programmed(&[(cdst, "TCP", "ClusterIP")]);
    f.wait_reply(f.ns(0), cdst, L4::Tcp);
    both(
        &f,
        cdst,
        f.ns(0),
        Seen::Client(f.ip(0)),
        "ExternalName -> ClusterIP",
    );
}

// 10. "should implement service.kubernetes.io/service-proxy-name" and ".../headless" (contract
// points 1 and 2): labelled Services and clusterIP None are not programmed; an EndpointSlice with
// such a label is ignored (its Service has no endpoints, so it is rejected); a normal Service is
// programmed.
#[test]
fn skip_labels() {
    let mut f = Fixture::new(PodNetwork::Routed, 2);
    f.serve_tcp(1, 8080, "pod1");
    let ports = [("http", 8080, "TCP")];
    let ep = [f.ip(1)];
    let mk = |name: &str, last: u8| {
        Svc::new(name, "ClusterIP", vip(last)).port("http", 80, "TCP", "8080")
    };
    let foreign = mk("foreign", 50).label("service.kubernetes.io/service-proxy-name", "foo");
    let headless = mk("headless", 51).label("service.kubernetes.io/headless", "");
    let mut none = mk("none", 52);
    none.cluster_ip = Some("None".into());
    let normal = mk("normal", 53);
    let foreign_slice = mk("foreign-slice", 54);
    for (svc, slice_labels) in [
        (&foreign, &[][..]),
        (&headless, &[][..]),
        (&none, &[][..]),
        (&normal, &[][..]),
        (
            &foreign_slice,
            &[("service.kubernetes.io/service-proxy-name", "foo")][..],
        ),
    ] {
        let slice = slice_yaml(
            &svc.name,
            &format!("{}-1", svc.name),
            &ports,
            &ep,
            slice_labels,
        );
        f.apply(&svc.name, &[svc.yaml(), slice]);
    }
    let rows = f.wait_programmed(&[
        (sa(vip(53), 80), "TCP", "ClusterIP"),
        (sa(vip(54), 80), "TCP", "ClusterIP"),
    ]);
    let frontends: BTreeSet<String> = rows
        .iter()
        .map(|r| r["frontend"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        frontends,
        set(&["10.96.0.53:80", "10.96.0.54:80"]),
        "{rows:?}"
    );
    assert_eq!(
        f.backends(sa(vip(54), 80), "TCP"),
        Some(BTreeSet::new()),
        "endpoints from a slice labelled for another proxy"
    );
    let log = f.agent.log();
    assert!(
        !log.contains("default/none") && !log.contains("default/headless"),
        "skipped Services reported as malformed:\n{log}"
    );

    f.wait_reply(f.ns(0), sa(vip(53), 80), L4::Tcp);
    let counts = f.collect(f.ns(0), sa(vip(53), 80), L4::Tcp, 5, Seen::Client(f.ip(0)));
    assert_eq!(idents(&counts), set(&["pod1"]), "{counts:?}");
    for (last, why) in [(50, "service-proxy-name"), (51, "headless label")] {
        f.assert_unreachable(f.ns(0), sa(vip(last), 80), L4::Tcp, 2, why);
    }
    assert_tcp_refused(
        f.ns(0),
        sa(vip(54), 80),
        "Service whose only slice is foreign",
    );
}

// 11. "should allow pods to hairpin back to themselves through services" (contract point 17):
// the only endpoint connects to its own Service and is answered by itself, SNATed so that the
// reply comes back through the node.

fn hairpin_case(network: PodNetwork) {
    let mut f = Fixture::new(network, 2);
    f.serve_tcp(1, 8080, "pod1");
    f.serve_udp(1, 5353, "pod1");
    let svc = Svc::new("hairpin", "NodePort", vip(60))
        .node_port("http", 80, "TCP", "8080", 30080)
        .port("dns", 53, "UDP", "5353");
    let slice = slice_yaml(
        "hairpin",
        "hairpin-1",
        &[("http", 8080, "TCP"), ("dns", 5353, "UDP")],
        &[f.ip(1)],
        &[],
    );
    f.apply("hairpin", &[svc.yaml(), slice]);
    let (tdst, udst, ndst) = (sa(vip(60), 80), sa(vip(60), 53), sa(NODE_IP, 30080));
    f.wait_programmed(&[
        (tdst, "TCP", "ClusterIP"),
        (udst, "UDP", "ClusterIP"),
        (ndst, "TCP", "NodePort"),
    ]);
    // The same backend from another pod works, not SNATed (source pod IP preserved).
    f.wait_reply(f.ns(0), tdst, L4::Tcp);
    let counts = f.collect(f.ns(0), tdst, L4::Tcp, 5, Seen::Client(f.ip(0)));
    assert_eq!(idents(&counts), set(&["pod1"]), "from pod0: {counts:?}");
    let before = f.counter("hairpin");
    let snat_addr = f.status()["snat_address"].as_str().unwrap().to_string();
    assert_eq!(snat_addr, NODE_IP.to_string());
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp), (ndst, L4::Tcp)] {
        let counts = f.collect(f.ns(1), dst, l4, 10, Seen::Snat(NODE_IP));
        assert_eq!(
            idents(&counts),
            set(&["pod1"]),
            "hairpin {l4:?} {dst}: {counts:?}"
        );
    }
    let after = f.counter("hairpin");
    assert!(
        after > before,
        "hairpin counter did not move: {before} -> {after}"
    );
    // An open hairpin connection keeps working.
    let mut s = TcpSession::connect(f.ns(1), tdst, T).unwrap();
    let a = s.request().unwrap();
    let b = s.request().unwrap();
    assert_reply(&a, tdst, Seen::Snat(NODE_IP));
    assert_eq!(a, b, "hairpin connection changed between requests");
}

#[test]
fn hairpin() {
    hairpin_case(PodNetwork::Routed);
}

#[test]
fn hairpin_bridge() {
    hairpin_case(PodNetwork::Bridge);
}

// 12. "should be rejected when no endpoints exist" (contract point 16): a Service with an empty
// EndpointSlice REJECTs on every frontend: ClusterIP (from a pod), NodePort, externalIP and
// LoadBalancer IP (from the external client), TCP (RST -> ConnectionRefused) and UDP (ICMP port
// unreachable -> ConnectionRefused on a connected socket), fast, and counted.
#[test]
fn rejected_when_no_endpoints() {
    let f = Fixture::new(PodNetwork::Routed, 2);
    let eip = Ipv4Addr::new(192, 168, 78, 20);
    let lb_ip = Ipv4Addr::new(192, 168, 79, 20);
    let svc = Svc::new("empty", "LoadBalancer", vip(70))
        .node_port("http", 80, "TCP", "8080", 30080)
        .node_port("dns", 53, "UDP", "5353", 30053)
        .external_ip(eip)
        .ingress(lb_ip, None);
    let slice = slice_yaml(
        "empty",
        "empty-1",
        &[("http", 8080, "TCP"), ("dns", 5353, "UDP")],
        &[],
        &[],
    );
    f.apply("empty", &[svc.yaml(), slice]);
    let cases: [(&Netns, SocketAddrV4, SocketAddrV4, &str); 4] = [
        (f.ns(0), sa(vip(70), 80), sa(vip(70), 53), "ClusterIP"),
        (f.ext(), sa(NODE_IP, 30080), sa(NODE_IP, 30053), "NodePort"),
        (f.ext(), sa(eip, 80), sa(eip, 53), "ExternalIP"),
        (f.ext(), sa(lb_ip, 80), sa(lb_ip, 53), "LoadBalancer"),
    ];
    let want: Vec<(SocketAddrV4, &str, &str)> = cases
        .iter()
        .flat_map(|&(_, t, u, kind)| [(t, "TCP", kind), (u, "UDP", kind)])
        .collect();
    let rows = f.wait_programmed(&want);
    for &(fe, proto, _) in &want {
        let row = Fixture::row(&rows, fe, proto).unwrap();
        assert_eq!(row["backends"], Value::Array(vec![]), "{row}");
        assert!(
            !row["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "drop-empty"),
            "eTP/iTP Cluster must reject, not drop: {row}"
        );
    }
    // The first refusal on a pod interface may wait for the hook; settle on it.
    settle("ClusterIP never refused", &f, || {
        match tcp_connect_timed(f.ns(0), sa(vip(70), 80), SHORT).0 {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
            other => bail!("{other:?}"),
        }
    });
    // Every case is tried; the failures are reported together.
    let mut failures = Vec::new();
    for &(client, tdst, udst, kind) in &cases {
        // The node's own stack would also refuse a NodePort it does not listen on; the
        // frontend's packet counter and the reject counter show that the datapath answered.
        let (p0, r0) = (f.packets(tdst, "TCP"), f.counter("reject_no_backend"));
        failures.extend(check_tcp_refused(client, tdst, kind).err());
        let (p1, r1) = (f.packets(tdst, "TCP"), f.counter("reject_no_backend"));
        if p1 <= p0 {
            failures.push(format!(
                "{kind}: TCP {tdst}: the datapath saw no packet ({p0} -> {p1})"
            ));
        }
        if r1 <= r0 {
            failures.push(format!(
                "{kind}: TCP {tdst}: reject_no_backend {r0} -> {r1}"
            ));
        }
        failures.extend(check_udp_refused(client, udst, kind).err());
        let (p2, r2) = (f.packets(udst, "UDP"), f.counter("reject_no_backend"));
        if p2 == 0 {
            failures.push(format!("{kind}: UDP {udst}: the datapath saw no packet"));
        }
        if r2 <= r1 {
            failures.push(format!(
                "{kind}: UDP {udst}: reject_no_backend {r1} -> {r2}"
            ));
        }
    }
    assert_no_failures("Service without endpoints", &failures, &f.agent);
}

// 13. A ClusterIP on a port it does not expose is rejected (contract point 24), from a pod and
// from outside, TCP and UDP; the exposed port works.
#[test]
fn clusterip_unexposed_port_rejected() {
    let mut f = Fixture::new(PodNetwork::Routed, 2);
    f.serve_tcp(1, 8080, "pod1");
    // Servers on the pod's port 81 too: nothing may be forwarded there.
    f.serve_tcp(1, 81, "pod1-81");
    f.serve_udp(1, 81, "pod1-81");
    let svc = Svc::new("web", "ClusterIP", vip(80)).port("http", 80, "TCP", "8080");
    let slice = slice_yaml("web", "web-1", &[("http", 8080, "TCP")], &[f.ip(1)], &[]);
    f.apply("web", &[svc.yaml(), slice]);
    let (dst, unexposed) = (sa(vip(80), 80), sa(vip(80), 81));
    f.wait_programmed(&[(dst, "TCP", "ClusterIP")]);
    f.wait_reply(f.ns(0), dst, L4::Tcp);
    let mut failures = Vec::new();
    for (client, who) in [(f.ns(0), "pod"), (f.ext(), "external client")] {
        let r0 = f.counter("reject_no_port");
        failures.extend(check_tcp_refused(client, unexposed, who).err());
        let r1 = f.counter("reject_no_port");
        if r1 <= r0 {
            failures.push(format!(
                "{who}: TCP {unexposed}: reject_no_port {r0} -> {r1}"
            ));
        }
        failures.extend(check_udp_refused(client, unexposed, who).err());
        let r2 = f.counter("reject_no_port");
        if r2 <= r1 {
            failures.push(format!(
                "{who}: UDP {unexposed}: reject_no_port {r1} -> {r2}"
            ));
        }
    }
    assert_no_failures("unexposed ClusterIP port", &failures, &f.agent);
    assert_eq!(f.tcp["pod1-81"].accepted(), 0);
    assert_eq!(f.udp["pod1-81"].received(), 0);
    let counts = f.collect(f.ns(0), dst, L4::Tcp, 5, Seen::Client(f.ip(0)));
    assert_eq!(idents(&counts), set(&["pod1"]), "{counts:?}");
}

// 14. Two clients with the same source port to the same NodePort at the same time: SNAT maps
// them to the same node address, so it must give them different source ports, and both
// connections must work side by side (the conntrack e2e tests rely on this).

/// Two open connections from `a` and `b`, both from source port 40000, to `dst` (whose only
/// backend answers `backend`), then UDP from the same port; asserts both flows work and the
/// backend saw `snat` with two different ports.
fn two_clients_same_port(
    agent: &Agent,
    (a, b): (&Netns, &Netns),
    tdst: SocketAddrV4,
    udst: SocketAddrV4,
    backend: &str,
    snat: Ipv4Addr,
) {
    const SRC_PORT: u16 = 40000;
    let mut first_session = TcpSession::connect_from(a, SRC_PORT, tdst, T)
        .unwrap_or_else(|e| panic!("first client: {e:#}\n{}", agent.log()));
    let mut second_session = TcpSession::connect_from(b, SRC_PORT, tdst, T).unwrap_or_else(|e| {
        panic!(
            "second client (same source port, first still open): {e:#}\n{}",
            agent.log()
        )
    });
    let mut seen = Vec::new();
    for round in 0..3 {
        for (who, s) in [
            ("first", &mut first_session),
            ("second", &mut second_session),
        ] {
            let r = s
                .request()
                .unwrap_or_else(|e| panic!("{who} client, round {round}: {e:#}"));
            assert_eq!(r.ident, backend, "{r:?}");
            assert_eq!(r.local.port(), SRC_PORT, "{r:?}");
            assert_reply(&r, tdst, Seen::Snat(snat));
            seen.push((who, r.seen_client));
        }
    }
    let first: BTreeSet<SocketAddr> = seen
        .iter()
        .filter(|s| s.0 == "first")
        .map(|s| s.1)
        .collect();
    let second: BTreeSet<SocketAddr> = seen
        .iter()
        .filter(|s| s.0 == "second")
        .map(|s| s.1)
        .collect();
    assert_eq!(
        first.len(),
        1,
        "first flow's SNAT address changed: {seen:?}"
    );
    assert_eq!(
        second.len(),
        1,
        "second flow's SNAT address changed: {seen:?}"
    );
    assert_ne!(
        first, second,
        "both flows got the same SNAT address and port: {seen:?}"
    );

    let mut useen = BTreeMap::new();
    for round in 0..2 {
        for (who, ns) in [("first", a), ("second", b)] {
            let r = udp_request_from(ns, SRC_PORT, udst, T)
                .unwrap_or_else(|e| panic!("UDP {who} client, round {round}: {e:#}"));
            assert_eq!(r.ident, backend, "{r:?}");
            assert_reply(&r, udst, Seen::Snat(snat));
            let prev = useen.insert(who, r.seen_client);
            assert!(
                prev.is_none() || prev == Some(r.seen_client),
                "UDP {who}: {prev:?} -> {r:?}"
            );
        }
    }
    assert_ne!(
        useen["first"], useen["second"],
        "UDP flows collided: {useen:?}"
    );
}

#[test]
fn nodeport_snat_source_port_collision() {
    let mut f = Fixture::new(PodNetwork::Routed, 3);
    f.serve_tcp(2, 8080, "pod2");
    f.serve_udp(2, 5353, "pod2");
    let svc = Svc::new("web", "NodePort", vip(90))
        .node_port("http", 80, "TCP", "8080", 30080)
        .node_port("dns", 53, "UDP", "5353", 30053);
    let slice = slice_yaml(
        "web",
        "web-1",
        &[("http", 8080, "TCP"), ("dns", 5353, "UDP")],
        &[f.ip(2)],
        &[],
    );
    f.apply("web", &[svc.yaml(), slice]);
    let (tdst, udst) = (sa(NODE_IP, 30080), sa(NODE_IP, 30053));
    f.wait_programmed(&[(tdst, "TCP", "NodePort"), (udst, "UDP", "NodePort")]);
    f.wait_reply(f.ns(0), tdst, L4::Tcp);
    f.wait_reply(f.ns(1), tdst, L4::Tcp);
    two_clients_same_port(&f.agent, (f.ns(0), f.ns(1)), tdst, udst, "pod2", NODE_IP);
}

/// The same with two real external clients (192.168.50.2 and .3) of a one-node [`Cluster`],
/// reaching the node's NodePort on its uplink address.
#[test]
fn nodeport_snat_source_port_collision_external_clients() {
    require_root().expect("service_types_e2e tests must run as root");
    let mut cluster = Cluster::new(ClusterOptions {
        nodes: 1,
        pods_per_node: 2,
        network: PodNetwork::Routed,
        external_client: true,
    })
    .expect("building the cluster");
    cluster.add_client().expect("second client");
    let node = cluster.node(0);
    let node_ip = cluster.node_ip(0);
    let agent = Agent::start(Path::new(env!("CARGO_BIN_EXE_podlb")), node).expect("agent");
    let _t = TcpServer::start(node.pod(1).ns(), 8080, "pod1");
    let _u = UdpServer::start(node.pod(1).ns(), 5353, "pod1");
    let svc = Svc::new("web", "NodePort", vip(91))
        .node_port("http", 80, "TCP", "8080", 30080)
        .node_port("dns", 53, "UDP", "5353", 30053);
    let slice = slice_yaml(
        "web",
        "web-1",
        &[("http", 8080, "TCP"), ("dns", 5353, "UDP")],
        &[node.pod(1).ip()],
        &[],
    );
    agent
        .write_manifest("web.yaml", &[svc.yaml(), slice].join("---\n"))
        .unwrap();
    let (tdst, udst) = (sa(node_ip, 30080), sa(node_ip, 30053));
    let clients = cluster.clients();
    for c in clients {
        wait_for(SETTLE, || {
            let r = tcp_request(c, tdst, SHORT)?;
            ensure!(r.peer == SocketAddr::V4(tdst), "reply from {}", r.peer);
            Ok(())
        })
        .unwrap_or_else(|e| {
            panic!(
                "{tdst} never reachable from {}: {e:#}\n{}",
                c.name(),
                agent.log()
            )
        });
    }
    two_clients_same_port(
        &agent,
        (&clients[0], &clients[1]),
        tdst,
        udst,
        "pod1",
        node_ip,
    );
}
