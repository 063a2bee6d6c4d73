//! Test bed: builds a Kubernetes node out of network namespaces, with real servers and clients.
//!
//! Used by the integration tests and by the demo binary. It only needs std, libc and the `ip`
//! command, and must run as root. Every object is a guard that cleans up on `Drop` (also while a
//! test panics), and every name is unique per process and per call, so tests may run in parallel
//! threads and in parallel processes.
//!
//! Topology built by [`Node::new`]:
//!
//! ```text
//!  [ext ns] eth0 192.168.77.2 ──veth── ext0 192.168.77.1 [node ns, ip_forward=1]
//!                                       lxc0 ──veth── eth0 10.244.0.10 [pod0 ns]
//!                                       lxc1 ──veth── eth0 10.244.0.11 [pod1 ns]
//! ```
//!
//! With [`PodNetwork::Routed`] (Calico style) every pod has a /32 and a default route via the
//! link-local gateway 169.254.1.1, and the node has one /32 route per pod. With
//! [`PodNetwork::Bridge`] (bridge CNI style) the `lxc` interfaces are ports of the bridge `cbr0`
//! (10.244.0.1/24), the pods' gateway.
//!
//! [`Node::with_index`] builds node `k` of a cluster: its pods are 10.244.k.(10+i) and its
//! bridge is 10.244.k.1/24. Index 0 is exactly what [`Node::new`] builds.
//!
//! Topology built by [`Cluster::new`] (flannel host-gw style underlay):
//!
//! ```text
//!  [bridge ns] br0 ─┬─ n0 ──veth── eth0 192.168.50.10 [node-0 ns] lxc* ── pods 10.244.0.(10+i)
//!                   ├─ n1 ──veth── eth0 192.168.50.11 [node-1 ns] lxc* ── pods 10.244.1.(10+i)
//!                   ├─ c0 ──veth── eth0 192.168.50.2  [client0 ns]  (external_client)
//!                   └─ c1 ──veth── eth0 192.168.50.3  [client1 ns]  (Cluster::add_client)
//! ```
//!
//! Every node routes each other node's pod CIDR 10.244.j.0/24 via 192.168.50.(10+j); the
//! clients route 10.244.0.0/16 via node 0 and reach the node IPs (NodePorts) directly.
//!
//! ## IPv6 (dual stack)
//!
//! Every network also carries IPv6, with the same plan. Groups are written so that they read
//! like the IPv4 numbers (`fd00:10:244:1::11` is the twin of 10.244.1.11; the digits are hex):
//!
//! | IPv4 | IPv6 |
//! |---|---|
//! | pod `i` of node `k`: 10.244.k.(10+i) | fd00:10:244:k::(10+i), /128 routed, /64 bridge ([`pod_ip6_on`]) |
//! | bridge `cbr0` 10.244.k.1/24 | fd00:10:244:k::1/64 ([`bridge_ip6_on`]) |
//! | routed gateway 169.254.1.1 (proxy ARP) | fe80::ecee:eeff:feee:eeee, the link-local address of the `lxc` veths (MAC ee:ee:ee:ee:ee:ee), as Calico |
//! | `ext0` 192.168.77.1 / client 192.168.77.2, default route via the node | fd00:77::1 / fd00:77::2, `::/0` via fd00:77::1 |
//! | underlay node `k` 192.168.50.(10+k) | fd00:50::(10+k)/64 ([`cluster_node_ip6`]) |
//! | underlay client `n` 192.168.50.(2+n) | fd00:50::(2+n)/64 ([`cluster_client_ip6`]) |
//! | node route 10.244.j.0/24 via node `j` | fd00:10:244:j::/64 via fd00:50::(10+j) |
//! | client route 10.244.0.0/16 via node 0 | fd00:10:244::/48 via fd00:50::10 |
//!
//! Duplicate address detection is off in every namespace (`accept_dad=0` before any interface is
//! created, and `nodad` on every address), so addresses are usable at once. Node namespaces have
//! `net.ipv6.conf.all.forwarding=1`. Bridges have multicast snooping off, so neighbour discovery
//! is flooded like ARP. The servers ([`TcpServer`], [`UdpServer`]) listen on both families and
//! the clients ([`tcp_request`], [`udp_request`], [`TcpSession`]) take any [`SocketAddr`](std::net::SocketAddr).

mod addr;
mod agent;
mod clients;
mod cluster;
mod host;
pub mod manifest;
mod netns;
mod node;
mod process;
mod servers;
mod sock;

pub use addr::*;
pub use agent::Agent;
pub use clients::*;
pub use cluster::{Cluster, ClusterOptions};
pub use host::{
    cleanup_stale, require_root, unique_name, wait_for, wait_until, TempDir, BPF_TEST_DIR,
};
pub use netns::Netns;
pub use node::{Node, NodeOptions, Pod, PodNetwork};
pub use process::{spawn_in_netns, spawn_in_netns_path, BpfRoot, Process};
pub use servers::{TcpServer, UdpServer};
