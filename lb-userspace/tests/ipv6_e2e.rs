//! End-to-end IPv6 and dual-stack Service tests with real traffic (issue 3; contract point 8:
//! "per family; clusterIPs/externalIPs/sourceRanges/LB ingress filtered per family"). They mirror
//! the IPv4 tests of `service_e2e.rs`, `service_types_e2e.rs` and `multinode_e2e.rs` (same
//! scenarios, names prefixed `ipv6_` or `dual_stack_`):
//!
//! - IPv6 ClusterIP, TCP and UDP, routed and bridge pod networks; pod-to-pod IPv6 traffic that is
//!   no Service's passes untouched; the CLI shows IPv6 frontends and backends;
//! - dual-stack Services (`ipFamilies` [IPv4, IPv6] and [IPv6, IPv4], two `clusterIPs`, one
//!   EndpointSlice per address type): each VIP reaches the backends of its own family;
//! - IPv6 NodePort from the external client and from a pod (masqueraded to the node's IPv6
//!   address), dual-stack NodePort on both node addresses, externalIPs not assigned to a node,
//!   LoadBalancer ingress IPs (ipMode unset / VIP / Proxy);
//! - rejected when no endpoints exist (TCP RST, ICMPv6 port unreachable) on every frontend kind,
//!   and on an unexposed port of an IPv6 ClusterIP;
//! - hairpin, SNAT source-port collisions (pods, and real external clients);
//! - two nodes: IPv6 NodePort with the endpoint on the other node, pod on node A to an IPv6
//!   ClusterIP with the endpoint on node B, externalTrafficPolicy Local (source kept; the node
//!   without a local endpoint drops);
//! - family isolation: a single-stack IPv4 Service does not answer on IPv6 (no IPv6 NodePort,
//!   its IPv6 externalIP and IPv6 EndpointSlices ignored), and vice versa.
//!
//! Addresses (see `podlb::testbed`): pods fd00:10:244:k::(10+i), the standalone node's `ext0`
//! fd00:77::1 and the external client fd00:77::2, cluster nodes fd00:50::(10+k) and clients
//! fd00:50::(2+n); ClusterIPs fd00:96::x (and 10.96.0.x), externalIPs fd00:78::x, LoadBalancer
//! ingress fd00:79::x (never assigned to an interface). Standalone nodes have no Node object:
//! NodePorts are served on, and masquerading uses, the `ext0` addresses (the fallback); cluster
//! nodes get Node objects with an InternalIP of each family.
//!
//! Needs root (fails, never skips, without it). Run with the eBPF object built:
//! `cargo xtask build && PODLB_EBPF_OBJ=... cargo test --release -p lb-userspace --test ipv6_e2e`

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use common::e2e::*;
use podlb::testbed::manifest::{Service, Slice};
use podlb::testbed::*;
use serde_json::Value;

/// Timeout of a connection that must be refused: a REJECT must come far sooner.
const REJECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How fast a REJECT (TCP RST / ICMPv6 port unreachable) must arrive.
const REJECT_FAST: Duration = Duration::from_secs(1);
/// The standalone node's IPv6 address on `ext0`: NodePorts and SNAT.
const NODE_IP6: Ipv6Addr = EXT_NODE_IP6;
const NODE_IP: Ipv4Addr = EXT_NODE_IP;

fn v6(ip: Ipv6Addr) -> IpAddr {
    IpAddr::V6(ip)
}

fn v4(ip: Ipv4Addr) -> IpAddr {
    IpAddr::V4(ip)
}

/// externalIP fd00:78::`last`.
fn eip6(last: u16) -> Ipv6Addr {
    format!("fd00:78::{last}").parse().unwrap()
}

/// LoadBalancer ingress IP fd00:79::`last`.
fn lb6(last: u16) -> Ipv6Addr {
    format!("fd00:79::{last}").parse().unwrap()
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn proto(l4: L4) -> &'static str {
    l4.proto()
}

// ---------------------------------------------------------------------------------------------
// Single-node fixture

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
        let (node, agent) = node_with_agent("ipv6_e2e", network, pods, true);
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

    fn ip6(&self, pod: usize) -> Ipv6Addr {
        self.node.pod(pod).ip6()
    }

    fn ext(&self) -> &Netns {
        self.node.ext().expect("external client")
    }

    /// TCP server on `port` in `pod` (both families), answering with `ident`.
    fn serve_tcp(&mut self, pod: usize, port: u16, ident: &str) {
        let s = TcpServer::start(self.node.pod(pod).ns(), port, ident);
        assert!(self.tcp.insert(ident.to_string(), s).is_none(), "{ident}");
    }

    /// UDP server on `port` in `pod` (both families), answering with `ident`.
    fn serve_udp(&mut self, pod: usize, port: u16, ident: &str) {
        let s = UdpServer::start(self.node.pod(pod).ns(), port, ident);
        assert!(self.udp.insert(ident.to_string(), s).is_none(), "{ident}");
    }

    /// TCP 8080 and UDP 5353 servers in each of `pods`, answering `pod{i}`.
    fn serve(&mut self, pods: &[usize]) {
        for &i in pods {
            self.serve_tcp(i, TCP_BACKEND_PORT, &format!("pod{i}"));
            self.serve_udp(i, UDP_BACKEND_PORT, &format!("pod{i}"));
        }
    }

    /// Connections accepted plus datagrams received by every server so far.
    fn total_hits(&self) -> usize {
        self.tcp.values().map(TcpServer::accepted).sum::<usize>()
            + self.udp.values().map(UdpServer::received).sum::<usize>()
    }

    /// Connections (TCP) or datagrams (UDP) that the `pod{i}` servers saw.
    fn hits(&self, l4: L4, pod: usize) -> usize {
        let ident = format!("pod{pod}");
        match l4 {
            L4::Tcp => self.tcp.get(&ident).map_or(0, TcpServer::accepted),
            L4::Udp => self.udp.get(&ident).map_or(0, UdpServer::received),
        }
    }

    /// Writes one manifest file with several YAML documents (atomically).
    fn apply(&self, file: &str, docs: &[String]) {
        self.agent
            .write_manifest(&format!("{file}.yaml"), &docs.join("---\n"))
            .unwrap();
    }

    fn services(&self) -> Vec<Value> {
        try_services(&self.agent).unwrap_or_else(|e| panic!("podlb service list -o json: {e:#}"))
    }

    fn wait_programmed(&self, want: &[(SocketAddr, &str, &str)]) -> Vec<Value> {
        wait_programmed(&self.agent, want)
    }

    fn backends(&self, frontend: SocketAddr, proto: &str) -> Option<BTreeSet<String>> {
        row(&self.services(), frontend, proto).map(|r| row_backends(&r))
    }

    /// The packet counter of `frontend`/`proto` (0 if it is not programmed).
    fn packets(&self, frontend: SocketAddr, proto: &str) -> u64 {
        row(&self.services(), frontend, proto)
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or(0)
    }

    fn status(&self) -> Value {
        try_status(&self.agent).unwrap_or_else(|e| panic!("podlb status -o json: {e:#}"))
    }

    /// Event counter `name` from `podlb status`.
    fn counter(&self, name: &str) -> u64 {
        let s = self.status();
        s["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in status: {s}"))
    }

    fn wait_reply(&self, client: &Netns, dst: SocketAddr, l4: L4) -> Reply {
        wait_answered_ip(client, dst, l4, || self.agent.log())
    }

    /// `n` requests from `client` to `dst`; asserts on each reply that it came from `dst` and
    /// that the server saw `seen`. Returns how often each server ident answered.
    fn collect(
        &self,
        client: &Netns,
        dst: SocketAddr,
        l4: L4,
        n: usize,
        seen: SeenIp,
    ) -> BTreeMap<String, usize> {
        collect(client, dst, l4, n, seen, || self.agent.log())
    }

    /// Asserts that `n` requests from `client` to `dst` all fail and reach no server.
    fn assert_unreachable(&self, client: &Netns, dst: SocketAddr, l4: L4, n: usize, why: &str) {
        let before = self.total_hits();
        for k in 0..n {
            if let Ok(r) = l4.request_to(client, dst, SHORT) {
                panic!(
                    "{why}: {l4:?} request {k} to {dst} was answered: {r:?}\n{}",
                    self.agent.log()
                );
            }
        }
        assert_eq!(
            self.total_hits(),
            before,
            "{why}: a request to {dst} reached a backend"
        );
    }

    fn log(&self) -> String {
        strip_ansi(&self.agent.log())
    }
}

/// `n` requests from `client` to `dst`, each checked with [`check_reply_ip`]; counts per ident.
fn collect(
    client: &Netns,
    dst: SocketAddr,
    l4: L4,
    n: usize,
    seen: SeenIp,
    log: impl Fn() -> String,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for k in 0..n {
        let r = l4
            .request_to(client, dst, T)
            .and_then(|r| check_reply_ip(&r, dst, seen).map(|()| r))
            .unwrap_or_else(|e| {
                panic!(
                    "{l4:?} request {k} of {n} from netns {} to {dst}: {e:#}\n{}",
                    client.name(),
                    log()
                )
            });
        *counts.entry(r.ident).or_insert(0) += 1;
    }
    counts
}

/// The `service list` row of `frontend` (printed as `SocketAddr` does: `[fd00::1]:80`) and
/// `proto`.
fn row(rows: &[Value], frontend: SocketAddr, proto: &str) -> Option<Value> {
    let fe = frontend.to_string();
    rows.iter()
        .find(|r| r["frontend"] == fe.as_str() && r["protocol"] == proto)
        .cloned()
}

