//! Shared by the end-to-end tests with real traffic (`service_e2e.rs`, `service_types_e2e.rs`,
//! `multinode_e2e.rs`, `icmp_e2e.rs`, `ipv6_e2e.rs`): timeouts, addresses, the L4 protocol of a
//! request, reply checks (also for either family), agent start-up and the agent's JSON output.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Result};
use podlb::testbed::{
    require_root, tcp_request, udp_request, wait_for, Agent, Netns, Node, NodeOptions, PodNetwork,
    Reply,
};
use serde_json::Value;

/// Timeout of one request that must succeed.
pub const T: Duration = Duration::from_secs(3);
/// Timeout of one request that must fail (reach no backend).
pub const SHORT: Duration = Duration::from_secs(1);
/// How long a change (manifest write, agent start) may take to show up in the datapath.
pub const SETTLE: Duration = Duration::from_secs(20);
pub const TCP_BACKEND_PORT: u16 = 8080;
pub const UDP_BACKEND_PORT: u16 = 5353;

/// ClusterIP 10.96.0.`last`.
pub fn vip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 96, 0, last)
}

pub fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

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
    pub fn request(self, ns: &Netns, dst: SocketAddrV4, timeout: Duration) -> Result<Reply> {
        match self {
            L4::Tcp => tcp_request(ns, dst, timeout),
            L4::Udp => udp_request(ns, dst, timeout),
        }
    }
    /// [`L4::request`] to an address of either family.
    pub fn request_to(self, ns: &Netns, dst: SocketAddr, timeout: Duration) -> Result<Reply> {
        match self {
            L4::Tcp => tcp_request(ns, dst, timeout),
            L4::Udp => udp_request(ns, dst, timeout),
        }
    }
}

/// Which client address the backend must see.
#[derive(Clone, Copy, Debug)]
pub enum Seen {
    /// The client's own address and port (no SNAT).
    Client(Ipv4Addr),
    /// Masqueraded to this node address.
    Snat(Ipv4Addr),
}

/// Checks that `r` came from `dst` and that the backend saw the client as `seen`.
pub fn check_reply(r: &Reply, dst: SocketAddrV4, seen: Seen) -> Result<()> {
    ensure!(r.peer == SocketAddr::V4(dst), "reply not from {dst}: {r:?}");
    match seen {
        Seen::Client(ip) => {
            ensure!(
                r.seen_client.ip() == IpAddr::V4(ip),
                "the backend saw {} instead of the client {ip} (SNATed): {r:?}",
                r.seen_client
            );
            // (An unconnected UDP socket's local address is 0.0.0.0:port.)
            ensure!(
                r.seen_client.port() == r.local.port(),
                "the client's port was rewritten: {r:?}"
            );
        }
        Seen::Snat(ip) => ensure!(
            r.seen_client.ip() == IpAddr::V4(ip),
            "the backend saw {} instead of the masquerade address {ip}: {r:?}",
            r.seen_client
        ),
    }
    Ok(())
}

/// [`check_reply`], panicking on a mismatch.
#[track_caller]
pub fn assert_reply(r: &Reply, dst: SocketAddrV4, seen: Seen) {
    check_reply(r, dst, seen).unwrap_or_else(|e| panic!("{e:#}"));
}

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

/// Waits until a request from `client` to `dst` is answered from `dst` (the Service is
/// programmed and the client's interface hooked); on failure panics with `log()`.
pub fn wait_answered(client: &Netns, dst: SocketAddrV4, l4: L4, log: impl Fn() -> String) -> Reply {
    wait_for(SETTLE, || {
        let r = l4.request(client, dst, SHORT)?;
        ensure!(
            r.peer == SocketAddr::V4(dst),
            "reply from {} not {dst}",
            r.peer
        );
        Ok(r)
    })
    .unwrap_or_else(|e| panic!("{dst} never became reachable: {e:#}\n{}", log()))
}

// ---------------------------------------------------------------------------------------------
// Either family (IPv6 and dual-stack tests)

/// IPv6 ClusterIP fd00:96::`last` (the digits read like 10.96.0.`last`; they are hex).
pub fn vip6(last: u16) -> Ipv6Addr {
    format!("fd00:96::{last}").parse().unwrap()
}

pub fn sa6(ip: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(ip), port)
}

/// Which client address the backend must see, for either family ([`Seen`] is IPv4 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeenIp {
    /// The client's own address and port (no SNAT).
    Client(IpAddr),
    /// Masqueraded to this node address.
    Snat(IpAddr),
}

impl From<Seen> for SeenIp {
    fn from(s: Seen) -> SeenIp {
        match s {
            Seen::Client(ip) => SeenIp::Client(ip.into()),
            Seen::Snat(ip) => SeenIp::Snat(ip.into()),
        }
    }
}

/// [`check_reply`] for either family: `r` came from `dst` (address and port) and the backend
/// saw the client as `seen`.
pub fn check_reply_ip(r: &Reply, dst: SocketAddr, seen: SeenIp) -> Result<()> {
    ensure!(
        (r.peer.ip(), r.peer.port()) == (dst.ip(), dst.port()),
        "reply not from {dst}: {r:?}"
    );
    match seen {
        SeenIp::Client(ip) => {
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
        SeenIp::Snat(ip) => ensure!(
            r.seen_client.ip() == ip,
            "the backend saw {} instead of the masquerade address {ip}: {r:?}",
            r.seen_client
        ),
    }
    Ok(())
}

/// [`check_reply_ip`], panicking on a mismatch.
#[track_caller]
pub fn assert_reply_ip(r: &Reply, dst: SocketAddr, seen: SeenIp) {
    check_reply_ip(r, dst, seen).unwrap_or_else(|e| panic!("{e:#}"));
}

/// [`wait_answered`] for either family.
pub fn wait_answered_ip(
    client: &Netns,
    dst: SocketAddr,
    l4: L4,
    log: impl Fn() -> String,
) -> Reply {
    wait_for(SETTLE, || {
        let r = l4.request_to(client, dst, SHORT)?;
        ensure!(
            (r.peer.ip(), r.peer.port()) == (dst.ip(), dst.port()),
            "reply from {} not {dst}",
            r.peer
        );
        Ok(r)
    })
    .unwrap_or_else(|e| panic!("{dst} never became reachable: {e:#}\n{}", log()))
}
