//! Self tests of the namespace test bed (`testkit::testbed`). They need root and fail (never skip)
//! without it.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::process::Command;
use std::time::{Duration, Instant};

use podlb::types::Family;
use testkit::testbed::*;

const T: Duration = Duration::from_secs(3);

fn root() {
    require_root().expect("testbed self tests must run as root");
}

fn netns_list() -> String {
    String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

fn listed(name: &str) -> bool {
    netns_list()
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn mk_node(pods: usize, network: PodNetwork, external_client: bool) -> Node {
    Node::new(NodeOptions {
        pods,
        network,
        external_client,
    })
    .expect("building node")
}

fn mk_cluster(nodes: usize, network: PodNetwork, external_client: bool) -> Cluster {
    Cluster::new(ClusterOptions {
        nodes,
        pods_per_node: 2,
        network,
        external_client,
    })
    .expect("building cluster")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn sa6(ip: Ipv6Addr, port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))
}

mod apiserver_tls;
mod cluster;
mod ipv6;

mod node;
mod process;
mod yaml;