/// Waits until `agent`'s datapath has every `(frontend, protocol, kind)`; returns the rows.
fn wait_programmed(agent: &Agent, want: &[(SocketAddr, &str, &str)]) -> Vec<Value> {
    let r = wait_for(SETTLE, || {
        let rows = try_services(agent)?;
        for &(fe, proto, kind) in want {
            match row(&rows, fe, proto) {
                Some(r) if r["kind"] == kind => {}
                other => bail!("{fe}/{proto} is not a {kind} frontend: {other:?}\nrows: {rows:?}"),
            }
        }
        Ok(rows)
    });
    r.unwrap_or_else(|e| panic!("{e:#}\n{}", agent.log()))
}

fn has_flag(row: &Value, flag: &str) -> bool {
    row["flags"]
        .as_array()
        .is_some_and(|a| a.iter().any(|f| f == flag))
}

/// `"{ip}:{port}"` as `SocketAddr` prints it (brackets for IPv6), the CLI's backend format.
fn be(ip: impl Into<IpAddr>, port: u16) -> String {
    sa(ip, port).to_string()
}

fn names(pods: &[usize]) -> BTreeSet<String> {
    pods.iter().map(|i| format!("pod{i}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Reject helpers (as in service_types_e2e.rs, for either family)

/// A TCP connect from `ns` to `dst`; returns the outcome and how long it took.
fn tcp_connect_timed(
    ns: &Netns,
    dst: SocketAddr,
    timeout: Duration,
) -> (io::Result<TcpStream>, Duration) {
    let start = Instant::now();
    let r = ns.run_in(|| TcpStream::connect_timeout(&dst, timeout));
    (r, start.elapsed())
}

/// A CONNECTED UDP socket in `ns` sends one datagram to `dst` and waits for the answer; an
/// ICMP(v6) port unreachable shows up as ConnectionRefused.
fn udp_connected_timed(
    ns: &Netns,
    dst: SocketAddr,
    timeout: Duration,
) -> (io::Result<String>, Duration) {
    let start = Instant::now();
    let bind: SocketAddr = match dst {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
        SocketAddr::V6(_) => "[::]:0".parse().unwrap(),
    };
    let r = ns.run_in(|| -> io::Result<String> {
        let sock = UdpSocket::bind(bind)?;
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
fn check_tcp_refused(ns: &Netns, dst: SocketAddr, what: &str) -> Result<(), String> {
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

/// Checks that a connected UDP socket in `ns` gets ConnectionRefused (ICMPv6 port unreachable)
/// from `dst` within [`REJECT_FAST`].
fn check_udp_refused(ns: &Netns, dst: SocketAddr, what: &str) -> Result<(), String> {
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

// =============================================================================================
// ClusterIP (service_e2e.rs)

/// An IPv6 single-stack ClusterIP Service `name` on `vip` with one `l4` port, and its IPv6
/// EndpointSlice with `(pod address, ready)` endpoints.
fn v6_clusterip_docs(name: &str, vip: Ipv6Addr, l4: L4, eps: &[(Ipv6Addr, bool)]) -> Vec<String> {
    let (pname, port, target) = l4.ports();
    let svc = Service::new(name, "ClusterIP")
        .cluster_ip(vip)
        .port(pname, port, proto(l4), target);
    let mut slice =
        Slice::new(name, &format!("{name}-ipv6"), IpFamily::V6).port(pname, target, proto(l4));
    for &(ip, ready) in eps {
        slice = slice.endpoint(ip, ready);
    }
    vec![svc.yaml(), slice.yaml()]
}

// IPv6 ClusterIP from a pod: balanced over the ready endpoints, replies come from [VIP]:port, the
// server sees the pod's own IPv6 address, a not-ready endpoint (whose server is up) never
// answers.
fn ipv6_clusterip(network: PodNetwork, l4: L4) {
    let mut f = Fixture::new(network, 4);
    f.serve(&[1, 2, 3]);
    let vip = vip6(10);
    let eps = [(f.ip6(1), true), (f.ip6(2), true), (f.ip6(3), false)];
    f.apply("web", &v6_clusterip_docs("web", vip, l4, &eps));
    let (_, port, target) = l4.ports();
    let dst = sa(vip, port);
    let rows = f.wait_programmed(&[(dst, proto(l4), "ClusterIP")]);
    let r = row(&rows, dst, proto(l4)).unwrap();
    assert_eq!(r["frontend"], format!("[{vip}]:{port}").as_str(), "{r}");
    f.wait_reply(f.ns(0), dst, l4);
    assert_eq!(
        f.backends(dst, proto(l4)),
        Some([be(f.ip6(1), target), be(f.ip6(2), target)].into()),
        "{}",
        f.log()
    );
    let counts = f.collect(f.ns(0), dst, l4, 30, SeenIp::Client(v6(f.ip6(0))));
    assert!(counts.len() >= 2, "not balanced: {counts:?}");
    assert!(idents(&counts).is_subset(&names(&[1, 2])), "{counts:?}");
    assert_eq!(f.hits(l4, 3), 0, "the not-ready endpoint pod3 got traffic");
}

#[test]
fn ipv6_tcp_clusterip_routed() {
    ipv6_clusterip(PodNetwork::Routed, L4::Tcp);
}

#[test]
fn ipv6_tcp_clusterip_bridge() {
    ipv6_clusterip(PodNetwork::Bridge, L4::Tcp);
}

#[test]
fn ipv6_udp_clusterip_routed() {
    ipv6_clusterip(PodNetwork::Routed, L4::Udp);
}

#[test]
fn ipv6_udp_clusterip_bridge() {
    ipv6_clusterip(PodNetwork::Bridge, L4::Udp);
}

// An external client reaches the IPv6 ClusterIP through ext0 (not masqueraded: ClusterIP).
fn ipv6_external_client(network: PodNetwork) {
    let mut f = Fixture::new(network, 3);
    f.serve(&[1, 2]);
    let vip = vip6(17);
    let eps = [(f.ip6(1), true), (f.ip6(2), true)];
    f.apply("web", &v6_clusterip_docs("web", vip, L4::Tcp, &eps));
    let dst = sa(vip, 80);
    f.wait_reply(f.ext(), dst, L4::Tcp);
    let counts = f.collect(
        f.ext(),
        dst,
        L4::Tcp,
        30,
        SeenIp::Client(v6(EXT_CLIENT_IP6)),
    );
    assert_eq!(idents(&counts), names(&[1, 2]), "{counts:?}");
}

#[test]
fn ipv6_external_client_routed() {
    ipv6_external_client(PodNetwork::Routed);
}

#[test]
fn ipv6_external_client_bridge() {
    ipv6_external_client(PodNetwork::Bridge);
}

// Pod-to-pod IPv6 traffic that is not addressed to a VIP passes untouched (hooks attached, a
// Service to the same backend in place), in both directions.
fn ipv6_non_service_traffic(network: PodNetwork) {
    let mut f = Fixture::new(network, 2);
    f.serve(&[1]);
    f.apply(
        "web",
        &v6_clusterip_docs("web", vip6(12), L4::Tcp, &[(f.ip6(1), true)]),
    );
    f.apply(
        "dns",
        &v6_clusterip_docs("dns", vip6(13), L4::Udp, &[(f.ip6(1), true)]),
    );
    f.wait_reply(f.ns(0), sa(vip6(12), 80), L4::Tcp);
    f.wait_reply(f.ns(0), sa(vip6(13), 53), L4::Udp);
    for l4 in [L4::Tcp, L4::Udp] {
        let direct = sa(f.ip6(1), l4.ports().2);
        let counts = f.collect(f.ns(0), direct, l4, 5, SeenIp::Client(v6(f.ip6(0))));
        assert_eq!(idents(&counts), names(&[1]), "{l4:?}: {counts:?}");
    }
    let _s0 = TcpServer::start(f.ns(0), 9000, "pod0");
    let r = tcp_request(f.ns(1), sa(f.ip6(0), 9000), T).unwrap();
    assert_eq!(
        (r.ident.as_str(), r.seen_client),
        ("pod0", r.local),
        "{r:?}"
    );
    assert_eq!(r.seen_client.ip(), v6(f.ip6(1)));
    // And the external client to a pod, and to the node.
    let r = tcp_request(f.ext(), sa(f.ip6(0), 9000), T).unwrap();
    assert_eq!(r.seen_client.ip(), v6(EXT_CLIENT_IP6), "{r:?}");
}

#[test]
fn ipv6_non_service_traffic_routed() {
    ipv6_non_service_traffic(PodNetwork::Routed);
}

#[test]
fn ipv6_non_service_traffic_bridge() {
    ipv6_non_service_traffic(PodNetwork::Bridge);
}

// Endpoints removed from and added to an IPv6 EndpointSlice are applied live.
#[test]
fn ipv6_endpoint_changes() {
    let l4 = L4::Tcp;
    let mut f = Fixture::new(PodNetwork::Routed, 4);
    f.serve(&[1, 2, 3]);
    let vip = vip6(11);
    let dst = sa(vip, 80);
    let all = [(f.ip6(1), true), (f.ip6(2), true), (f.ip6(3), true)];
    f.apply("web", &v6_clusterip_docs("web", vip, l4, &all));
    f.wait_reply(f.ns(0), dst, l4);
    let seen = SeenIp::Client(v6(f.ip6(0)));
    let ok = wait_until(SETTLE, Duration::from_millis(50), || {
        f.backends(dst, "TCP").is_some_and(|b| b.len() == 3)
    });
    assert!(ok, "never got 3 backends: {:?}", f.backends(dst, "TCP"));
    let counts = f.collect(f.ns(0), dst, l4, 60, seen);
    assert_eq!(idents(&counts), names(&[1, 2, 3]), "{counts:?}");

    f.apply("web", &v6_clusterip_docs("web", vip, l4, &all[..2]));
    let want: BTreeSet<String> = [be(f.ip6(1), 8080), be(f.ip6(2), 8080)].into();
    let ok = wait_until(SETTLE, Duration::from_millis(50), || {
        f.backends(dst, "TCP").as_ref() == Some(&want)
    });
    assert!(ok, "pod3 never removed: {:?}", f.backends(dst, "TCP"));
    let before = f.hits(l4, 3);
    let counts = f.collect(f.ns(0), dst, l4, 30, seen);
    assert!(idents(&counts).is_subset(&names(&[1, 2])), "{counts:?}");
    assert_eq!(f.hits(l4, 3), before, "removed endpoint pod3 got traffic");

    f.apply("web", &v6_clusterip_docs("web", vip, l4, &all));
    let ok = wait_until(SETTLE, Duration::from_millis(50), || {
        f.backends(dst, "TCP").is_some_and(|b| b.len() == 3)
    });
    assert!(ok, "pod3 never added back");
    let counts = f.collect(f.ns(0), dst, l4, 60, seen);
    assert!(counts.contains_key("pod3"), "{counts:?}");
}

// The operator CLI shows IPv6 frontends and backends in brackets, with their family, and
// counts their packets.
#[test]
fn ipv6_cli_service_list() {
    let mut f = Fixture::new(PodNetwork::Routed, 3);
    f.serve(&[1, 2]);
    let vip = vip6(18);
    let eps = [(f.ip6(1), true), (f.ip6(2), true)];
    f.apply("web", &v6_clusterip_docs("web", vip, L4::Tcp, &eps));
    let dst = sa(vip, 80);
    f.wait_reply(f.ns(0), dst, L4::Tcp);
    f.collect(f.ns(0), dst, L4::Tcp, 10, SeenIp::Client(v6(f.ip6(0))));
    let rows = f.services();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["frontend"], "[fd00:96::18]:80", "{r}");
    assert_eq!(r["family"], "IPv6", "{r}");
    assert_eq!(r["kind"], "ClusterIP", "{r}");
    assert_eq!(r["service"], "default/web:http", "{r}");
    assert_eq!(
        row_backends(r),
        set(&["[fd00:10:244::11]:8080", "[fd00:10:244::12]:8080"]),
        "{r}"
    );
    assert!(r["packets"].as_u64().unwrap_or(0) > 0, "{r}");
    let table = f.agent.cli(&["service", "list"]).unwrap();
    assert!(table.contains("[fd00:96::18]:80"), "{table}");
    // With the agent down too.
    f.agent.kill9();
    assert_eq!(f.services()[0]["frontend"], "[fd00:96::18]:80");
    f.collect(f.ns(0), dst, L4::Tcp, 5, SeenIp::Client(v6(f.ip6(0))));
}

// =============================================================================================
// Dual stack

/// Dual-stack Service `name` of `type_` with `families` order, ClusterIPs `vip4`/`vip6`, TCP
/// 80 and UDP 53 (NodePorts `node_ports` when given), its IPv4 slice (pods `pods4`) and IPv6
/// slice (pods `pods6`).
#[allow(clippy::too_many_arguments)]
fn dual_stack_docs(
    f: &Fixture,
    name: &str,
    type_: &str,
    v6_first: bool,
    (vip4, vip6): (Ipv4Addr, Ipv6Addr),
    node_ports: Option<(u16, u16)>,
    pods4: &[usize],
    pods6: &[usize],
) -> Vec<String> {
    let mut svc = Service::new(name, type_);
    svc = if v6_first {
        svc.cluster_ip(vip6).cluster_ip(vip4)
    } else {
        svc.cluster_ip(vip4).cluster_ip(vip6)
    };
    svc = match node_ports {
        Some((t, u)) => svc
            .node_port("http", 80, "TCP", TCP_BACKEND_PORT, t)
            .node_port("dns", 53, "UDP", UDP_BACKEND_PORT, u),
        None => {
            svc.port("http", 80, "TCP", TCP_BACKEND_PORT)
                .port("dns", 53, "UDP", UDP_BACKEND_PORT)
        }
    };
    let mut s4 = Slice::new(name, &format!("{name}-ipv4"), IpFamily::V4)
        .port("http", TCP_BACKEND_PORT, "TCP")
        .port("dns", UDP_BACKEND_PORT, "UDP");
    for &i in pods4 {
        s4 = s4.endpoint(f.ip(i), true);
    }
    let mut s6 = Slice::new(name, &format!("{name}-ipv6"), IpFamily::V6)
        .port("http", TCP_BACKEND_PORT, "TCP")
        .port("dns", UDP_BACKEND_PORT, "UDP");
    for &i in pods6 {
        s6 = s6.endpoint(f.ip6(i), true);
    }
    vec![svc.yaml(), s4.yaml(), s6.yaml()]
}

// A dual-stack ClusterIP Service: both VIPs work, each reaches the endpoints of its own
// family's EndpointSlice (IPv4: pod1, pod2; IPv6: pod2, pod3), and the backends see the pod's
// address of that family. Once with IPv4 as the primary family, once with IPv6.
fn dual_stack_clusterip(network: PodNetwork, v6_first: bool) {
    let mut f = Fixture::new(network, 4);
    f.serve(&[1, 2, 3]);
    let (vip4, vip6_) = (vip(20), vip6(20));
    let docs = dual_stack_docs(
        &f,
        "ds",
        "ClusterIP",
        v6_first,
        (vip4, vip6_),
        None,
        &[1, 2],
        &[2, 3],
    );
    f.apply("ds", &docs);
    let mut want = Vec::new();
    for (ip, l4) in [
        (v4(vip4), L4::Tcp),
        (v4(vip4), L4::Udp),
        (v6(vip6_), L4::Tcp),
        (v6(vip6_), L4::Udp),
    ] {
        want.push((sa(ip, l4.ports().1), proto(l4), "ClusterIP"));
    }
    let rows = f.wait_programmed(&want);
    for (ip, pods) in [(v4(vip4), [1, 2]), (v6(vip6_), [2, 3])] {
        for l4 in [L4::Tcp, L4::Udp] {
            let (_, port, target) = l4.ports();
            let r = row(&rows, sa(ip, port), proto(l4)).unwrap();
            let want: BTreeSet<String> = pods
                .iter()
                .map(|&i| be(f.node.pod(i).ip_of(IpFamily::of(ip)), target))
                .collect();
            assert_eq!(row_backends(&r), want, "{r}");
        }
    }
    for (ip, pods, seen) in [
        (v4(vip4), [1, 2], v4(f.ip(0))),
        (v6(vip6_), [2, 3], v6(f.ip6(0))),
    ] {
        for l4 in [L4::Tcp, L4::Udp] {
            let dst = sa(ip, l4.ports().1);
            f.wait_reply(f.ns(0), dst, l4);
            let counts = f.collect(f.ns(0), dst, l4, 30, SeenIp::Client(seen));
            assert_eq!(idents(&counts), names(&pods), "{l4:?} {dst}: {counts:?}");
        }
    }
}

#[test]
fn dual_stack_clusterip_routed() {
    dual_stack_clusterip(PodNetwork::Routed, false);
}

#[test]
fn dual_stack_clusterip_bridge() {
    dual_stack_clusterip(PodNetwork::Bridge, false);
}

#[test]
fn dual_stack_clusterip_ipv6_primary() {
    dual_stack_clusterip(PodNetwork::Routed, true);
}

// A dual-stack NodePort is served on both node addresses; each family is masqueraded to the
// node's address of that family and reaches the endpoints of that family.
#[test]
fn dual_stack_nodeport_reachable_from_external_client() {
    let mut f = Fixture::new(PodNetwork::Routed, 4);
    f.serve(&[1, 2, 3]);
    let docs = dual_stack_docs(
        &f,
        "ds",
        "NodePort",
        false,
        (vip(21), vip6(21)),
        Some((30080, 30053)),
        &[1, 2],
        &[2, 3],
    );
    f.apply("ds", &docs);
    let want: Vec<(SocketAddr, &str, &str)> = [v4(NODE_IP), v6(NODE_IP6)]
        .into_iter()
        .flat_map(|ip| {
            [
                (sa(ip, 30080), "TCP", "NodePort"),
                (sa(ip, 30053), "UDP", "NodePort"),
            ]
        })
        .collect();
    let rows = f.wait_programmed(&want);
    for &(fe, p, _) in &want {
        let r = row(&rows, fe, p).unwrap();
        assert!(has_flag(&r, "snat"), "NodePort without the snat flag: {r}");
    }
    for (node_ip, pods) in [(v4(NODE_IP), [1, 2]), (v6(NODE_IP6), [2, 3])] {
        for (np, l4) in [(30080, L4::Tcp), (30053, L4::Udp)] {
            let dst = sa(node_ip, np);
            f.wait_reply(f.ext(), dst, l4);
            let counts = f.collect(f.ext(), dst, l4, 30, SeenIp::Snat(node_ip));
            assert_eq!(idents(&counts), names(&pods), "{l4:?} {dst}: {counts:?}");
        }
    }
    let st = f.status();
    assert_eq!(st["snat_address"], NODE_IP.to_string().as_str(), "{st}");
    assert_eq!(st["snat_address6"], NODE_IP6.to_string().as_str(), "{st}");
}

// =============================================================================================
// NodePort, externalIPs, LoadBalancer (service_types_e2e.rs)

/// IPv6 single-stack Service `name` (`type_`, ClusterIP `vip`, TCP 80 / UDP 53 with NodePorts
/// when given) and its IPv6 slice of `pods`.
fn v6_service(
    f: &Fixture,
    name: &str,
    type_: &str,
    vip: Ipv6Addr,
    node_ports: Option<(u16, u16)>,
    pods: &[usize],
) -> (Service, String) {
    let mut svc = Service::new(name, type_).cluster_ip(vip);
    svc = match node_ports {
        Some((t, u)) => svc
            .node_port("http", 80, "TCP", TCP_BACKEND_PORT, t)
            .node_port("dns", 53, "UDP", UDP_BACKEND_PORT, u),
        None => {
            svc.port("http", 80, "TCP", TCP_BACKEND_PORT)
                .port("dns", 53, "UDP", UDP_BACKEND_PORT)
        }
    };
    let mut slice = Slice::new(name, &format!("{name}-ipv6"), IpFamily::V6)
        .port("http", TCP_BACKEND_PORT, "TCP")
        .port("dns", UDP_BACKEND_PORT, "UDP");
    for &i in pods {
        slice = slice.endpoint(f.ip6(i), true);
    }
    (svc, slice.yaml())
}

// "should be able to create a functioning NodePort service" over IPv6: the external client
// reaches [node]:nodePort, replies come from there, the endpoints are balanced, the backends see
// the node's IPv6 address (eTP=Cluster: masquerade).
fn ipv6_nodeport_external(network: PodNetwork) {
    let mut f = Fixture::new(network, 4);
    f.serve(&[1, 2, 3]);
    let (svc, slice) = v6_service(
        &f,
        "web",
        "NodePort",
        vip6(30),
        Some((30080, 30053)),
        &[1, 2, 3],
    );
    f.apply("web", &[svc.yaml(), slice]);
    let (tdst, udst) = (sa(NODE_IP6, 30080), sa(NODE_IP6, 30053));
    let rows = f.wait_programmed(&[
        (tdst, "TCP", "NodePort"),
        (udst, "UDP", "NodePort"),
        (sa(vip6(30), 80), "TCP", "ClusterIP"),
        (sa(vip6(30), 53), "UDP", "ClusterIP"),
    ]);
    let np = row(&rows, tdst, "TCP").unwrap();
    assert!(
        has_flag(&np, "snat"),
        "NodePort without the snat flag: {np}"
    );
    // A single-stack IPv6 Service has no IPv4 NodePort.
    assert!(
        row(&rows, sa(NODE_IP, 30080), "TCP").is_none(),
        "IPv4 NodePort of an IPv6 Service: {rows:?}"
    );
    let snat0 = f.counter("snat");
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        f.wait_reply(f.ext(), dst, l4);
        let counts = f.collect(f.ext(), dst, l4, 30, SeenIp::Snat(v6(NODE_IP6)));
        assert!(counts.len() >= 2, "{l4:?} {dst} not balanced: {counts:?}");
        assert!(idents(&counts).is_subset(&names(&[1, 2, 3])), "{counts:?}");
    }
    assert!(f.counter("snat") > snat0, "snat counter did not move");
    let st = f.status();
    assert_eq!(st["snat_address6"], NODE_IP6.to_string().as_str(), "{st}");
}

#[test]
fn ipv6_nodeport_reachable_from_external_client() {
    ipv6_nodeport_external(PodNetwork::Routed);
}

#[test]
fn ipv6_nodeport_reachable_from_external_client_bridge() {
    ipv6_nodeport_external(PodNetwork::Bridge);
}

// The same IPv6 NodePort from a pod (not an endpoint): masqueraded as well; the ClusterIP of
// the same Service from the same pod keeps the pod's IPv6 address.
fn ipv6_nodeport_pod(network: PodNetwork) {
    let mut f = Fixture::new(network, 3);
    f.serve(&[1, 2]);
    let (svc, slice) = v6_service(
        &f,
        "web",
        "NodePort",
        vip6(31),
        Some((30080, 30053)),
        &[1, 2],
    );
    f.apply("web", &[svc.yaml(), slice]);
    let dst = sa(NODE_IP6, 30080);
    f.wait_programmed(&[(dst, "TCP", "NodePort")]);
    f.wait_reply(f.ns(0), dst, L4::Tcp);
    let counts = f.collect(f.ns(0), dst, L4::Tcp, 30, SeenIp::Snat(v6(NODE_IP6)));
    assert_eq!(idents(&counts), names(&[1, 2]), "{counts:?}");
    let udst = sa(NODE_IP6, 30053);
    f.wait_reply(f.ns(0), udst, L4::Udp);
    let counts = f.collect(f.ns(0), udst, L4::Udp, 20, SeenIp::Snat(v6(NODE_IP6)));
    assert_eq!(idents(&counts), names(&[1, 2]), "{counts:?}");
    let cdst = sa(vip6(31), 80);
    let counts = f.collect(f.ns(0), cdst, L4::Tcp, 20, SeenIp::Client(v6(f.ip6(0))));
    assert_eq!(idents(&counts), names(&[1, 2]), "{counts:?}");
}

#[test]
fn ipv6_nodeport_reachable_from_pod() {
    ipv6_nodeport_pod(PodNetwork::Routed);
}

#[test]
fn ipv6_nodeport_reachable_from_pod_bridge() {
    ipv6_nodeport_pod(PodNetwork::Bridge);
}

// externalTrafficPolicy Local on a standalone node with local endpoints: the NodePort keeps
// the client's IPv6 address and port (no SNAT).
#[test]
fn ipv6_nodeport_external_traffic_policy_local_keeps_client_address() {
    let mut f = Fixture::new(PodNetwork::Routed, 3);
    f.serve(&[1, 2]);
    let (svc, slice) = v6_service(&f, "web", "NodePort", vip6(32), Some((30080, 30053)), &[]);
    drop(slice);
    let svc = svc.external_traffic_policy("Local");
    // Endpoints on this node (nodeName node-0): the local set.
    let slice = Slice::new("web", "web-ipv6", IpFamily::V6)
        .port("http", TCP_BACKEND_PORT, "TCP")
        .port("dns", UDP_BACKEND_PORT, "UDP")
        .endpoint_on(f.ip6(1), "node-0")
        .endpoint_on(f.ip6(2), "node-0");
    f.apply("web", &[svc.yaml(), slice.yaml()]);
    let (tdst, udst) = (sa(NODE_IP6, 30080), sa(NODE_IP6, 30053));
    let rows = f.wait_programmed(&[(tdst, "TCP", "NodePort"), (udst, "UDP", "NodePort")]);
    let np = row(&rows, tdst, "TCP").unwrap();
    assert!(
        !has_flag(&np, "snat"),
        "eTP=Local NodePort masquerades: {np}"
    );
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        f.wait_reply(f.ext(), dst, l4);
        let counts = f.collect(f.ext(), dst, l4, 20, SeenIp::Client(v6(EXT_CLIENT_IP6)));
        assert_eq!(idents(&counts), names(&[1, 2]), "{l4:?}: {counts:?}");
    }
}

// "should be possible to connect to a service via ExternalIP when the external IP is not
// assigned to a node", over IPv6: from the external client and from a pod, masqueraded.
#[test]
fn ipv6_externalip_not_assigned_to_node() {
    let mut f = Fixture::new(PodNetwork::Routed, 3);
    f.serve(&[1, 2]);
    let eip = eip6(10);
    let (svc, slice) = v6_service(&f, "web", "ClusterIP", vip6(40), None, &[1, 2]);
    f.apply("web", &[svc.external_ip(eip).yaml(), slice]);
    let (dst, udst) = (sa(eip, 80), sa(eip, 53));
    f.wait_programmed(&[
        (dst, "TCP", "ExternalIP"),
        (udst, "UDP", "ExternalIP"),
        (sa(vip6(40), 80), "TCP", "ClusterIP"),
    ]);
    let addrs = f.node.ns().exec(&["ip", "-6", "-o", "addr"]).unwrap();
    assert!(
        !addrs.contains("fd00:78:"),
        "the externalIP is on the node:\n{addrs}"
    );
    for (client, who) in [(f.ext(), "external client"), (f.ns(0), "pod")] {
        for (d, l4) in [(dst, L4::Tcp), (udst, L4::Udp)] {
            f.wait_reply(client, d, l4);
            let counts = f.collect(client, d, l4, 20, SeenIp::Snat(v6(NODE_IP6)));
            assert_eq!(idents(&counts), names(&[1, 2]), "{who} {l4:?}: {counts:?}");
        }
    }
}

// IPv6 LoadBalancer ingress IPs are programmed when ipMode is unset or VIP, not for Proxy
// (whose Service's ClusterIP and NodePort still work).
#[test]
fn ipv6_loadbalancer_ingress_ip() {
    let mut f = Fixture::new(PodNetwork::Routed, 4);
    f.serve(&[1, 2, 3]);
    let (lb_ip, lb_vip_mode, lb_proxy) = (lb6(10), lb6(12), lb6(11));
    let (lb, lb_slice) = v6_service(
        &f,
        "lb",
        "LoadBalancer",
        vip6(50),
        Some((30080, 30053)),
        &[1, 2],
    );
    let lb = lb.ingress(lb_ip, None).ingress(lb_vip_mode, Some("VIP"));
    let (proxy, proxy_slice) = v6_service(
        &f,
        "lb-proxy",
        "LoadBalancer",
        vip6(51),
        Some((30081, 30054)),
        &[3],
    );
    let proxy = proxy.ingress(lb_proxy, Some("Proxy"));
    f.apply("lb", &[lb.yaml(), lb_slice]);
    f.apply("lb-proxy", &[proxy.yaml(), proxy_slice]);
    let rows = f.wait_programmed(&[
        (sa(lb_ip, 80), "TCP", "LoadBalancer"),
        (sa(lb_ip, 53), "UDP", "LoadBalancer"),
        (sa(lb_vip_mode, 80), "TCP", "LoadBalancer"),
        (sa(NODE_IP6, 30080), "TCP", "NodePort"),
        (sa(vip6(51), 80), "TCP", "ClusterIP"),
        (sa(NODE_IP6, 30081), "TCP", "NodePort"),
    ]);
    let proxied: Vec<&Value> = rows
        .iter()
        .filter(|r| {
            r["frontend"]
                .as_str()
                .is_some_and(|s| s.starts_with("[fd00:79::11]:"))
        })
        .collect();
    assert!(
        proxied.is_empty(),
        "ipMode Proxy ingress IP programmed: {proxied:?}"
    );
    let lb_row = row(&rows, sa(lb_ip, 80), "TCP").unwrap();
    assert!(has_flag(&lb_row, "snat"), "{lb_row}");
    for dst in [sa(lb_ip, 80), sa(lb_vip_mode, 80)] {
        f.wait_reply(f.ext(), dst, L4::Tcp);
        let counts = f.collect(f.ext(), dst, L4::Tcp, 30, SeenIp::Snat(v6(NODE_IP6)));
        assert_eq!(idents(&counts), names(&[1, 2]), "{dst}: {counts:?}");
    }
    let udst = sa(lb_ip, 53);
    f.wait_reply(f.ext(), udst, L4::Udp);
    let counts = f.collect(f.ext(), udst, L4::Udp, 20, SeenIp::Snat(v6(NODE_IP6)));
    assert_eq!(idents(&counts), names(&[1, 2]), "{udst}: {counts:?}");
    f.assert_unreachable(
        f.ext(),
        sa(lb_proxy, 80),
        L4::Tcp,
        3,
        "ipMode Proxy ingress IP",
    );
    let counts = f.collect(
        f.ns(0),
        sa(vip6(51), 80),
        L4::Tcp,
        5,
        SeenIp::Client(v6(f.ip6(0))),
    );
    assert_eq!(idents(&counts), names(&[3]), "{counts:?}");
    let counts = f.collect(
        f.ext(),
        sa(NODE_IP6, 30081),
        L4::Tcp,
        5,
        SeenIp::Snat(v6(NODE_IP6)),
    );
    assert_eq!(idents(&counts), names(&[3]), "{counts:?}");
}

// "should be rejected when no endpoints exist" over IPv6 (contract point 16): an IPv6 Service
// with an empty IPv6 EndpointSlice REJECTs on every frontend: ClusterIP (from a pod), NodePort,
// externalIP and LoadBalancer IP (from the external client), TCP (RST -> ConnectionRefused) and
// UDP (ICMPv6 port unreachable -> ConnectionRefused on a connected socket), fast, and counted.
#[test]
fn ipv6_rejected_when_no_endpoints() {
    let f = Fixture::new(PodNetwork::Routed, 2);
    let (eip, lb_ip) = (eip6(20), lb6(20));
    let (svc, slice) = v6_service(
        &f,
        "empty",
        "LoadBalancer",
        vip6(70),
        Some((30080, 30053)),
        &[],
    );
    let svc = svc.external_ip(eip).ingress(lb_ip, None);
    f.apply("empty", &[svc.yaml(), slice]);
    let cases: [(&Netns, SocketAddr, SocketAddr, &str); 4] = [
        (f.ns(0), sa(vip6(70), 80), sa(vip6(70), 53), "ClusterIP"),
        (
            f.ext(),
            sa(NODE_IP6, 30080),
            sa(NODE_IP6, 30053),
            "NodePort",
        ),
        (f.ext(), sa(eip, 80), sa(eip, 53), "ExternalIP"),
        (f.ext(), sa(lb_ip, 80), sa(lb_ip, 53), "LoadBalancer"),
    ];
    let want: Vec<(SocketAddr, &str, &str)> = cases
        .iter()
        .flat_map(|&(_, t, u, kind)| [(t, "TCP", kind), (u, "UDP", kind)])
        .collect();
    let rows = f.wait_programmed(&want);
    for &(fe, p, _) in &want {
        let r = row(&rows, fe, p).unwrap();
        assert_eq!(r["backends"], Value::Array(vec![]), "{r}");
        assert!(
            !has_flag(&r, "drop-empty"),
            "eTP/iTP Cluster must reject: {r}"
        );
    }
    // The first refusal on a pod interface may wait for the hook; settle on it.
    wait_for(SETTLE, || {
        match tcp_connect_timed(f.ns(0), sa(vip6(70), 80), SHORT).0 {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
            other => bail!("{other:?}"),
        }
    })
    .unwrap_or_else(|e| panic!("IPv6 ClusterIP never refused: {e:#}\n{}", f.agent.log()));
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
    assert_no_failures("IPv6 Service without endpoints", &failures, &f.agent);
}

// An IPv6 ClusterIP on a port it does not expose is rejected (contract point 24), from a pod and
// from outside, TCP and UDP; nothing reaches the pod's port; the exposed port works.
#[test]
fn ipv6_clusterip_unexposed_port_rejected() {
    let mut f = Fixture::new(PodNetwork::Routed, 2);
    f.serve_tcp(1, 8080, "pod1");
    f.serve_tcp(1, 81, "pod1-81");
    f.serve_udp(1, 81, "pod1-81");
    let vip = vip6(80);
    f.apply(
        "web",
        &v6_clusterip_docs("web", vip, L4::Tcp, &[(f.ip6(1), true)]),
    );
    let (dst, unexposed) = (sa(vip, 80), sa(vip, 81));
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
    assert_no_failures("unexposed IPv6 ClusterIP port", &failures, &f.agent);
    assert_eq!(f.tcp["pod1-81"].accepted(), 0);
    assert_eq!(f.udp["pod1-81"].received(), 0);
    let counts = f.collect(f.ns(0), dst, L4::Tcp, 5, SeenIp::Client(v6(f.ip6(0))));
    assert_eq!(idents(&counts), names(&[1]), "{counts:?}");
}

// "should allow pods to hairpin back to themselves through services" over IPv6 (contract point
// 17): the only endpoint reaches its own Service (ClusterIP TCP and UDP, NodePort) and is
// answered by itself, masqueraded to the node's IPv6 address.
fn ipv6_hairpin_case(network: PodNetwork) {
    let mut f = Fixture::new(network, 2);
    f.serve(&[1]);
    let (svc, slice) = v6_service(
        &f,
        "hairpin",
        "NodePort",
        vip6(60),
        Some((30080, 30053)),
        &[1],
    );
    f.apply("hairpin", &[svc.yaml(), slice]);
    let (tdst, udst, ndst) = (sa(vip6(60), 80), sa(vip6(60), 53), sa(NODE_IP6, 30080));
    f.wait_programmed(&[
        (tdst, "TCP", "ClusterIP"),
        (udst, "UDP", "ClusterIP"),
        (ndst, "TCP", "NodePort"),
    ]);
    // Another pod: not SNATed.
    f.wait_reply(f.ns(0), tdst, L4::Tcp);
    let counts = f.collect(f.ns(0), tdst, L4::Tcp, 5, SeenIp::Client(v6(f.ip6(0))));
    assert_eq!(idents(&counts), names(&[1]), "from pod0: {counts:?}");
    let snat6 = f.status()["snat_address6"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(snat6, NODE_IP6.to_string(), "{}", f.status());
    let before = f.counter("hairpin");
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp), (ndst, L4::Tcp)] {
        let counts = f.collect(f.ns(1), dst, l4, 10, SeenIp::Snat(v6(NODE_IP6)));
        assert_eq!(
            idents(&counts),
            names(&[1]),
            "hairpin {l4:?} {dst}: {counts:?}"
        );
    }
    let after = f.counter("hairpin");
    assert!(
        after > before,
        "hairpin counter did not move: {before} -> {after}"
    );
    let mut s = TcpSession::connect(f.ns(1), tdst, T).unwrap();
    let a = s.request().unwrap();
    let b = s.request().unwrap();
    assert_reply_ip(&a, tdst, SeenIp::Snat(v6(NODE_IP6)));
    assert_eq!(a, b, "hairpin connection changed between requests");
}

#[test]
fn ipv6_hairpin() {
    ipv6_hairpin_case(PodNetwork::Routed);
}

#[test]
fn ipv6_hairpin_bridge() {
    ipv6_hairpin_case(PodNetwork::Bridge);
}

// Two clients with the same source port 40000 to the same IPv6 NodePort at the same time: SNAT
// maps them to the same node address, so it must give them different source ports; both
// connections work side by side; then UDP from the same port.
const SRC_PORT: u16 = 40000;

fn two_clients_same_port(
    log: &dyn Fn() -> String,
    (a, b): (&Netns, &Netns),
    tdst: SocketAddr,
    udst: SocketAddr,
    backend: &str,
    snat: IpAddr,
) {
    let mut first = TcpSession::connect_from(a, SRC_PORT, tdst, T)
        .unwrap_or_else(|e| panic!("first client: {e:#}\n{}", log()));
    let mut second = TcpSession::connect_from(b, SRC_PORT, tdst, T).unwrap_or_else(|e| {
        panic!(
            "second client (same source port, first still open): {e:#}\n{}",
            log()
        )
    });
    let mut seen: BTreeMap<&str, BTreeSet<SocketAddr>> = BTreeMap::new();
    for round in 0..3 {
        for (who, s) in [("first", &mut first), ("second", &mut second)] {
            let r = s
                .request()
                .and_then(|r| check_reply_ip(&r, tdst, SeenIp::Snat(snat)).map(|()| r))
                .unwrap_or_else(|e| panic!("{who} client, round {round}: {e:#}\n{}", log()));
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
        "both flows got the same SNAT address and port: {seen:?}"
    );
    drop((first, second));
    let mut useen: BTreeMap<&str, SocketAddr> = BTreeMap::new();
    for round in 0..2 {
        for (who, ns) in [("first", a), ("second", b)] {
            let r = udp_request_from(ns, SRC_PORT, udst, T)
                .and_then(|r| check_reply_ip(&r, udst, SeenIp::Snat(snat)).map(|()| r))
                .unwrap_or_else(|e| panic!("UDP {who} client, round {round}: {e:#}\n{}", log()));
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

#[test]
fn ipv6_nodeport_snat_source_port_collision() {
    let mut f = Fixture::new(PodNetwork::Routed, 3);
    f.serve(&[2]);
    let (svc, slice) = v6_service(&f, "web", "NodePort", vip6(90), Some((30080, 30053)), &[2]);
    f.apply("web", &[svc.yaml(), slice]);
    let (tdst, udst) = (sa(NODE_IP6, 30080), sa(NODE_IP6, 30053));
    f.wait_programmed(&[(tdst, "TCP", "NodePort"), (udst, "UDP", "NodePort")]);
    f.wait_reply(f.ns(0), tdst, L4::Tcp);
    f.wait_reply(f.ns(1), tdst, L4::Tcp);
    f.wait_reply(f.ns(0), udst, L4::Udp);
    f.wait_reply(f.ns(1), udst, L4::Udp);
    two_clients_same_port(
        &|| f.agent.log(),
        (f.ns(0), f.ns(1)),
        tdst,
        udst,
        "pod2",
        v6(NODE_IP6),
    );
}

/// The same with two real external clients (fd00:50::2 and ::3) of a one-node [`Cluster`],
/// reaching the node's IPv6 NodePort on its uplink address.
#[test]
fn ipv6_nodeport_snat_source_port_collision_external_clients() {
    require_root().expect("ipv6_e2e tests must run as root");
    let mut cluster = Cluster::new(ClusterOptions {
        nodes: 1,
        pods_per_node: 2,
        network: PodNetwork::Routed,
        external_client: true,
    })
    .expect("building the cluster");
    cluster.add_client().expect("second client");
    let node = cluster.node(0);
    let node_ip = cluster.node_ip6(0);
    let agent = Agent::start(Path::new(env!("CARGO_BIN_EXE_podlb")), node).expect("agent");
    let _t = TcpServer::start(node.pod(1).ns(), TCP_BACKEND_PORT, "pod1");
    let _u = UdpServer::start(node.pod(1).ns(), UDP_BACKEND_PORT, "pod1");
    let svc = Service::new("web", "NodePort")
        .cluster_ip(vip6(91))
        .node_port("http", 80, "TCP", TCP_BACKEND_PORT, 30080)
        .node_port("dns", 53, "UDP", UDP_BACKEND_PORT, 30053);
    let slice = Slice::new("web", "web-ipv6", IpFamily::V6)
        .port("http", TCP_BACKEND_PORT, "TCP")
        .port("dns", UDP_BACKEND_PORT, "UDP")
        .endpoint(node.pod(1).ip6(), true);
    agent
        .write_manifest("web.yaml", &[svc.yaml(), slice.yaml()].join("---\n"))
        .unwrap();
    let (tdst, udst) = (sa(node_ip, 30080), sa(node_ip, 30053));
    for c in cluster.clients() {
        wait_answered_ip(c, tdst, L4::Tcp, || agent.log());
        wait_answered_ip(c, udst, L4::Udp, || agent.log());
    }
    let clients = cluster.clients();
    two_clients_same_port(
        &|| agent.log(),
        (&clients[0], &clients[1]),
        tdst,
        udst,
        "pod1",
        v6(node_ip),
    );
}

// =============================================================================================
// Family isolation (contract point 8)

// A single-stack Service of `family` is programmed in that family only: no NodePort on the
// node's address of the other family, its externalIP of the other family and its EndpointSlice
// of the other address type are ignored; requests in the other family reach no backend. The
// Service's own family works (from a pod and from outside).
fn single_stack_isolation(family: IpFamily) {
    let mut f = Fixture::new(PodNetwork::Routed, 3);
    f.serve(&[1, 2]);
    let other = match family {
        IpFamily::V4 => IpFamily::V6,
        IpFamily::V6 => IpFamily::V4,
    };
    let cip: IpAddr = match family {
        IpFamily::V4 => v4(vip(100)),
        IpFamily::V6 => v6(vip6(100)),
    };
    let (eip_own, eip_other): (IpAddr, IpAddr) = match family {
        IpFamily::V4 => (v4(Ipv4Addr::new(192, 168, 78, 100)), v6(eip6(100))),
        IpFamily::V6 => (v6(eip6(100)), v4(Ipv4Addr::new(192, 168, 78, 100))),
    };
    let svc = Service::new("single", "NodePort")
        .cluster_ip(cip)
        .node_port("http", 80, "TCP", TCP_BACKEND_PORT, 30100)
        .node_port("dns", 53, "UDP", UDP_BACKEND_PORT, 30101)
        .external_ip(eip_own)
        .external_ip(eip_other);
    // pod1 in the Service's own family, pod2 in a slice of the other address type.
    let own = Slice::new("single", "single-own", family)
        .port("http", TCP_BACKEND_PORT, "TCP")
        .port("dns", UDP_BACKEND_PORT, "UDP")
        .endpoint(f.node.pod(1).ip_of(family), true);
    let foreign = Slice::new("single", "single-other", other)
        .port("http", TCP_BACKEND_PORT, "TCP")
        .port("dns", UDP_BACKEND_PORT, "UDP")
        .endpoint(f.node.pod(2).ip_of(other), true);
    f.apply("single", &[svc.yaml(), own.yaml(), foreign.yaml()]);
    let node_own = f.node.node_ip_of(family).unwrap();
    let node_other = f.node.node_ip_of(other).unwrap();
    let rows = f.wait_programmed(&[
        (sa(cip, 80), "TCP", "ClusterIP"),
        (sa(cip, 53), "UDP", "ClusterIP"),
        (sa(node_own, 30100), "TCP", "NodePort"),
        (sa(node_own, 30101), "UDP", "NodePort"),
        (sa(eip_own, 80), "TCP", "ExternalIP"),
    ]);
    let want_family = family.k8s_name();
    for r in &rows {
        let fe: SocketAddr = r["frontend"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            IpFamily::of(fe.ip()),
            family,
            "a {} frontend of a single-stack {want_family} Service: {r}",
            other.k8s_name()
        );
        let tport = if r["protocol"] == "TCP" {
            TCP_BACKEND_PORT
        } else {
            UDP_BACKEND_PORT
        };
        assert_eq!(
            row_backends(r),
            set(&[be(f.node.pod(1).ip_of(family), tport)]),
            "backends of the other family's slice used: {r}"
        );
    }
    // The Service's family works.
    let pod_seen = SeenIp::Client(f.node.pod(0).ip_of(family));
    for (dst, l4) in [(sa(cip, 80), L4::Tcp), (sa(cip, 53), L4::Udp)] {
        f.wait_reply(f.ns(0), dst, l4);
        let counts = f.collect(f.ns(0), dst, l4, 10, pod_seen);
        assert_eq!(idents(&counts), names(&[1]), "{dst}: {counts:?}");
    }
    for (dst, l4) in [
        (sa(node_own, 30100), L4::Tcp),
        (sa(node_own, 30101), L4::Udp),
        (sa(eip_own, 80), L4::Tcp),
    ] {
        f.wait_reply(f.ext(), dst, l4);
        let counts = f.collect(f.ext(), dst, l4, 10, SeenIp::Snat(node_own));
        assert_eq!(idents(&counts), names(&[1]), "{dst}: {counts:?}");
    }
    // The other family reaches nothing: the node's address of the other family on the
    // NodePorts, and the externalIP of the other family.
    for (dst, l4) in [
        (sa(node_other, 30100), L4::Tcp),
        (sa(node_other, 30101), L4::Udp),
        (sa(eip_other, 80), L4::Tcp),
        (sa(eip_other, 53), L4::Udp),
    ] {
        f.assert_unreachable(
            f.ext(),
            dst,
            l4,
            2,
            &format!("single-stack {want_family} Service in the other family"),
        );
    }
    assert_eq!(
        f.hits(L4::Tcp, 2) + f.hits(L4::Udp, 2),
        0,
        "pod2 got traffic"
    );
}

#[test]
fn single_stack_ipv4_service_does_not_answer_on_ipv6() {
    single_stack_isolation(IpFamily::V4);
}

#[test]
fn single_stack_ipv6_service_does_not_answer_on_ipv4() {
    single_stack_isolation(IpFamily::V6);
}

// An IPv6 Service whose only EndpointSlice is IPv4 has no endpoints (rejects); an IPv4 Service
// whose only EndpointSlice is IPv6 likewise.
#[test]
fn ipv6_service_ignores_ipv4_endpointslice() {
    let mut f = Fixture::new(PodNetwork::Routed, 2);
    f.serve(&[1]);
    for (name, cip, fam) in [
        ("six", v6(vip6(110)), IpFamily::V4),
        ("four", v4(vip(110)), IpFamily::V6),
    ] {
        let svc = Service::new(name, "ClusterIP").cluster_ip(cip).port(
            "http",
            80,
            "TCP",
            TCP_BACKEND_PORT,
        );
        let slice = Slice::new(name, &format!("{name}-1"), fam)
            .port("http", TCP_BACKEND_PORT, "TCP")
            .endpoint(f.node.pod(1).ip_of(fam), true);
        f.apply(name, &[svc.yaml(), slice.yaml()]);
    }
    let (d6, d4) = (sa(vip6(110), 80), sa(vip(110), 80));
    let rows = f.wait_programmed(&[(d6, "TCP", "ClusterIP"), (d4, "TCP", "ClusterIP")]);
    for d in [d6, d4] {
        let r = row(&rows, d, "TCP").unwrap();
        assert_eq!(
            r["backends"],
            Value::Array(vec![]),
            "other family's slice used: {r}"
        );
    }
    wait_for(SETTLE, || match tcp_connect_timed(f.ns(0), d6, SHORT).0 {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        other => bail!("{other:?}"),
    })
    .unwrap_or_else(|e| panic!("{d6} never refused: {e:#}\n{}", f.log()));
    let mut failures = Vec::new();
    failures.extend(check_tcp_refused(f.ns(0), d6, "IPv6 Service, IPv4 slice").err());
    failures.extend(check_tcp_refused(f.ns(0), d4, "IPv4 Service, IPv6 slice").err());
    assert_no_failures("slices of the other family", &failures, &f.agent);
    assert_eq!(f.hits(L4::Tcp, 1), 0);
}

// =============================================================================================
// Two nodes (multinode_e2e.rs)

const NODES: usize = 2;

/// The Node objects of a two-node cluster, each with an InternalIP of both families.
fn nodes_yaml() -> String {
    (0..NODES)
        .map(|k| {
            manifest::node(
                &format!("node-{k}"),
                &[cluster_node_ip(k).into(), cluster_node_ip6(k).into()],
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Cluster + one agent per node + servers. Field order is drop order.
struct Multi {
    tcp: BTreeMap<String, TcpServer>,
    udp: BTreeMap<String, UdpServer>,
    agents: Vec<Agent>,
    cluster: Cluster,
}

impl Multi {
    fn new(network: PodNetwork, clients: usize) -> Multi {
        require_root().expect("ipv6_e2e tests must run as root");
        let mut cluster = Cluster::new(ClusterOptions {
            nodes: NODES,
            pods_per_node: 2,
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
        Multi {
            tcp: BTreeMap::new(),
            udp: BTreeMap::new(),
            agents,
            cluster,
        }
    }

    fn pod(&self, k: usize, i: usize) -> &Pod {
        self.cluster.node(k).pod(i)
    }

    fn ident(k: usize, i: usize) -> String {
        format!("node{k}-pod{i}")
    }

    fn client(&self, n: usize) -> &Netns {
        &self.cluster.clients()[n]
    }

    fn serve(&mut self, k: usize, i: usize) {
        let ident = Self::ident(k, i);
        let ns = self.cluster.node(k).pod(i).ns();
        let t = TcpServer::start(ns, TCP_BACKEND_PORT, &ident);
        let u = UdpServer::start(ns, UDP_BACKEND_PORT, &ident);
        self.tcp.insert(ident.clone(), t);
        self.udp.insert(ident, u);
    }

    fn total_hits(&self) -> usize {
        self.tcp.values().map(TcpServer::accepted).sum::<usize>()
            + self.udp.values().map(UdpServer::received).sum::<usize>()
    }

    /// Writes the same manifest file to every agent.
    fn apply(&self, file: &str, docs: &[String]) {
        let yaml = docs.join("---\n");
        for a in &self.agents {
            a.write_manifest(&format!("{file}.yaml"), &yaml).unwrap();
        }
    }

    fn logs(&self) -> String {
        self.agents
            .iter()
            .enumerate()
            .map(|(k, a)| format!("===== agent log, node-{k} =====\n{}", strip_ansi(&a.log())))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until node `k`'s datapath has every (frontend, protocol, kind, backends).
    fn wait_programmed(&self, k: usize, want: &[(SocketAddr, L4, &str, &[SocketAddr])]) {
        let r = wait_for(SETTLE, || {
            let rows = try_services(&self.agents[k])?;
            for &(fe, l4, kind, backends) in want {
                let Some(r) = row(&rows, fe, proto(l4)) else {
                    bail!("node-{k}: {fe}/{} is not programmed: {rows:?}", proto(l4));
                };
                ensure!(r["kind"] == kind, "node-{k}: {fe} is not a {kind}: {r}");
                let want: BTreeSet<String> = backends.iter().map(|b| b.to_string()).collect();
                ensure!(
                    row_backends(&r) == want,
                    "node-{k}: {fe}/{} backends {:?}, want {want:?}",
                    proto(l4),
                    row_backends(&r)
                );
            }
            Ok(())
        });
        r.unwrap_or_else(|e| panic!("{e:#}\n{}", self.logs()));
    }

    fn wait_reply(&self, client: &Netns, dst: SocketAddr, l4: L4, seen: SeenIp) -> Reply {
        wait_for(SETTLE, || {
            let r = l4.request_to(client, dst, SHORT)?;
            check_reply_ip(&r, dst, seen)?;
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

    fn collect(
        &self,
        client: &Netns,
        dst: SocketAddr,
        l4: L4,
        n: usize,
        seen: SeenIp,
    ) -> BTreeMap<String, usize> {
        collect(client, dst, l4, n, seen, || self.logs())
    }

    fn assert_unreachable(&self, client: &Netns, dst: SocketAddr, l4: L4, n: usize, why: &str) {
        let before = self.total_hits();
        for i in 0..n {
            if let Ok(r) = l4.request_to(client, dst, SHORT) {
                panic!(
                    "{why}: {l4:?} request {i} to {dst} was answered: {r:?}\n{}",
                    self.logs()
                );
            }
        }
        assert_eq!(
            self.total_hits(),
            before,
            "{why}: a request to {dst} reached a backend"
        );
    }

    fn assert_snat_address6(&self, k: usize) {
        let st = try_status(&self.agents[k]).unwrap_or_else(|e| panic!("status: {e:#}"));
        assert_eq!(
            st["snat_address6"],
            cluster_node_ip6(k).to_string().as_str(),
            "node-{k} masquerades IPv6 with the wrong address: {st}"
        );
    }
}

/// IPv6 single-stack Service YAML with endpoints `(address, node index)` (with `nodeName`).
fn multi_docs(
    name: &str,
    type_: &str,
    vip: Ipv6Addr,
    etp: Option<&str>,
    node_ports: Option<(u16, u16)>,
    eps: &[(Ipv6Addr, usize)],
) -> Vec<String> {
    let mut svc = Service::new(name, type_).cluster_ip(vip);
    svc = match node_ports {
        Some((t, u)) => svc
            .node_port("http", 80, "TCP", TCP_BACKEND_PORT, t)
            .node_port("dns", 53, "UDP", UDP_BACKEND_PORT, u),
        None => {
            svc.port("http", 80, "TCP", TCP_BACKEND_PORT)
                .port("dns", 53, "UDP", UDP_BACKEND_PORT)
        }
    };
    if let Some(p) = etp {
        svc = svc.external_traffic_policy(p);
    }
    let mut slice = Slice::new(name, &format!("{name}-ipv6"), IpFamily::V6)
        .port("http", TCP_BACKEND_PORT, "TCP")
        .port("dns", UDP_BACKEND_PORT, "UDP");
    for &(ip, k) in eps {
        slice = slice.endpoint_on(ip, &format!("node-{k}"));
    }
    vec![nodes_yaml(), svc.yaml(), slice.yaml()]
}

// IPv6 NodePort on node A (node-0) whose only endpoint is on node B (node-1): the external
// client reaches [A]:nodePort, the reply comes from there, the backend sees A's IPv6 address
// (masqueraded so that the reply returns through A). TCP and UDP. B's NodePort (local endpoint)
// works too, masqueraded to B. A persistent connection keeps its backend and SNAT.
fn ipv6_nodeport_on_node_a_endpoint_on_node_b(network: PodNetwork) {
    let mut f = Multi::new(network, 1);
    f.serve(1, 0);
    let backend = f.pod(1, 0).ip6();
    f.apply(
        "web",
        &multi_docs(
            "web",
            "NodePort",
            vip6(10),
            None,
            Some((30080, 30053)),
            &[(backend, 1)],
        ),
    );
    let (tbe, ube) = (sa(backend, TCP_BACKEND_PORT), sa(backend, UDP_BACKEND_PORT));
    for k in 0..NODES {
        let ip = cluster_node_ip6(k);
        f.wait_programmed(
            k,
            &[
                (sa(ip, 30080), L4::Tcp, "NodePort", &[tbe]),
                (sa(ip, 30053), L4::Udp, "NodePort", &[ube]),
                (sa(vip6(10), 80), L4::Tcp, "ClusterIP", &[tbe]),
            ],
        );
        f.assert_snat_address6(k);
    }
    let (a, b) = (v6(cluster_node_ip6(0)), v6(cluster_node_ip6(1)));
    let client = f.client(0);
    let want = set(&[Multi::ident(1, 0)]);
    for l4 in [L4::Tcp, L4::Udp] {
        let np = if l4 == L4::Tcp { 30080 } else { 30053 };
        for (node, k) in [(a, 0), (b, 1)] {
            let dst = sa(node, np);
            f.wait_reply(client, dst, l4, SeenIp::Snat(node));
            let counts = f.collect(client, dst, l4, 10, SeenIp::Snat(node));
            assert_eq!(idents(&counts), want, "{l4:?} via node-{k}: {counts:?}");
        }
    }
    let dst = sa(a, 30080);
    let mut s =
        TcpSession::connect(client, dst, T).unwrap_or_else(|e| panic!("{e:#}\n{}", f.logs()));
    let first = s.request().unwrap();
    check_reply_ip(&first, dst, SeenIp::Snat(a)).unwrap();
    for i in 0..5 {
        let r = s
            .request()
            .unwrap_or_else(|e| panic!("session request {i}: {e:#}\n{}", f.logs()));
        assert_eq!(
            (&r.ident, r.seen_client, r.peer),
            (&first.ident, first.seen_client, first.peer)
        );
    }
}

#[test]
fn ipv6_nodeport_on_node_a_endpoint_on_node_b_routed() {
    ipv6_nodeport_on_node_a_endpoint_on_node_b(PodNetwork::Routed);
}

#[test]
fn ipv6_nodeport_on_node_a_endpoint_on_node_b_bridge() {
    ipv6_nodeport_on_node_a_endpoint_on_node_b(PodNetwork::Bridge);
}

// A pod on node A to an IPv6 ClusterIP whose only endpoint is on node B: no SNAT, replies from
// [VIP]:port. Then with endpoints on both nodes: both answer.
fn ipv6_clusterip_pod_on_a_to_endpoint_on_b(network: PodNetwork) {
    let mut f = Multi::new(network, 1);
    f.serve(1, 0);
    f.serve(0, 1);
    let (remote, local) = (f.pod(1, 0).ip6(), f.pod(0, 1).ip6());
    f.apply(
        "web",
        &multi_docs("web", "ClusterIP", vip6(20), None, None, &[(remote, 1)]),
    );
    let (tdst, udst) = (sa(vip6(20), 80), sa(vip6(20), 53));
    for k in 0..NODES {
        f.wait_programmed(
            k,
            &[
                (tdst, L4::Tcp, "ClusterIP", &[sa(remote, TCP_BACKEND_PORT)]),
                (udst, L4::Udp, "ClusterIP", &[sa(remote, UDP_BACKEND_PORT)]),
            ],
        );
    }
    let (client, seen) = (f.pod(0, 0).ns(), SeenIp::Client(v6(f.pod(0, 0).ip6())));
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        f.wait_reply(client, dst, l4, seen);
        let counts = f.collect(client, dst, l4, 10, seen);
        assert_eq!(
            idents(&counts),
            set(&[Multi::ident(1, 0)]),
            "{l4:?}: {counts:?}"
        );
    }
    f.apply(
        "web",
        &multi_docs(
            "web",
            "ClusterIP",
            vip6(20),
            None,
            None,
            &[(remote, 1), (local, 0)],
        ),
    );
    for k in 0..NODES {
        f.wait_programmed(
            k,
            &[(
                tdst,
                L4::Tcp,
                "ClusterIP",
                &[sa(remote, TCP_BACKEND_PORT), sa(local, TCP_BACKEND_PORT)],
            )],
        );
    }
    let both = set(&[Multi::ident(1, 0), Multi::ident(0, 1)]);
    for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
        let counts = f.collect(client, dst, l4, 30, seen);
        assert_eq!(idents(&counts), both, "{l4:?}: {counts:?}");
    }
    // From a pod on node B.
    let (client, seen) = (f.pod(1, 1).ns(), SeenIp::Client(v6(f.pod(1, 1).ip6())));
    f.wait_reply(client, tdst, L4::Tcp, seen);
    let counts = f.collect(client, tdst, L4::Tcp, 30, seen);
    assert_eq!(idents(&counts), both, "from node-1: {counts:?}");
}

#[test]
fn ipv6_clusterip_pod_on_a_to_endpoint_on_b_routed() {
    ipv6_clusterip_pod_on_a_to_endpoint_on_b(PodNetwork::Routed);
}

#[test]
fn ipv6_clusterip_pod_on_a_to_endpoint_on_b_bridge() {
    ipv6_clusterip_pod_on_a_to_endpoint_on_b(PodNetwork::Bridge);
}

// externalTrafficPolicy Local over IPv6, endpoint on node B only: B's NodePort keeps the
// client's IPv6 address; A's drops (times out, reaches no backend); the ClusterIP still works
// from a pod on A.
fn ipv6_external_traffic_policy_local(network: PodNetwork) {
    let mut f = Multi::new(network, 1);
    f.serve(1, 0);
    let backend = f.pod(1, 0).ip6();
    f.apply(
        "web",
        &multi_docs(
            "web",
            "NodePort",
            vip6(40),
            Some("Local"),
            Some((30090, 30091)),
            &[(backend, 1)],
        ),
    );
    let (a, b) = (v6(cluster_node_ip6(0)), v6(cluster_node_ip6(1)));
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
            (sa(vip6(40), 80), L4::Tcp, "ClusterIP", &[tbe]),
        ],
    );
    let client = f.client(0);
    let seen = SeenIp::Client(v6(cluster_client_ip6(0)));
    let want = set(&[Multi::ident(1, 0)]);
    for (np, l4) in [(30090, L4::Tcp), (30091, L4::Udp)] {
        let dst = sa(b, np);
        f.wait_reply(client, dst, l4, seen);
        let counts = f.collect(client, dst, l4, 10, seen);
        assert_eq!(idents(&counts), want, "{l4:?} via node-1: {counts:?}");
    }
    for (np, l4) in [(30090, L4::Tcp), (30091, L4::Udp)] {
        f.assert_unreachable(
            client,
            sa(a, np),
            l4,
            3,
            "eTP=Local IPv6 NodePort on a node without a local endpoint",
        );
    }
    let (pod, pseen) = (f.pod(0, 0).ns(), SeenIp::Client(v6(f.pod(0, 0).ip6())));
    let dst = sa(vip6(40), 80);
    f.wait_reply(pod, dst, L4::Tcp, pseen);
    let counts = f.collect(pod, dst, L4::Tcp, 5, pseen);
    assert_eq!(idents(&counts), want, "ClusterIP from node-0: {counts:?}");
}

#[test]
fn ipv6_external_traffic_policy_local_routed() {
    ipv6_external_traffic_policy_local(PodNetwork::Routed);
}

#[test]
fn ipv6_external_traffic_policy_local_bridge() {
    ipv6_external_traffic_policy_local(PodNetwork::Bridge);
}

// Two external clients, both from source port 40000, to node A's IPv6 NodePort at the same
// time, with the backend on node B and on node A itself.
fn ipv6_nodeport_two_clients_same_source_port(network: PodNetwork) {
    let mut f = Multi::new(network, 2);
    f.serve(1, 0);
    f.serve(0, 1);
    let (remote, local) = (f.pod(1, 0).ip6(), f.pod(0, 1).ip6());
    f.apply(
        "remote",
        &multi_docs(
            "remote",
            "NodePort",
            vip6(30),
            None,
            Some((30080, 30053)),
            &[(remote, 1)],
        ),
    );
    f.apply(
        "local",
        &multi_docs(
            "local",
            "NodePort",
            vip6(31),
            None,
            Some((30081, 30054)),
            &[(local, 0)],
        ),
    );
    let a = v6(cluster_node_ip6(0));
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
    f.assert_snat_address6(0);
    for (t, u, backend) in [
        (30080, 30053, Multi::ident(1, 0)),
        (30081, 30054, Multi::ident(0, 1)),
    ] {
        let (tdst, udst) = (sa(a, t), sa(a, u));
        for c in [f.client(0), f.client(1)] {
            f.wait_reply(c, tdst, L4::Tcp, SeenIp::Snat(a));
            f.wait_reply(c, udst, L4::Udp, SeenIp::Snat(a));
        }
        two_clients_same_port(
            &|| f.logs(),
            (f.client(0), f.client(1)),
            tdst,
            udst,
            &backend,
            a,
        );
    }
}

#[test]
fn ipv6_nodeport_two_clients_same_source_port_routed() {
    ipv6_nodeport_two_clients_same_source_port(PodNetwork::Routed);
}

#[test]
fn ipv6_nodeport_two_clients_same_source_port_bridge() {
    ipv6_nodeport_two_clients_same_source_port(PodNetwork::Bridge);
}
