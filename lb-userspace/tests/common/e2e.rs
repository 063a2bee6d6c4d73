//! Shared by the end-to-end tests with real traffic (`service_e2e.rs`, `service_types_e2e.rs`,
//! `multinode_e2e.rs`, `icmp_e2e.rs`, `ipv6_e2e.rs`), all for either address family: timeouts,
//! addresses, the L4 protocol of a request, reply checks, agent start-up and the agent's JSON
//! output, REJECT checks, the single-node [`Fixture`] and the two-node [`Multi`] fixture, and
//! (in [`scenario`]) the bodies of the tests that run once per family: the IPv4 test files and
//! `ipv6_e2e.rs` each keep a thin `#[test]` that calls them with their family.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use podlb::types::Family;
use serde_json::Value;
use testkit::testbed::manifest::{self, Service, Slice};
use testkit::testbed::{
    cluster_node_ip, cluster_node_ip6, require_root, wait_for, wait_until, Agent, Cluster,
    ClusterOptions, FamilyExt, Netns, Node, NodeOptions, Pod, PodNetwork, Reply, TcpServer,
    TcpSession, UdpServer,
};

/// Timeout of one request that must succeed.
pub const T: Duration = Duration::from_secs(3);
/// Timeout of one request that must fail (reach no backend).
pub const SHORT: Duration = Duration::from_secs(1);
/// How long a change (manifest write, agent start) may take to show up in the datapath.
pub const SETTLE: Duration = Duration::from_secs(20);
pub const TCP_BACKEND_PORT: u16 = 8080;
pub const UDP_BACKEND_PORT: u16 = 5353;
/// Timeout of a connection that must be refused: a REJECT must come far sooner.
pub const REJECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How fast a REJECT (TCP RST / ICMP(v6) port unreachable) must arrive.
pub const REJECT_FAST: Duration = Duration::from_secs(1);
/// The source port both clients of the SNAT collision tests use.
pub const SRC_PORT: u16 = 40000;

// ---------------------------------------------------------------------------------------------
// Addresses

/// ClusterIP 10.96.0.`last`.
pub fn vip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, last)
}

/// IPv6 ClusterIP fd00:96::`last` (the digits read like 10.96.0.`last`; they are hex).
pub fn vip6(last: u16) -> Ipv6Addr {
    format!("fd00:96::{last}").parse().unwrap()
}

/// `prefix4.last` or `prefix6::last` (the digits of `last` read as hex).
fn addr_of(family: Family, prefix4: [u8; 3], prefix6: &str, last: u8) -> IpAddr {
    match family {
        Family::V4 => Ipv4Addr::new(prefix4[0], prefix4[1], prefix4[2], last).into(),
        Family::V6 => format!("{prefix6}::{last}").parse().unwrap(),
    }
}

/// ClusterIP 10.96.0.`last` or fd00:96::`last`.
pub fn vip_of(family: Family, last: u8) -> IpAddr {
    addr_of(family, [10, 96, 0], "fd00:96", last)
}

/// externalIP 192.168.78.`last` or fd00:78::`last` (never assigned to an interface).
pub fn eip_of(family: Family, last: u8) -> IpAddr {
    addr_of(family, [192, 168, 78], "fd00:78", last)
}

/// LoadBalancer ingress IP 192.168.79.`last` or fd00:79::`last` (never assigned).
pub fn lb_ip_of(family: Family, last: u8) -> IpAddr {
    addr_of(family, [192, 168, 79], "fd00:79", last)
}

/// The other address family.
pub fn other_family(family: Family) -> Family {
    match family {
        Family::V4 => Family::V6,
        Family::V6 => Family::V4,
    }
}

/// The `podlb status` field with the masquerade address of `family`.
pub fn snat_key(family: Family) -> &'static str {
    match family {
        Family::V4 => "snat_address",
        Family::V6 => "snat_address6",
    }
}

pub fn v4(ip: Ipv4Addr) -> IpAddr {
    IpAddr::V4(ip)
}

pub fn v6(ip: Ipv6Addr) -> IpAddr {
    IpAddr::V6(ip)
}

pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// `"{ip}:{port}"` as `SocketAddr` prints it (brackets for IPv6), the CLI's address format.
pub fn be(ip: impl Into<IpAddr>, port: u16) -> String {
    sa(ip, port).to_string()
}

// ---------------------------------------------------------------------------------------------
// Requests and replies

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    pub fn proto(self) -> &'static str {
        match self {
            L4::Tcp => "TCP",
            L4::Udp => "UDP",
        }
    }
    /// (port name, Service port, backend port)
    pub fn ports(self) -> (&'static str, u16, u16) {
        match self {
            L4::Tcp => ("http", 80, TCP_BACKEND_PORT),
            L4::Udp => ("dns", 53, UDP_BACKEND_PORT),
        }
    }
    /// One request from `ns` to `dst` (either family).
    pub fn request(self, ns: &Netns, dst: SocketAddr, timeout: Duration) -> Result<Reply> {
        match self {
            L4::Tcp => testkit::testbed::tcp_request(ns, dst, timeout),
            L4::Udp => testkit::testbed::udp_request(ns, dst, timeout),
        }
    }
}

/// Which client address the backend must see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The client's own address and port (no SNAT).
    Client(IpAddr),
    /// Masqueraded to this node address.
    Snat(IpAddr),
}

impl Seen {
    pub fn client(ip: impl Into<IpAddr>) -> Seen {
        Seen::Client(ip.into())
    }
    pub fn snat(ip: impl Into<IpAddr>) -> Seen {
        Seen::Snat(ip.into())
    }
}

/// Checks that `r` came from `dst` (address and port) and that the backend saw the client as
/// `seen`.
pub fn check_reply(r: &Reply, dst: SocketAddr, seen: Seen) -> Result<()> {
    ensure!(r.from_addr(dst), "reply not from {dst}: {r:?}");
    match seen {
        Seen::Client(ip) => {
            ensure!(
                r.seen_client.ip() == ip,
                "the backend saw {} instead of the client {ip} (SNATed): {r:?}",
                r.seen_client
            );
            // (An unconnected UDP socket's local address is 0.0.0.0:port or [::]:port.)
            ensure!(
                r.seen_client.port() == r.local.port(),
                "the client's port was rewritten: {r:?}"
            );
        }
        Seen::Snat(ip) => ensure!(
            r.seen_client.ip() == ip,
            "the backend saw {} instead of the masquerade address {ip}: {r:?}",
            r.seen_client
        ),
    }
    Ok(())
}

/// [`check_reply`], panicking on a mismatch.
#[track_caller]
pub fn assert_reply(r: &Reply, dst: SocketAddr, seen: Seen) {
    check_reply(r, dst, seen).unwrap_or_else(|e| panic!("{e:#}"));
}

/// Waits until a request from `client` to `dst` is answered from `dst` (the Service is
/// programmed and the client's interface hooked); on failure panics with `log()`.
pub fn wait_answered(client: &Netns, dst: SocketAddr, l4: L4, log: impl Fn() -> String) -> Reply {
    wait_for(SETTLE, || {
        let r = l4.request(client, dst, SHORT)?;
        ensure!(r.from_addr(dst), "reply from {} not {dst}", r.peer);
        Ok(r)
    })
    .unwrap_or_else(|e| panic!("{dst} never became reachable: {e:#}\n{}", log()))
}

