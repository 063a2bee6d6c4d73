//! Shared by the end-to-end test modules, all for either address family: timeouts, addresses,
//! the L4 protocol of a request, reply checks, agent start-up and the agent's JSON output,
//! REJECT checks, manifests; the single-node [`Fixture`] and the two-node [`Multi`] fixture
//! (in [`fixture`]), and (in [`scenario`]) the bodies of the tests that run once per family:
//! the IPv4 modules and `ipv6` each keep a thin `#[test]` that calls them with their family.

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

mod fixture;
pub mod scenario;

pub use fixture::*;
