//! Several [`Node`]s on one underlay bridge, with external clients ([`Cluster`]): the flannel
//! host-gw style topology drawn in the module docs of [`super`].
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Result};
use podlb::types::Family;

use super::addr::*;
use super::host::unique_prefix;
use super::netns::{ip_batch, new_leaf_ns, Netns};
use super::node::{Node, NodeOptions, PodNetwork};

/// Options for [`Cluster::new`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes (at most [`MAX_CLUSTER_NODES`]).
    pub nodes: usize,
    /// Pods created up front on every node (more with [`Node::add_pod`] via
    /// [`Cluster::node_mut`]).
    pub pods_per_node: usize,
    pub network: PodNetwork,
    /// Create client 0 (192.168.50.2, fd00:50::2) on the underlay; more with
    /// [`Cluster::add_client`].
    pub external_client: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 2,
            pods_per_node: 2,
            network: PodNetwork::Routed,
            external_client: false,
        }
    }
}

/// Several [`Node`]s joined by a Linux bridge `br0` in a bridge namespace (the underlay,
/// 192.168.50.0/24 and fd00:50::/64), plus external client namespaces on the same bridge. See the module docs
/// for the topology. Everything is deleted on drop.
#[derive(Debug)]
pub struct Cluster {
    // Field order is drop order: clients and nodes go before the bridge.
    clients: Vec<Netns>,
    nodes: Vec<Node>,
    bridge: Netns,
    prefix: String,
}

impl Cluster {
    pub fn new(opts: ClusterOptions) -> Result<Cluster> {
        if opts.nodes == 0 || opts.nodes > MAX_CLUSTER_NODES {
            bail!(
                "a cluster has 1 to {MAX_CLUSTER_NODES} nodes, not {}",
                opts.nodes
            );
        }
        let prefix = unique_prefix();
        let bridge = new_leaf_ns(format!("{prefix}-br"))?;
        // A pure layer-2 namespace: no addresses of its own (no IPv6 link-local chatter either),
        // and no multicast snooping, so neighbour solicitations are flooded like ARP.
        bridge.sysctl(&[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ])?;
        ip_batch(
            &bridge,
            &[
                "link add br0 type bridge mcast_snooping 0".into(),
                "link set br0 up".into(),
            ],
        )?;
        let mut cluster = Cluster {
            clients: Vec::new(),
            nodes: Vec::new(),
            bridge,
            prefix,
        };
        for k in 0..opts.nodes {
            let node_opts = NodeOptions {
                pods: opts.pods_per_node,
                network: opts.network,
                external_client: false,
            };
            let node = Node::build(node_opts, k as u8, format!("{}-n{k}", cluster.prefix))?;
            let node = cluster.nodes.push_and_get(node);
            let (ip, ip6, port) = (cluster_node_ip(k), cluster_node_ip6(k), format!("n{k}"));
            ip_batch(
                &cluster.bridge,
                &[
                    format!(
                        "link add {port} type veth peer name {CLUSTER_UPLINK} netns {}",
                        node.ns.name()
                    ),
                    format!("link set {port} master br0"),
                    format!("link set {port} up"),
                ],
            )?;
            node.ns
                .sysctl(&[(&format!("net.ipv4.conf.{CLUSTER_UPLINK}.rp_filter"), "0")])?;
            let mut lines = vec![
                format!("addr add {ip}/24 dev {CLUSTER_UPLINK}"),
                format!("addr add {ip6}/64 dev {CLUSTER_UPLINK} nodad"),
                format!("link set {CLUSTER_UPLINK} up"),
            ];
            for j in (0..opts.nodes).filter(|&j| j != k) {
                lines.push(format!(
                    "route add 10.244.{j}.0/24 via {} dev {CLUSTER_UPLINK}",
                    cluster_node_ip(j)
                ));
                lines.push(format!(
                    "route add fd00:10:244:{j}::/64 via {} dev {CLUSTER_UPLINK}",
                    cluster_node_ip6(j)
                ));
            }
            ip_batch(&node.ns, &lines)?;
            node.uplink = Some(ip);
            node.uplink6 = Some(ip6);
        }
        if opts.external_client {
            cluster.add_client()?;
        }
        Ok(cluster)
    }