/// `n` requests from `client` to `dst`, each checked with [`check_reply`] (from `dst`, the
/// backend saw `seen`); on failure panics with `log()`. Returns how often each ident answered.
pub fn collect(
    client: &Netns,
    dst: SocketAddr,
    l4: L4,
    n: usize,
    seen: Seen,
    log: impl Fn() -> String,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for k in 0..n {
        let r = l4
            .request(client, dst, T)
            .and_then(|r| check_reply(&r, dst, seen).map(|()| r))
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

/// Two open connections from `a` and `b`, both from source port [`SRC_PORT`], to `tdst` (whose
/// only backend answers `backend`), then UDP from the same port to `udst`: both flows of each
/// protocol work side by side, and the backend sees `snat` with two different ports.
pub fn two_clients_same_port(
    log: &dyn Fn() -> String,
    (a, b): (&Netns, &Netns),
    tdst: SocketAddr,
    udst: SocketAddr,
    backend: &str,
    snat: IpAddr,
) {
    let seen_as = Seen::Snat(snat);
    let mut first = TcpSession::connect_from(a, SRC_PORT, tdst, T)
        .unwrap_or_else(|e| panic!("first client: {e:#}\n{}", log()));
    let mut second = TcpSession::connect_from(b, SRC_PORT, tdst, T).unwrap_or_else(|e| {
        panic!(
            "second client (same source port, first still open): {e:#}\n{}",
            log()
        )
    });
    let mut seen: BTreeMap<&str, BTreeSet<SocketAddr>> = BTreeMap::new();
    for round in 0..4 {
        for (who, s) in [("first", &mut first), ("second", &mut second)] {
            let r = s
                .request()
                .and_then(|r| check_reply(&r, tdst, seen_as).map(|()| r))
                .unwrap_or_else(|e| {
                    panic!("{tdst}: {who} client, round {round}: {e:#}\n{}", log())
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
    drop((first, second));

    let mut useen: BTreeMap<&str, SocketAddr> = BTreeMap::new();
    for round in 0..3 {
        for (who, ns) in [("first", a), ("second", b)] {
            let r = testkit::testbed::udp_request_from(ns, SRC_PORT, udst, T)
                .and_then(|r| check_reply(&r, udst, seen_as).map(|()| r))
                .unwrap_or_else(|e| {
                    panic!("{udst}: UDP {who} client, round {round}: {e:#}\n{}", log())
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

// ---------------------------------------------------------------------------------------------
// Rejects

/// A TCP connect from `ns` to `dst`; returns the outcome and how long it took.
pub fn tcp_connect_timed(
    ns: &Netns,
    dst: SocketAddr,
    timeout: Duration,
) -> (io::Result<TcpStream>, Duration) {
    let start = Instant::now();
    let r = ns.run_in(|| TcpStream::connect_timeout(&dst, timeout));
    (r, start.elapsed())
}

/// A CONNECTED UDP socket in `ns` sends one datagram to `dst` and waits for the answer; an
/// ICMP(v6) port unreachable shows up as ConnectionRefused. Returns the outcome and how long it
/// took.
pub fn udp_connected_timed(
    ns: &Netns,
    dst: SocketAddr,
    timeout: Duration,
) -> (io::Result<String>, Duration) {
    let start = Instant::now();
    let bind = sa(Family::of(dst.ip()).unspecified(), 0);
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
pub fn check_tcp_refused(ns: &Netns, dst: SocketAddr, what: &str) -> Result<(), String> {
    let (r, took) = tcp_connect_timed(ns, dst, REJECT_TIMEOUT);
    let r = r.map(|s| format!("connected ({:?} -> {:?})", s.local_addr(), s.peer_addr()));
    check_refused(what, L4::Tcp, dst, r, took)
}

/// Checks that a connected UDP socket in `ns` gets ConnectionRefused (ICMP(v6) port
/// unreachable) from `dst` within [`REJECT_FAST`].
pub fn check_udp_refused(ns: &Netns, dst: SocketAddr, what: &str) -> Result<(), String> {
    let (r, took) = udp_connected_timed(ns, dst, REJECT_TIMEOUT);
    let r = r.map(|reply| format!("answered {reply:?}"));
    check_refused(what, L4::Udp, dst, r, took)
}

/// Ok if `r` (the outcome of an `l4` attempt to `dst`, which took `took`; Ok: what happened
/// instead of a refusal) is ConnectionRefused within [`REJECT_FAST`].
fn check_refused(
    what: &str,
    l4: L4,
    dst: SocketAddr,
    r: io::Result<String>,
    took: Duration,
) -> Result<(), String> {
    let proto = l4.proto();
    match r {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && took < REJECT_FAST => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(format!(
            "{what}: {proto} {dst} refused, but only after {took:?}"
        )),
        Err(e)
            if l4 == L4::Udp
                && matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
        {
            Err(format!(
                "{what}: UDP {dst}: want ConnectionRefused (ICMP port unreachable), got no \
                 answer at all within {took:?}"
            ))
        }
        Err(e) => Err(format!(
            "{what}: {proto} {dst}: want ConnectionRefused, got {:?} ({e}) after {took:?}",
            e.kind()
        )),
        Ok(instead) => Err(format!(
            "{what}: {proto} {dst} {instead} instead of being refused"
        )),
    }
}

#[track_caller]
pub fn assert_tcp_refused(ns: &Netns, dst: SocketAddr, what: &str) {
    check_tcp_refused(ns, dst, what).unwrap_or_else(|e| panic!("{e}"));
}

/// Panics listing every failed check, if any.
pub fn assert_no_failures(what: &str, failures: &[String], agent: &Agent) {
    assert!(
        failures.is_empty(),
        "{what}: {} check(s) failed:\n  {}\n{}",
        failures.len(),
        failures.join("\n  "),
        agent.log()
    );
}

/// Waits until a TCP connect from `ns` to `dst` is refused (the first refusal on a pod
/// interface may wait for the hook).
pub fn wait_refused(ns: &Netns, dst: SocketAddr, agent: &Agent) {
    wait_for(SETTLE, || match tcp_connect_timed(ns, dst, SHORT).0 {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
        other => bail!("{other:?}"),
    })
    .unwrap_or_else(|e| panic!("{dst} never refused: {e:#}\n{}", agent.log()));
}

// ---------------------------------------------------------------------------------------------
// Agent output

/// Removes ANSI escape sequences (the agent's tracing output may be coloured).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
        } else if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// The server idents that answered.
pub fn idents(counts: &BTreeMap<String, usize>) -> BTreeSet<String> {
    counts.keys().cloned().collect()
}

pub fn set<S: AsRef<str>>(items: &[S]) -> BTreeSet<String> {
    items.iter().map(|s| s.as_ref().to_string()).collect()
}

/// `pod{i}` for each of `pods`: what their servers answer.
pub fn names(pods: &[usize]) -> BTreeSet<String> {
    pods.iter().map(|i| format!("pod{i}")).collect()
}

/// Starts a `podlb agent` on `node`.
pub fn start_agent(node: &Node) -> Agent {
    Agent::start(Path::new(env!("CARGO_BIN_EXE_podlb")), node).expect("starting the agent")
}

/// A namespace node (as root; `who` names the tests in the failure) and an agent on it.
pub fn node_with_agent(
    who: &str,
    network: PodNetwork,
    pods: usize,
    external_client: bool,
) -> (Node, Agent) {
    require_root().unwrap_or_else(|e| panic!("{who} tests must run as root: {e:#}"));
    let node = Node::new(NodeOptions {
        pods,
        network,
        external_client,
    })
    .expect("building the node");
    let agent = start_agent(&node);
    (node, agent)
}

/// `podlb service list -o json` of `agent`, parsed.
pub fn try_services(agent: &Agent) -> Result<Vec<Value>> {
    let out = agent.cli(&["service", "list", "-o", "json"])?;
    let v: Value = serde_json::from_str(&out)
        .map_err(|e| anyhow::anyhow!("service list output is not JSON ({e}): {out}"))?;
    match v {
        Value::Array(rows) => Ok(rows),
        _ => bail!("service list JSON is not an array: {out}"),
    }
}

/// `podlb status -o json` of `agent`, parsed.
pub fn try_status(agent: &Agent) -> Result<Value> {
    let out = agent.cli(&["status", "-o", "json"])?;
    serde_json::from_str(&out)
        .map_err(|e| anyhow::anyhow!("status output is not JSON ({e}): {out}"))
}

/// The backends ("ip:port") of a `service list` row.
pub fn row_backends(row: &Value) -> BTreeSet<String> {
    row["backends"]
        .as_array()
        .expect("backends is an array")
        .iter()
        .map(|b| b.as_str().expect("backend is a string").to_string())
        .collect()
}

/// The `service list` row of `frontend` (printed as `SocketAddr` does: `[fd00::1]:80`) and
/// `proto`.
pub fn row(rows: &[Value], frontend: SocketAddr, proto: &str) -> Option<Value> {
    let fe = frontend.to_string();
    rows.iter()
        .find(|r| r["frontend"] == fe.as_str() && r["protocol"] == proto)
        .cloned()
}

pub fn has_flag(row: &Value, flag: &str) -> bool {
    row["flags"]
        .as_array()
        .is_some_and(|a| a.iter().any(|f| f == flag))
}

/// Waits until `agent`'s datapath has every `(frontend, protocol, kind)`; returns the rows.
pub fn wait_programmed(agent: &Agent, want: &[(SocketAddr, &str, &str)]) -> Vec<Value> {
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

/// Waits until `agent`'s datapath has none of `gone` (frontend, protocol).
pub fn wait_unprogrammed(agent: &Agent, gone: &[(SocketAddr, &str)]) {
    let r = wait_for(SETTLE, || {
        let rows = try_services(agent)?;
        for &(fe, proto) in gone {
            if let Some(r) = row(&rows, fe, proto) {
                bail!("{fe}/{proto} is still programmed: {r}");
            }
        }
        Ok(())
    });
    r.unwrap_or_else(|e| panic!("{e:#}\n{}", agent.log()))
}

// ---------------------------------------------------------------------------------------------
// Manifests

/// Service `name` of `type_` on `cluster_ip` (its family's single stack) with the ports http
/// (TCP 80 -> 8080) and dns (UDP 53 -> 5353), with the NodePorts `(tcp, udp)` when given.
pub fn web_service(
    name: &str,
    type_: &str,
    cluster_ip: IpAddr,
    node_ports: Option<(u16, u16)>,
) -> Service {
    let svc = Service::new(name, type_).cluster_ip(cluster_ip);
    match node_ports {
        Some((t, u)) => svc
            .node_port("http", 80, "TCP", TCP_BACKEND_PORT, t)
            .node_port("dns", 53, "UDP", UDP_BACKEND_PORT, u),
        None => {
            svc.port("http", 80, "TCP", TCP_BACKEND_PORT)
                .port("dns", 53, "UDP", UDP_BACKEND_PORT)
        }
    }
}

/// The EndpointSlice `{service}-ipv4` or `{service}-ipv6` of the [`web_service`] ports, without
/// endpoints yet.
pub fn web_slice(service: &str, family: Family) -> Slice {
    let name = format!("{service}-{}", family.name().to_lowercase());
    Slice::new(service, &name, family)
        .port("http", TCP_BACKEND_PORT, "TCP")
        .port("dns", UDP_BACKEND_PORT, "UDP")
}

/// A ClusterIP Service `name` on `vip` with the one port of `l4`, and its slice (of `vip`'s
/// family) with `(address, ready)` endpoints.
pub fn clusterip_docs(name: &str, vip: IpAddr, l4: L4, eps: &[(IpAddr, bool)]) -> Vec<String> {
    let (pname, port, target) = l4.ports();
    let svc = Service::new(name, "ClusterIP")
        .cluster_ip(vip)
        .port(pname, port, l4.proto(), target);
    let family = Family::of(vip);
    let slice_name = format!("{name}-{}", family.name().to_lowercase());
    let mut slice = Slice::new(name, &slice_name, family).port(pname, target, l4.proto());
    for &(ip, ready) in eps {
        slice = slice.endpoint(ip, ready);
    }
    vec![svc.yaml(), slice.yaml()]
}

// ---------------------------------------------------------------------------------------------
// Single-node fixture

/// Node + agent + servers. Field order is drop order: servers, then the agent, then the node.
pub struct Fixture {
    /// TCP servers by ident.
    pub tcp: BTreeMap<String, TcpServer>,
    /// UDP servers by ident.
    pub udp: BTreeMap<String, UdpServer>,
    pub agent: Agent,
    pub node: Node,
}

impl Fixture {
    /// A node with `pods` pods (and the external client when asked), and an agent on it; `who`
    /// names the tests in a failure.
    pub fn new(who: &str, network: PodNetwork, pods: usize, external_client: bool) -> Fixture {
        let (node, agent) = node_with_agent(who, network, pods, external_client);
        Fixture {
            tcp: BTreeMap::new(),
            udp: BTreeMap::new(),
            agent,
            node,
        }
    }

    pub fn ns(&self, pod: usize) -> &Netns {
        self.node.pod(pod).ns()
    }

    pub fn ip(&self, pod: usize) -> Ipv4Addr {
        self.node.pod(pod).ip()
    }

    pub fn ip6(&self, pod: usize) -> Ipv6Addr {
        self.node.pod(pod).ip6()
    }

    pub fn ip_of(&self, pod: usize, family: Family) -> IpAddr {
        self.node.pod(pod).ip_of(family)
    }

    /// The external client.
    pub fn ext(&self) -> &Netns {
        self.node.ext().expect("external client")
    }

    /// The external client's address of `family`.
    pub fn ext_ip(&self, family: Family) -> IpAddr {
        self.node.ext_ip_of(family).expect("external client")
    }

    /// The node's address of `family` on `ext0`: NodePorts and SNAT (no Node object).
    pub fn node_ip(&self, family: Family) -> IpAddr {
        self.node.node_ip_of(family).expect("external client")
    }

    /// TCP server on `port` in `pod` (both families), answering with `ident`.
    pub fn serve_tcp(&mut self, pod: usize, port: u16, ident: &str) {
        let s = TcpServer::start(self.node.pod(pod).ns(), port, ident);
        assert!(self.tcp.insert(ident.to_string(), s).is_none(), "{ident}");
    }

    /// UDP server on `port` in `pod` (both families), answering with `ident`.
    pub fn serve_udp(&mut self, pod: usize, port: u16, ident: &str) {
        let s = UdpServer::start(self.node.pod(pod).ns(), port, ident);
        assert!(self.udp.insert(ident.to_string(), s).is_none(), "{ident}");
    }

    /// TCP 8080 and UDP 5353 servers in each of `pods`, answering `pod{i}`.
    pub fn serve(&mut self, pods: &[usize]) {
        for &i in pods {
            self.serve_tcp(i, TCP_BACKEND_PORT, &format!("pod{i}"));
            self.serve_udp(i, UDP_BACKEND_PORT, &format!("pod{i}"));
        }
    }

    /// Connections accepted plus datagrams received by every server so far.
    pub fn total_hits(&self) -> usize {
        self.tcp.values().map(TcpServer::accepted).sum::<usize>()
            + self.udp.values().map(UdpServer::received).sum::<usize>()
    }

    /// Connections (TCP) or datagrams (UDP) that the `pod{i}` servers saw.
    pub fn hits(&self, l4: L4, pod: usize) -> usize {
        let ident = format!("pod{pod}");
        match l4 {
            L4::Tcp => self.tcp.get(&ident).map_or(0, TcpServer::accepted),
            L4::Udp => self.udp.get(&ident).map_or(0, UdpServer::received),
        }
    }

    /// Writes one manifest file `{file}.yaml` with several YAML documents (atomically).
    pub fn apply(&self, file: &str, docs: &[String]) {
        self.agent
            .write_manifest(&format!("{file}.yaml"), &docs.join("---\n"))
            .unwrap();
    }

    pub fn remove(&self, file: &str) {
        self.agent.remove_manifest(&format!("{file}.yaml")).unwrap();
    }

    /// `podlb service list -o json`, parsed.
    pub fn services(&self) -> Vec<Value> {
        try_services(&self.agent).unwrap_or_else(|e| panic!("podlb service list -o json: {e:#}"))
    }

    /// Waits until the datapath has every `(frontend, protocol, kind)`; returns the rows.
    pub fn wait_programmed(&self, want: &[(SocketAddr, &str, &str)]) -> Vec<Value> {
        wait_programmed(&self.agent, want)
    }

    /// Waits until the datapath has none of `gone` (frontend, protocol).
    pub fn wait_unprogrammed(&self, gone: &[(SocketAddr, &str)]) {
        wait_unprogrammed(&self.agent, gone)
    }

    /// Backends (as "ip:port") the datapath holds for `frontend`/`proto`.
    pub fn backends(&self, frontend: SocketAddr, proto: &str) -> Option<BTreeSet<String>> {
        row(&self.services(), frontend, proto).map(|r| row_backends(&r))
    }

    /// Waits until the datapath holds exactly the backends of `pods` (their address of
    /// `frontend`'s family) for `frontend`/`l4`.
    pub fn wait_backends(&self, frontend: SocketAddr, l4: L4, pods: &[usize]) {
        let family = Family::of(frontend.ip());
        let want: BTreeSet<String> = pods
            .iter()
            .map(|&i| be(self.ip_of(i, family), l4.ports().2))
            .collect();
        let ok = wait_until(SETTLE, Duration::from_millis(50), || {
            self.backends(frontend, l4.proto()).as_ref() == Some(&want)
        });
        assert!(
            ok,
            "{frontend} never got backends {want:?}; have {:?}\n{}",
            self.backends(frontend, l4.proto()),
            self.agent.log()
        );
    }

    /// The packet counter of `frontend`/`proto` (0 if it is not programmed).
    pub fn packets(&self, frontend: SocketAddr, proto: &str) -> u64 {
        row(&self.services(), frontend, proto)
            .and_then(|r| r["packets"].as_u64())
            .unwrap_or(0)
    }

    /// `podlb status -o json`, parsed.
    pub fn status(&self) -> Value {
        try_status(&self.agent).unwrap_or_else(|e| panic!("podlb status -o json: {e:#}"))
    }

    /// Event counter `name` from `podlb status`.
    pub fn counter(&self, name: &str) -> u64 {
        let s = self.status();
        s["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in status: {s}"))
    }

    /// Waits until a request from `client` to `dst` is answered from `dst`.
    pub fn wait_reply(&self, client: &Netns, dst: SocketAddr, l4: L4) -> Reply {
        wait_answered(client, dst, l4, || self.agent.log())
    }

    /// `n` requests from `client` to `dst`; asserts on each reply that it came from `dst` and
    /// that the server saw `seen`. Returns how often each server ident answered.
    pub fn collect(
        &self,
        client: &Netns,
        dst: SocketAddr,
        l4: L4,
        n: usize,
        seen: Seen,
    ) -> BTreeMap<String, usize> {
        collect(client, dst, l4, n, seen, || self.agent.log())
    }

    /// Asserts that `n` requests from `client` to `dst` all fail and reach no server.
    pub fn assert_unreachable(&self, client: &Netns, dst: SocketAddr, l4: L4, n: usize, why: &str) {
        let before = self.total_hits();
        for k in 0..n {
            if let Ok(r) = l4.request(client, dst, SHORT) {
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

    /// The agent's log without colour codes.
    pub fn log(&self) -> String {
        strip_ansi(&self.agent.log())
    }
}

// ---------------------------------------------------------------------------------------------
// Two-node fixture

pub const NODES: usize = 2;
pub const PODS_PER_NODE: usize = 2;

/// The Node objects of the two-node cluster (an InternalIP of each family = the node's underlay
/// addresses), as every kube-proxy sees them.
pub fn nodes_yaml() -> String {
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

/// A [`web_service`] (with `externalTrafficPolicy` when given) and its slice of the family of
/// `cluster_ip` with ready endpoints `(address, node index)` (each with `nodeName: node-k`).
pub fn multi_docs(
    name: &str,
    type_: &str,
    cluster_ip: IpAddr,
    etp: Option<&str>,
    node_ports: Option<(u16, u16)>,
    eps: &[(IpAddr, usize)],
) -> Vec<String> {
    let mut svc = web_service(name, type_, cluster_ip, node_ports);
    if let Some(p) = etp {
        svc = svc.external_traffic_policy(p);
    }
    let mut slice = web_slice(name, Family::of(cluster_ip));
    for &(ip, k) in eps {
        slice = slice.endpoint_on(ip, &format!("node-{k}"));
    }
    vec![svc.yaml(), slice.yaml()]
}

/// Cluster + one agent per node + servers. Field order is drop order: servers, then the agents,
/// then the cluster. All agents are fed the SAME manifests, as every kube-proxy of a cluster
/// watches the same API objects.
pub struct Multi {
    pub tcp: BTreeMap<String, TcpServer>,
    pub udp: BTreeMap<String, UdpServer>,
    pub agents: Vec<Agent>,
    pub cluster: Cluster,
}

impl Multi {
    /// Two nodes with two pods each, `clients` external clients (at least 1), an agent per node.
    pub fn new(who: &str, network: PodNetwork, clients: usize) -> Multi {
        require_root().unwrap_or_else(|e| panic!("{who} tests must run as root: {e:#}"));
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
        Multi {
            tcp: BTreeMap::new(),
            udp: BTreeMap::new(),
            agents,
            cluster,
        }
    }

    pub fn pod(&self, k: usize, i: usize) -> &Pod {
        self.cluster.node(k).pod(i)
    }

    /// `node{k}-pod{i}`: what the servers of that pod answer.
    pub fn ident(k: usize, i: usize) -> String {
        format!("node{k}-pod{i}")
    }

    pub fn client(&self, n: usize) -> &Netns {
        &self.cluster.clients()[n]
    }

    /// The underlay addresses of `family` of node A (node-0) and node B (node-1).
    pub fn node_ips(&self, family: Family) -> (IpAddr, IpAddr) {
        (
            self.cluster.node_ip_of(0, family),
            self.cluster.node_ip_of(1, family),
        )
    }

    /// Starts TCP (8080) and UDP (5353) servers in pod `i` of node `k`.
    pub fn serve(&mut self, k: usize, i: usize) {
        let ident = Self::ident(k, i);
        let ns = self.cluster.node(k).pod(i).ns();
        let t = TcpServer::start(ns, TCP_BACKEND_PORT, &ident);
        let u = UdpServer::start(ns, UDP_BACKEND_PORT, &ident);
        assert!(self.tcp.insert(ident.clone(), t).is_none(), "{ident}");
        assert!(self.udp.insert(ident.clone(), u).is_none(), "{ident}");
    }

    /// Connections accepted plus datagrams received by every server so far.
    pub fn total_hits(&self) -> usize {
        self.tcp.values().map(TcpServer::accepted).sum::<usize>()
            + self.udp.values().map(UdpServer::received).sum::<usize>()
    }

    /// Writes the same manifest file (several YAML documents) to EVERY agent.
    pub fn apply(&self, file: &str, docs: &[String]) {
        let yaml = docs.join("---\n");
        for a in &self.agents {
            a.write_manifest(&format!("{file}.yaml"), &yaml).unwrap();
        }
    }

    /// The logs of all agents, labelled by node, without colour codes.
    pub fn logs(&self) -> String {
        self.agents
            .iter()
            .enumerate()
            .map(|(k, a)| format!("===== agent log, node-{k} =====\n{}", strip_ansi(&a.log())))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until node `k`'s datapath has every (frontend, protocol, kind, backends).
    pub fn wait_programmed(&self, k: usize, want: &[(SocketAddr, L4, &str, &[SocketAddr])]) {
        let r = wait_for(SETTLE, || {
            let rows = try_services(&self.agents[k])?;
            for &(fe, l4, kind, backends) in want {
                let proto = l4.proto();
                let Some(row) = row(&rows, fe, proto) else {
                    bail!("node-{k}: {fe}/{proto} is not programmed: {rows:?}");
                };
                ensure!(
                    row["kind"] == kind,
                    "node-{k}: {fe}/{proto} is not a {kind} frontend: {row}"
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
                    "node-{k}: {fe}/{proto} has backends {have:?}, want {want:?}: {row}"
                );
            }
            Ok(())
        });
        r.unwrap_or_else(|e| panic!("{e:#}\n{}", self.logs()));
    }

    /// Waits until a request from `client` to `dst` is answered from `dst` as `seen`.
    pub fn wait_reply(&self, client: &Netns, dst: SocketAddr, l4: L4, seen: Seen) -> Reply {
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
    pub fn collect(
        &self,
        client: &Netns,
        dst: SocketAddr,
        l4: L4,
        n: usize,
        seen: Seen,
    ) -> BTreeMap<String, usize> {
        collect(client, dst, l4, n, seen, || self.logs())
    }

    /// Asserts that `n` requests from `client` to `dst` all fail within [`SHORT`] and that no
    /// server saw anything meanwhile.
    pub fn assert_unreachable(&self, client: &Netns, dst: SocketAddr, l4: L4, n: usize, why: &str) {
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
    pub fn assert_hooks(&self, k: usize) {
        let want_pods: Vec<String> = self
            .cluster
            .node(k)
            .pods()
            .iter()
            .map(|p| p.host_if().to_string())
            .collect();
        let r = wait_for(SETTLE, || {
            let status = try_status(&self.agents[k])?;
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

    /// Asserts that node `k`'s SNAT address of `family` (podlb status) is its own underlay
    /// address of that family.
    pub fn assert_snat_address(&self, k: usize, family: Family) {
        let status = try_status(&self.agents[k])
            .unwrap_or_else(|e| panic!("podlb status on node-{k}: {e:#}"));
        assert_eq!(
            status[snat_key(family)],
            self.cluster.node_ip_of(k, family).to_string().as_str(),
            "node-{k} masquerades {} with the wrong address: {status}",
            family.name()
        );
    }
}

/// A [`web_service`] on `cluster_ip` and its slice (of `cluster_ip`'s family) with the ready
/// endpoints `pods` of `f`.
pub fn web_docs(
    f: &Fixture,
    name: &str,
    type_: &str,
    cluster_ip: IpAddr,
    node_ports: Option<(u16, u16)>,
    pods: &[usize],
) -> (Service, String) {
    let family = Family::of(cluster_ip);
    let mut slice = web_slice(name, family);
    for &i in pods {
        slice = slice.endpoint(f.ip_of(i, family), true);
    }
    (
        web_service(name, type_, cluster_ip, node_ports),
        slice.yaml(),
    )
}

/// The flags of a `service list` row (panics if the row has none).
pub fn flags(row: &Value) -> Vec<String> {
    row["flags"]
        .as_array()
        .unwrap_or_else(|| panic!("no flags array: {row}"))
        .iter()
        .map(|f| f.as_str().unwrap_or_default().to_string())
        .collect()
}

/// The bodies of the tests that run once per address family (and often once per pod network):
/// `service_e2e.rs`, `service_types_e2e.rs` and `multinode_e2e.rs` call them with
/// [`Family::V4`], `ipv6_e2e.rs` with [`Family::V6`].
pub mod scenario {
    use super::*;

    const WHO: &str = "end-to-end";

    // =========================================================================================
    // ClusterIP (service_e2e.rs)

    /// ClusterIP from a pod: balanced over the ready endpoints, replies come from VIP:port, the
    /// server sees the pod's own address, a not-ready endpoint (whose server is up) never
    /// answers.
    pub fn clusterip(network: PodNetwork, l4: L4, family: Family) {
        let mut f = Fixture::new(WHO, network, 4, false);
        f.serve(&[1, 2, 3]);
        let vip = vip_of(family, 10);
        let eps = [
            (f.ip_of(1, family), true),
            (f.ip_of(2, family), true),
            (f.ip_of(3, family), false),
        ];
        f.apply("web", &clusterip_docs("web", vip, l4, &eps));
        let dst = sa(vip, l4.ports().1);
        let rows = f.wait_programmed(&[(dst, l4.proto(), "ClusterIP")]);
        let r = row(&rows, dst, l4.proto()).unwrap();
        assert_eq!(r["frontend"], dst.to_string().as_str(), "{r}");
        assert_eq!(r["family"], family.name(), "{r}");
        f.wait_reply(f.ns(0), dst, l4);
        f.wait_backends(dst, l4, &[1, 2]);
        let counts = f.collect(f.ns(0), dst, l4, 30, Seen::Client(f.ip_of(0, family)));
        assert!(counts.len() >= 2, "not balanced: {counts:?}");
        assert!(idents(&counts).is_subset(&names(&[1, 2])), "{counts:?}");
        assert_eq!(f.hits(l4, 3), 0, "the not-ready endpoint pod3 got traffic");
    }

    /// Endpoints removed from and added to the EndpointSlice are applied live.
    pub fn endpoint_changes(network: PodNetwork, family: Family) {
        let l4 = L4::Tcp;
        let mut f = Fixture::new(WHO, network, 4, false);
        f.serve(&[1, 2, 3]);
        let vip = vip_of(family, 11);
        let dst = sa(vip, 80);
        let all: Vec<(IpAddr, bool)> = (1..=3).map(|i| (f.ip_of(i, family), true)).collect();
        f.apply("web", &clusterip_docs("web", vip, l4, &all));
        f.wait_reply(f.ns(0), dst, l4);
        f.wait_backends(dst, l4, &[1, 2, 3]);
        let seen = Seen::Client(f.ip_of(0, family));
        let counts = f.collect(f.ns(0), dst, l4, 60, seen);
        assert_eq!(idents(&counts), names(&[1, 2, 3]), "{counts:?}");

        // Remove pod3.
        f.apply("web", &clusterip_docs("web", vip, l4, &all[..2]));
        f.wait_backends(dst, l4, &[1, 2]);
        let before = f.hits(l4, 3);
        let counts = f.collect(f.ns(0), dst, l4, 30, seen);
        assert!(idents(&counts).is_subset(&names(&[1, 2])), "{counts:?}");
        assert!(counts.len() >= 2, "not balanced: {counts:?}");
        assert_eq!(f.hits(l4, 3), before, "removed endpoint pod3 got traffic");

        // Add it back.
        f.apply("web", &clusterip_docs("web", vip, l4, &all));
        f.wait_backends(dst, l4, &[1, 2, 3]);
        let counts = f.collect(f.ns(0), dst, l4, 60, seen);
        assert!(
            counts.contains_key("pod3"),
            "added endpoint never answered: {counts:?}"
        );
        assert!(idents(&counts).is_subset(&names(&[1, 2, 3])), "{counts:?}");
    }

    /// Pod-to-pod traffic that is not addressed to a VIP passes untouched (with the hooks
    /// attached and a Service to the same backend in place), in both directions, and so does the
    /// external client's traffic to a pod.
    pub fn non_service_traffic(network: PodNetwork, family: Family) {
        let mut f = Fixture::new(WHO, network, 2, true);
        f.serve(&[1]);
        let ep = [(f.ip_of(1, family), true)];
        let (tvip, uvip) = (vip_of(family, 12), vip_of(family, 13));
        f.apply("web", &clusterip_docs("web", tvip, L4::Tcp, &ep));
        f.apply("dns", &clusterip_docs("dns", uvip, L4::Udp, &ep));
        f.wait_reply(f.ns(0), sa(tvip, 80), L4::Tcp);
        f.wait_reply(f.ns(0), sa(uvip, 53), L4::Udp);
        for l4 in [L4::Tcp, L4::Udp] {
            let direct = sa(f.ip_of(1, family), l4.ports().2);
            let counts = f.collect(f.ns(0), direct, l4, 5, Seen::Client(f.ip_of(0, family)));
            assert_eq!(idents(&counts), names(&[1]), "{l4:?}: {counts:?}");
        }
        // And the other direction, to a port that is no Service's backend.
        let _s0 = TcpServer::start(f.ns(0), 9000, "pod0");
        let pod0 = sa(f.ip_of(0, family), 9000);
        let r = testkit::testbed::tcp_request(f.ns(1), pod0, T).unwrap();
        assert_eq!(
            (r.ident.as_str(), r.seen_client),
            ("pod0", r.local),
            "{r:?}"
        );
        assert_eq!(r.seen_client.ip(), f.ip_of(1, family));
        // And the external client to a pod.
        let r = testkit::testbed::tcp_request(f.ext(), pod0, T).unwrap();
        assert_eq!(r.seen_client.ip(), f.ext_ip(family), "{r:?}");
    }

    /// An external client reaches the ClusterIP through ext0 (not masqueraded: ClusterIP).
    pub fn external_client(network: PodNetwork, family: Family) {
        let mut f = Fixture::new(WHO, network, 3, true);
        f.serve(&[1, 2]);
        let vip = vip_of(family, 17);
        let eps = [(f.ip_of(1, family), true), (f.ip_of(2, family), true)];
        f.apply("web", &clusterip_docs("web", vip, L4::Tcp, &eps));
        let dst = sa(vip, 80);
        f.wait_reply(f.ext(), dst, L4::Tcp);
        let counts = f.collect(f.ext(), dst, L4::Tcp, 30, Seen::Client(f.ext_ip(family)));
        assert_eq!(idents(&counts), names(&[1, 2]), "{counts:?}");
    }

    /// The operator CLI: service list (JSON and table: frontends and backends as `SocketAddr`
    /// prints them, the family, counters), status, and service list with the agent dead.
    pub fn cli(network: PodNetwork, family: Family) {
        let l4 = L4::Tcp;
        let mut f = Fixture::new(WHO, network, 3, false);
        f.serve(&[1, 2]);
        let vip = vip_of(family, 18);
        let eps = [(f.ip_of(1, family), true), (f.ip_of(2, family), true)];
        f.apply("web", &clusterip_docs("web", vip, l4, &eps));
        let dst = sa(vip, 80);
        f.wait_reply(f.ns(0), dst, l4);
        let seen = Seen::Client(f.ip_of(0, family));
        f.collect(f.ns(0), dst, l4, 10, seen);
        let (fe, backends) = match family {
            Family::V4 => ("10.96.0.18:80", ["10.244.0.11:8080", "10.244.0.12:8080"]),
            Family::V6 => (
                "[fd00:96::18]:80",
                ["[fd00:10:244::11]:8080", "[fd00:10:244::12]:8080"],
            ),
        };

        let rows = f.services();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let row = &rows[0];
        assert_eq!(row["frontend"], fe, "{row}");
        assert_eq!(row["family"], family.name(), "{row}");
        assert_eq!(row["kind"], "ClusterIP", "{row}");
        assert_eq!(row["protocol"], "TCP", "{row}");
        assert_eq!(row["service"], "default/web:http", "{row}");
        let want = set(&backends);
        assert_eq!(row_backends(row), want, "{row}");
        assert_eq!(f.backends(dst, "TCP"), Some(want.clone()), "{row}");
        let packets = row["packets"].as_u64().expect("packets is a number");
        assert!(packets > 0, "no packets counted: {row}");
        assert!(
            row["bytes"].as_u64().expect("bytes is a number") > 0,
            "{row}"
        );

        let table = f.agent.cli(&["service", "list"]).unwrap();
        assert!(table.contains("FRONTEND"), "{table}");
        let line = table.lines().find(|l| l.contains(fe)).expect(&table);
        assert!(
            line.contains("default/web:http") && line.contains("TCP"),
            "{line}"
        );

        let status = f.status();
        let ifs: BTreeSet<(&str, &str)> = status["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap(), v["hook"].as_str().unwrap()))
            .collect();
        let hooks: BTreeSet<(&str, &str)> = ["lxc0", "lxc1", "lxc2"]
            .into_iter()
            .flat_map(|n| [(n, "tc"), (n, "tc-egress")])
            .collect();
        assert_eq!(ifs, hooks, "{status}");
        assert_eq!(
            (status["frontends"].as_u64(), status["backends"].as_u64()),
            (Some(1), Some(2))
        );
        let text = f.agent.cli(&["status"]).unwrap();
        assert!(
            text.contains("lxc0") && text.contains("frontends"),
            "{text}"
        );

        f.agent.kill9();
        let rows = f.services();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["frontend"], fe);
        assert_eq!(f.backends(dst, "TCP"), Some(want), "agent down");
        assert!(rows[0]["packets"].as_u64().unwrap() >= packets);
        f.collect(f.ns(0), dst, l4, 5, seen);
        let after = f.services()[0]["packets"].as_u64().unwrap();
        assert!(
            after > packets,
            "counter did not grow with the agent down: {after} <= {packets}"
        );
    }

    // =========================================================================================
    // NodePort, externalIPs, LoadBalancer, rejects, hairpin, SNAT (service_types_e2e.rs)
    //
    // A standalone node has no Node object: NodePorts are served on, and masquerading uses, the
    // `ext0` address of the family (the fallback).

    /// "should be able to create a functioning NodePort service": the external client reaches
    /// node-ip:nodePort; the replies come from there; the endpoints are balanced; the backends
    /// see the masquerade address (eTP=Cluster, contract point 13), not the client. A
    /// single-stack Service has no NodePort on the node's address of the other family.
    pub fn nodeport_external(network: PodNetwork, family: Family) {
        let mut f = Fixture::new(WHO, network, 4, true);
        f.serve(&[1, 2, 3]);
        let (node_ip, cip) = (f.node_ip(family), vip_of(family, 10));
        let (svc, slice) = web_docs(&f, "web", "NodePort", cip, Some((30080, 30053)), &[1, 2, 3]);
        f.apply("web", &[svc.yaml(), slice]);
        let (tdst, udst) = (sa(node_ip, 30080), sa(node_ip, 30053));
        let rows = f.wait_programmed(&[
            (tdst, "TCP", "NodePort"),
            (udst, "UDP", "NodePort"),
            (sa(cip, 80), "TCP", "ClusterIP"),
            (sa(cip, 53), "UDP", "ClusterIP"),
        ]);
        let np = row(&rows, tdst, "TCP").unwrap();
        assert!(
            flags(&np).iter().any(|f| f == "snat"),
            "NodePort without the snat flag: {np}"
        );
        assert_eq!(np["service"], "default/web:http", "{np}");
        let want: BTreeSet<String> = (1..=3)
            .map(|i| be(f.ip_of(i, family), TCP_BACKEND_PORT))
            .collect();
        assert_eq!(f.backends(tdst, "TCP"), Some(want));
        let other_np = sa(f.node_ip(other_family(family)), 30080);
        assert!(
            row(&rows, other_np, "TCP").is_none(),
            "NodePort {other_np} of a single-stack {} Service: {rows:?}",
            family.name()
        );

        let snat0 = f.counter("snat");
        for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
            f.wait_reply(f.ext(), dst, l4);
            let counts = f.collect(f.ext(), dst, l4, 30, Seen::Snat(node_ip));
            assert!(counts.len() >= 2, "{l4:?} {dst} not balanced: {counts:?}");
            assert!(idents(&counts).is_subset(&names(&[1, 2, 3])), "{counts:?}");
        }
        assert!(
            f.counter("snat") > snat0,
            "snat counter did not move: {}",
            f.status()
        );
        let st = f.status();
        assert_eq!(st[snat_key(family)], node_ip.to_string().as_str(), "{st}");
    }

    /// The same NodePort from a pod (pod0, not an endpoint): works, masqueraded as well (the
    /// destination is external; kube-proxy's external chain masquerades with eTP=Cluster); the
    /// ClusterIP of the same Service from the same pod keeps the pod's source address.
    pub fn nodeport_pod(network: PodNetwork, family: Family) {
        let mut f = Fixture::new(WHO, network, 3, true);
        f.serve(&[1, 2]);
        let (node_ip, cip) = (f.node_ip(family), vip_of(family, 11));
        let (svc, slice) = web_docs(&f, "web", "NodePort", cip, Some((30080, 30053)), &[1, 2]);
        f.apply("web", &[svc.yaml(), slice]);
        let (tdst, udst) = (sa(node_ip, 30080), sa(node_ip, 30053));
        f.wait_programmed(&[(tdst, "TCP", "NodePort"), (udst, "UDP", "NodePort")]);
        for (dst, l4, n) in [(tdst, L4::Tcp, 30), (udst, L4::Udp, 20)] {
            f.wait_reply(f.ns(0), dst, l4);
            let counts = f.collect(f.ns(0), dst, l4, n, Seen::Snat(node_ip));
            assert_eq!(idents(&counts), names(&[1, 2]), "{l4:?} {dst}: {counts:?}");
        }
        let cdst = sa(cip, 80);
        let counts = f.collect(f.ns(0), cdst, L4::Tcp, 20, Seen::Client(f.ip_of(0, family)));
        assert_eq!(idents(&counts), names(&[1, 2]), "{counts:?}");
    }

    /// "should be possible to connect to a service via ExternalIP when the external IP is not
    /// assigned to a node" (contract point 19): from the external client and from a pod,
    /// masqueraded.
    pub fn externalip_not_assigned_to_node(family: Family) {
        let mut f = Fixture::new(WHO, PodNetwork::Routed, 3, true);
        f.serve(&[1, 2]);
        let (node_ip, cip, eip) = (f.node_ip(family), vip_of(family, 12), eip_of(family, 10));
        let (svc, slice) = web_docs(&f, "web", "ClusterIP", cip, None, &[1, 2]);
        f.apply("web", &[svc.external_ip(eip).yaml(), slice]);
        let (tdst, udst) = (sa(eip, 80), sa(eip, 53));
        f.wait_programmed(&[
            (tdst, "TCP", "ExternalIP"),
            (udst, "UDP", "ExternalIP"),
            (sa(cip, 80), "TCP", "ClusterIP"),
        ]);
        let (flag, prefix) = match family {
            Family::V4 => ("-4", "192.168.78."),
            Family::V6 => ("-6", "fd00:78:"),
        };
        let addrs = f.node.ns().exec(&["ip", flag, "-o", "addr"]).unwrap();
        assert!(
            !addrs.contains(prefix),
            "the externalIP is on the node:\n{addrs}"
        );
        for (client, who) in [(f.ext(), "from outside"), (f.ns(0), "from a pod")] {
            for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
                f.wait_reply(client, dst, l4);
                let counts = f.collect(client, dst, l4, 30, Seen::Snat(node_ip));
                assert_eq!(idents(&counts), names(&[1, 2]), "{who} {l4:?}: {counts:?}");
            }
        }
    }

    /// LoadBalancer ingress IPs are programmed when ipMode is unset or VIP; with ipMode Proxy
    /// (contract point 9) the ingress IP gets no rules, while the Service's ClusterIP and
    /// NodePort still work.
    pub fn loadbalancer_ingress_ip(family: Family) {
        let mut f = Fixture::new(WHO, PodNetwork::Routed, 4, true);
        f.serve(&[1, 2, 3]);
        let node_ip = f.node_ip(family);
        let (lb_ip, lb_vip_mode, lb_proxy) = (
            lb_ip_of(family, 10),
            lb_ip_of(family, 12),
            lb_ip_of(family, 11),
        );
        let (lb, lb_slice) = web_docs(
            &f,
            "lb",
            "LoadBalancer",
            vip_of(family, 13),
            Some((30080, 30053)),
            &[1, 2],
        );
        let lb = lb.ingress(lb_ip, None).ingress(lb_vip_mode, Some("VIP"));
        let proxy_vip = vip_of(family, 14);
        let (proxy, proxy_slice) = web_docs(
            &f,
            "lb-proxy",
            "LoadBalancer",
            proxy_vip,
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
            (sa(node_ip, 30080), "TCP", "NodePort"),
            (sa(proxy_vip, 80), "TCP", "ClusterIP"),
            (sa(node_ip, 30081), "TCP", "NodePort"),
        ]);
        // "192.168.79.11:" or "[fd00:79::11]:"
        let proxy_prefix = be(lb_proxy, 0).trim_end_matches('0').to_string();
        let proxied: Vec<&Value> = rows
            .iter()
            .filter(|r| {
                r["frontend"]
                    .as_str()
                    .is_some_and(|s| s.starts_with(&proxy_prefix))
            })
            .collect();
        assert!(
            proxied.is_empty(),
            "ipMode Proxy ingress IP programmed: {proxied:?}"
        );
        let lb_row = row(&rows, sa(lb_ip, 80), "TCP").unwrap();
        assert!(flags(&lb_row).iter().any(|f| f == "snat"), "{lb_row}");

        for (dst, l4, n) in [
            (sa(lb_ip, 80), L4::Tcp, 30),
            (sa(lb_vip_mode, 80), L4::Tcp, 30),
            (sa(lb_ip, 53), L4::Udp, 20),
        ] {
            f.wait_reply(f.ext(), dst, l4);
            let counts = f.collect(f.ext(), dst, l4, n, Seen::Snat(node_ip));
            assert_eq!(idents(&counts), names(&[1, 2]), "{dst}: {counts:?}");
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
        let pod_seen = Seen::Client(f.ip_of(0, family));
        let counts = f.collect(f.ns(0), sa(proxy_vip, 80), L4::Tcp, 5, pod_seen);
        assert_eq!(idents(&counts), names(&[3]), "{counts:?}");
        let np = sa(node_ip, 30081);
        let counts = f.collect(f.ext(), np, L4::Tcp, 5, Seen::Snat(node_ip));
        assert_eq!(idents(&counts), names(&[3]), "{counts:?}");
    }

    /// "should be rejected when no endpoints exist" (contract point 16): a Service with an empty
    /// EndpointSlice REJECTs on every frontend: ClusterIP (from a pod), NodePort, externalIP and
    /// LoadBalancer IP (from the external client), TCP (RST -> ConnectionRefused) and UDP
    /// (ICMP(v6) port unreachable -> ConnectionRefused on a connected socket), fast, and counted.
    pub fn rejected_when_no_endpoints(family: Family) {
        let f = Fixture::new(WHO, PodNetwork::Routed, 2, true);
        let (node_ip, cip) = (f.node_ip(family), vip_of(family, 70));
        let (eip, lb_ip) = (eip_of(family, 20), lb_ip_of(family, 20));
        let (svc, slice) = web_docs(&f, "empty", "LoadBalancer", cip, Some((30080, 30053)), &[]);
        let svc = svc.external_ip(eip).ingress(lb_ip, None);
        f.apply("empty", &[svc.yaml(), slice]);
        let cases: [(&Netns, SocketAddr, SocketAddr, &str); 4] = [
            (f.ns(0), sa(cip, 80), sa(cip, 53), "ClusterIP"),
            (f.ext(), sa(node_ip, 30080), sa(node_ip, 30053), "NodePort"),
            (f.ext(), sa(eip, 80), sa(eip, 53), "ExternalIP"),
            (f.ext(), sa(lb_ip, 80), sa(lb_ip, 53), "LoadBalancer"),
        ];
        let want: Vec<(SocketAddr, &str, &str)> = cases
            .iter()
            .flat_map(|&(_, t, u, kind)| [(t, "TCP", kind), (u, "UDP", kind)])
            .collect();
        let rows = f.wait_programmed(&want);
        for &(fe, proto, _) in &want {
            let r = row(&rows, fe, proto).unwrap();
            assert_eq!(r["backends"], Value::Array(vec![]), "{r}");
            assert!(
                !flags(&r).iter().any(|f| f == "drop-empty"),
                "eTP/iTP Cluster must reject, not drop: {r}"
            );
        }
        // The first refusal on a pod interface may wait for the hook; settle on it.
        wait_refused(f.ns(0), sa(cip, 80), &f.agent);
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

    /// A ClusterIP on a port it does not expose is rejected (contract point 24), from a pod and
    /// from outside, TCP and UDP; nothing reaches the pod's port; the exposed port works.
    pub fn clusterip_unexposed_port_rejected(family: Family) {
        let mut f = Fixture::new(WHO, PodNetwork::Routed, 2, true);
        f.serve_tcp(1, TCP_BACKEND_PORT, "pod1");
        // Servers on the pod's port 81 too: nothing may be forwarded there.
        f.serve_tcp(1, 81, "pod1-81");
        f.serve_udp(1, 81, "pod1-81");
        let vip = vip_of(family, 80);
        let ep = [(f.ip_of(1, family), true)];
        f.apply("web", &clusterip_docs("web", vip, L4::Tcp, &ep));
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
        assert_no_failures("unexposed ClusterIP port", &failures, &f.agent);
        assert_eq!(f.tcp["pod1-81"].accepted(), 0);
        assert_eq!(f.udp["pod1-81"].received(), 0);
        let counts = f.collect(f.ns(0), dst, L4::Tcp, 5, Seen::Client(f.ip_of(0, family)));
        assert_eq!(idents(&counts), names(&[1]), "{counts:?}");
    }

    /// "should allow pods to hairpin back to themselves through services" (contract point 17):
    /// the only endpoint connects to its own Service (ClusterIP TCP and UDP, NodePort) and is
    /// answered by itself, SNATed so that the reply comes back through the node.
    pub fn hairpin(network: PodNetwork, family: Family) {
        let mut f = Fixture::new(WHO, network, 2, true);
        f.serve(&[1]);
        let (node_ip, cip) = (f.node_ip(family), vip_of(family, 60));
        let (svc, slice) = web_docs(&f, "hairpin", "NodePort", cip, Some((30080, 30053)), &[1]);
        f.apply("hairpin", &[svc.yaml(), slice]);
        let (tdst, udst, ndst) = (sa(cip, 80), sa(cip, 53), sa(node_ip, 30080));
        f.wait_programmed(&[
            (tdst, "TCP", "ClusterIP"),
            (udst, "UDP", "ClusterIP"),
            (ndst, "TCP", "NodePort"),
        ]);
        // The same backend from another pod works, not SNATed (source pod IP preserved).
        f.wait_reply(f.ns(0), tdst, L4::Tcp);
        let counts = f.collect(f.ns(0), tdst, L4::Tcp, 5, Seen::Client(f.ip_of(0, family)));
        assert_eq!(idents(&counts), names(&[1]), "from pod0: {counts:?}");
        let before = f.counter("hairpin");
        let st = f.status();
        assert_eq!(st[snat_key(family)], node_ip.to_string().as_str(), "{st}");
        for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp), (ndst, L4::Tcp)] {
            let counts = f.collect(f.ns(1), dst, l4, 10, Seen::Snat(node_ip));
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
        // An open hairpin connection keeps working.
        let mut s = TcpSession::connect(f.ns(1), tdst, T).unwrap();
        let a = s.request().unwrap();
        let b = s.request().unwrap();
        assert_reply(&a, tdst, Seen::Snat(node_ip));
        assert_eq!(a, b, "hairpin connection changed between requests");
    }

    /// Two pods with the same source port to the same NodePort at the same time: SNAT maps them
    /// to the same node address, so it must give them different source ports, and both
    /// connections must work side by side (the conntrack e2e tests rely on this).
    pub fn nodeport_snat_source_port_collision(family: Family) {
        let mut f = Fixture::new(WHO, PodNetwork::Routed, 3, true);
        f.serve(&[2]);
        let node_ip = f.node_ip(family);
        let cip = vip_of(family, 90);
        let (svc, slice) = web_docs(&f, "web", "NodePort", cip, Some((30080, 30053)), &[2]);
        f.apply("web", &[svc.yaml(), slice]);
        let (tdst, udst) = (sa(node_ip, 30080), sa(node_ip, 30053));
        f.wait_programmed(&[(tdst, "TCP", "NodePort"), (udst, "UDP", "NodePort")]);
        for pod in [0, 1] {
            f.wait_reply(f.ns(pod), tdst, L4::Tcp);
            f.wait_reply(f.ns(pod), udst, L4::Udp);
        }
        two_clients_same_port(
            &|| f.agent.log(),
            (f.ns(0), f.ns(1)),
            tdst,
            udst,
            "pod2",
            node_ip,
        );
    }

    /// The same with two real external clients (192.168.50.2 and .3, fd00:50::2 and ::3) of a
    /// one-node [`Cluster`], reaching the node's NodePort on its uplink address.
    pub fn nodeport_snat_source_port_collision_external_clients(family: Family) {
        require_root().unwrap_or_else(|e| panic!("{WHO} tests must run as root: {e:#}"));
        let mut cluster = Cluster::new(ClusterOptions {
            nodes: 1,
            pods_per_node: 2,
            network: PodNetwork::Routed,
            external_client: true,
        })
        .expect("building the cluster");
        cluster.add_client().expect("second client");
        let node = cluster.node(0);
        let node_ip = cluster.node_ip_of(0, family);
        let agent = start_agent(node);
        let _t = TcpServer::start(node.pod(1).ns(), TCP_BACKEND_PORT, "pod1");
        let _u = UdpServer::start(node.pod(1).ns(), UDP_BACKEND_PORT, "pod1");
        let svc = web_service("web", "NodePort", vip_of(family, 91), Some((30080, 30053)));
        let slice = web_slice("web", family).endpoint(node.pod(1).ip_of(family), true);
        agent
            .write_manifest("web.yaml", &[svc.yaml(), slice.yaml()].join("---\n"))
            .unwrap();
        let (tdst, udst) = (sa(node_ip, 30080), sa(node_ip, 30053));
        let clients = cluster.clients();
        for c in clients {
            wait_answered(c, tdst, L4::Tcp, || {
                format!("from {}\n{}", c.name(), agent.log())
            });
            wait_answered(c, udst, L4::Udp, || {
                format!("from {}\n{}", c.name(), agent.log())
            });
        }
        two_clients_same_port(
            &|| agent.log(),
            (&clients[0], &clients[1]),
            tdst,
            udst,
            "pod1",
            node_ip,
        );
    }

    // =========================================================================================
    // Two nodes (multinode_e2e.rs): EndpointSlice endpoints carry `nodeName: node-k`, so each
    // agent knows which endpoints are its own.

    /// `docs` after the cluster's Node objects.
    fn with_nodes(docs: Vec<String>) -> Vec<String> {
        let mut all = vec![nodes_yaml()];
        all.extend(docs);
        all
    }

    /// A [`Multi`] with one client and servers in pod 0 of node B (node-1), the only endpoint
    /// of the NodePort Service `web` (ClusterIP `vip_of(family, vip_last)`, with
    /// `externalTrafficPolicy` `etp` when given, NodePorts `node_ports`), written with the Node
    /// objects. Returns the fixture, the endpoint's address and the ClusterIP.
    fn endpoint_on_node_b(
        network: PodNetwork,
        family: Family,
        vip_last: u8,
        etp: Option<&str>,
        node_ports: (u16, u16),
    ) -> (Multi, IpAddr, IpAddr) {
        let mut f = Multi::new(WHO, network, 1);
        f.serve(1, 0);
        let backend = f.pod(1, 0).ip_of(family);
        let cip = vip_of(family, vip_last);
        let docs = multi_docs(
            "web",
            "NodePort",
            cip,
            etp,
            Some(node_ports),
            &[(backend, 1)],
        );
        f.apply("web", &with_nodes(docs));
        (f, backend, cip)
    }

    /// NodePort on node A (node-0) with its only endpoint on node B (node-1): an external client
    /// reaches A:nodePort; the reply comes from A:nodePort; the backend sees A's address
    /// (eTP=Cluster: masquerade, so that the reply goes back through A). TCP and UDP. B's
    /// NodePort (local endpoint) works as well, masqueraded to B. A persistent connection keeps
    /// its backend and SNAT. Also: the hooks on both nodes.
    pub fn nodeport_on_node_a_endpoint_on_node_b(network: PodNetwork, family: Family) {
        let (f, backend, cip) = endpoint_on_node_b(network, family, 10, None, (30080, 30053));
        let (tbe, ube) = (sa(backend, TCP_BACKEND_PORT), sa(backend, UDP_BACKEND_PORT));
        for k in 0..NODES {
            let ip = f.cluster.node_ip_of(k, family);
            f.wait_programmed(
                k,
                &[
                    (sa(ip, 30080), L4::Tcp, "NodePort", &[tbe]),
                    (sa(ip, 30053), L4::Udp, "NodePort", &[ube]),
                    (sa(cip, 80), L4::Tcp, "ClusterIP", &[tbe]),
                ],
            );
            f.assert_snat_address(k, family);
        }

        let (a, b) = f.node_ips(family);
        let client = f.client(0);
        let want = set(&[Multi::ident(1, 0)]);
        for l4 in [L4::Tcp, L4::Udp] {
            let np = if l4 == L4::Tcp { 30080 } else { 30053 };
            // Through A: masqueraded to A; through B (the endpoint's own node): masqueraded to B
            // (eTP=Cluster).
            for (node, k) in [(a, 0), (b, 1)] {
                let dst = sa(node, np);
                f.wait_reply(client, dst, l4, Seen::Snat(node));
                let counts = f.collect(client, dst, l4, 10, Seen::Snat(node));
                assert_eq!(idents(&counts), want, "{l4:?} via node-{k}: {counts:?}");
            }
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

    /// A pod on node A to a ClusterIP whose only endpoint is on node B: works, the reply comes
    /// from VIP:port and the backend sees the client pod's own address (no SNAT for
    /// pod-to-ClusterIP). Then with endpoints on both nodes: both answer, from either node.
    pub fn clusterip_pod_on_a_to_endpoint_on_b(network: PodNetwork, family: Family) {
        let mut f = Multi::new(WHO, network, 1);
        f.serve(1, 0);
        f.serve(0, 1);
        let (remote, local) = (f.pod(1, 0).ip_of(family), f.pod(0, 1).ip_of(family));
        let cip = vip_of(family, 20);
        let docs = |eps: &[(IpAddr, usize)]| {
            with_nodes(multi_docs("web", "ClusterIP", cip, None, None, eps))
        };
        f.apply("web", &docs(&[(remote, 1)]));
        let (tdst, udst) = (sa(cip, 80), sa(cip, 53));
        for k in 0..NODES {
            f.wait_programmed(
                k,
                &[
                    (tdst, L4::Tcp, "ClusterIP", &[sa(remote, TCP_BACKEND_PORT)]),
                    (udst, L4::Udp, "ClusterIP", &[sa(remote, UDP_BACKEND_PORT)]),
                ],
            );
        }
        let (client, seen) = (f.pod(0, 0).ns(), Seen::Client(f.pod(0, 0).ip_of(family)));
        for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
            f.wait_reply(client, dst, l4, seen);
            let counts = f.collect(client, dst, l4, 10, seen);
            assert_eq!(
                idents(&counts),
                set(&[Multi::ident(1, 0)]),
                "{l4:?}: {counts:?}"
            );
        }

        // Endpoints on both nodes.
        f.apply("web", &docs(&[(remote, 1), (local, 0)]));
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
        let both = set(&[Multi::ident(1, 0), Multi::ident(0, 1)]);
        for (dst, l4) in [(tdst, L4::Tcp), (udst, L4::Udp)] {
            let counts = f.collect(client, dst, l4, 30, seen);
            assert_eq!(
                idents(&counts),
                both,
                "{l4:?}: not both nodes' endpoints: {counts:?}"
            );
        }
        // The same from a pod on node B (its agent has the same Service).
        let (client, seen) = (f.pod(1, 1).ns(), Seen::Client(f.pod(1, 1).ip_of(family)));
        f.wait_reply(client, tdst, L4::Tcp, seen);
        let counts = f.collect(client, tdst, L4::Tcp, 30, seen);
        assert_eq!(idents(&counts), both, "from node-1: {counts:?}");
    }

    /// Two external clients, both from source port 40000, to node A's NodePort at the same time:
    /// both connections work side by side and the backend sees two different SNAT source ports
    /// on A's address. Once with the backend on node B, once with it on node A itself.
    pub fn nodeport_two_clients_same_source_port(network: PodNetwork, family: Family) {
        let mut f = Multi::new(WHO, network, 2);
        f.serve(1, 0);
        f.serve(0, 1);
        let (remote, local) = (f.pod(1, 0).ip_of(family), f.pod(0, 1).ip_of(family));
        // The IPv4 run writes no Node objects: NodePorts are served on, and SNAT uses, eth0's
        // address (the fallback); the IPv6 run takes them from the Node objects.
        let docs = |docs: Vec<String>| match family {
            Family::V4 => docs,
            Family::V6 => with_nodes(docs),
        };
        let (rvip, lvip) = (vip_of(family, 30), vip_of(family, 31));
        let rports = Some((30080, 30053));
        let lports = Some((30081, 30054));
        let remote_docs = multi_docs("remote", "NodePort", rvip, None, rports, &[(remote, 1)]);
        let local_docs = multi_docs("local", "NodePort", lvip, None, lports, &[(local, 0)]);
        f.apply("remote", &docs(remote_docs));
        f.apply("local", &docs(local_docs));
        let a = f.cluster.node_ip_of(0, family);
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
        f.assert_snat_address(0, family);
        // Backend on node B, then on node A itself.
        for (t, u, backend) in [
            (30080, 30053, Multi::ident(1, 0)),
            (30081, 30054, Multi::ident(0, 1)),
        ] {
            let (tdst, udst) = (sa(a, t), sa(a, u));
            for c in [f.client(0), f.client(1)] {
                f.wait_reply(c, tdst, L4::Tcp, Seen::Snat(a));
                f.wait_reply(c, udst, L4::Udp, Seen::Snat(a));
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

    /// externalTrafficPolicy: Local with the only endpoint on node B: B's NodePort works and the
    /// backend sees the real client address and port (no SNAT); A's NodePort (no local endpoint)
    /// drops, like kube-proxy: the connection times out and reaches no backend. The ClusterIP of
    /// the same Service still works from a pod on A (iTP is Cluster).
    pub fn external_traffic_policy_local(network: PodNetwork, family: Family) {
        let (f, backend, cip) =
            endpoint_on_node_b(network, family, 40, Some("Local"), (30090, 30091));
        let (a, b) = f.node_ips(family);
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
                (sa(cip, 80), L4::Tcp, "ClusterIP", &[tbe]),
            ],
        );
        let client = f.client(0);
        let seen = Seen::Client(f.cluster.client_ip_of(0, family));
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
                "eTP=Local NodePort on a node without a local endpoint",
            );
        }
        // ... and B still serves it afterwards.
        let counts = f.collect(client, sa(b, 30090), L4::Tcp, 5, seen);
        assert_eq!(idents(&counts), want, "{counts:?}");
        // The ClusterIP follows internalTrafficPolicy (Cluster): reachable from a pod on A.
        let (pod, pseen) = (f.pod(0, 0).ns(), Seen::Client(f.pod(0, 0).ip_of(family)));
        let dst = sa(cip, 80);
        f.wait_reply(pod, dst, L4::Tcp, pseen);
        let counts = f.collect(pod, dst, L4::Tcp, 5, pseen);
        assert_eq!(idents(&counts), want, "ClusterIP from node-0: {counts:?}");
    }
}