    /// Adds external client `n = clients().len()` on the underlay: namespace with `eth0`
    /// 192.168.50.(2+n)/24 and fd00:50::(2+n)/64, and routes to 10.244.0.0/16 and
    /// fd00:10:244::/48 via node 0. Returns `n`.
    pub fn add_client(&mut self) -> Result<usize> {
        let n = self.clients.len();
        if n >= MAX_CLUSTER_CLIENTS {
            bail!("at most {MAX_CLUSTER_CLIENTS} clients per cluster");
        }
        let ns = new_leaf_ns(format!("{}-client{n}", self.prefix))?;
        let ns = self.clients.push_and_get(ns);
        let port = format!("c{n}");
        ip_batch(
            &self.bridge,
            &[
                format!(
                    "link add {port} type veth peer name eth0 netns {}",
                    ns.name()
                ),
                format!("link set {port} master br0"),
                format!("link set {port} up"),
            ],
        )?;
        ip_batch(
            ns,
            &[
                format!("addr add {}/24 dev eth0", cluster_client_ip(n)),
                format!("addr add {}/64 dev eth0 nodad", cluster_client_ip6(n)),
                "link set eth0 up".into(),
                format!("route add 10.244.0.0/16 via {}", cluster_node_ip(0)),
                format!("route add fd00:10:244::/48 via {}", cluster_node_ip6(0)),
            ],
        )?;
        Ok(n)
    }

    /// Routes `dest` (a prefix of either family, such as the Service range 10.96.0.0/16) from
    /// client `n` via node `k`'s underlay address of that family, as an operator routes a
    /// Service range to a node.
    pub fn route_from_client(&self, n: usize, dest: &str, k: usize) -> Result<()> {
        let Some(ns) = self.clients.get(n) else {
            bail!("no client {n}");
        };
        if k >= self.nodes.len() {
            bail!("no node {k}");
        }
        let via: IpAddr = match dest.contains(':') {
            true => cluster_node_ip6(k).into(),
            false => cluster_node_ip(k).into(),
        };
        ip_batch(ns, &[format!("route add {dest} via {via}")])
    }

    /// Node `k`; panics if there is no such node.
    pub fn node(&self, k: usize) -> &Node {
        &self.nodes[k]
    }
    /// Node `k`, e.g. to add pods; panics if there is no such node.
    pub fn node_mut(&mut self, k: usize) -> &mut Node {
        &mut self.nodes[k]
    }
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// Node `k`'s address on the underlay, 192.168.50.(10+k); panics if there is no such node.
    pub fn node_ip(&self, k: usize) -> Ipv4Addr {
        self.nodes[k].uplink.expect("cluster nodes have an uplink")
    }
    /// Node `k`'s IPv6 address on the underlay, fd00:50::(10+k); panics if there is no such
    /// node.
    pub fn node_ip6(&self, k: usize) -> Ipv6Addr {
        self.nodes[k].uplink6.expect("cluster nodes have an uplink")
    }
    /// [`Cluster::node_ip`] or [`Cluster::node_ip6`].
    pub fn node_ip_of(&self, k: usize, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.node_ip(k).into(),
            Family::V6 => self.node_ip6(k).into(),
        }
    }
    /// The first external client, if any.
    pub fn client(&self) -> Option<&Netns> {
        self.clients.first()
    }
    /// The first external client's address (192.168.50.2), if there is a client.
    pub fn client_ip(&self) -> Option<Ipv4Addr> {
        self.clients.first().map(|_| cluster_client_ip(0))
    }
    /// The first external client's IPv6 address (fd00:50::2), if there is a client.
    pub fn client_ip6(&self) -> Option<Ipv6Addr> {
        self.clients.first().map(|_| cluster_client_ip6(0))
    }
    /// Client `n`'s address of `family`; panics if there is no such client.
    pub fn client_ip_of(&self, n: usize, family: Family) -> IpAddr {
        assert!(n < self.clients.len(), "no client {n}");
        match family {
            Family::V4 => cluster_client_ip(n).into(),
            Family::V6 => cluster_client_ip6(n).into(),
        }
    }
    /// All external clients; client `n` has address [`cluster_client_ip`]`(n)`.
    pub fn clients(&self) -> &[Netns] {
        &self.clients
    }
    /// The namespace holding the underlay bridge `br0` (ports `n{k}` and `c{n}`).
    pub fn bridge(&self) -> &Netns {
        &self.bridge
    }
}

/// `Vec::push` that returns a reference to the pushed element.
trait PushAndGet<T> {
    fn push_and_get(&mut self, v: T) -> &mut T;
}

impl<T> PushAndGet<T> for Vec<T> {
    fn push_and_get(&mut self, v: T) -> &mut T {
        self.push(v);
        self.last_mut().unwrap()
    }
}
