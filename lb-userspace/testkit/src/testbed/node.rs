//! A Kubernetes node made of network namespaces ([`Node`]): the node namespace, its pods
//! ([`Pod`], wired as [`PodNetwork::Routed`] or [`PodNetwork::Bridge`]) and an optional external
//! client on `ext0`. The topology is drawn in the module docs of [`super`].
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{bail, Result};
use podlb::types::Family;

use super::addr::*;
use super::host::unique_prefix;
use super::netns::{ip_batch, new_leaf_ns, Netns};

/// How pods are wired to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodNetwork {
    /// Calico style: pod /32 (and /128), gateway 169.254.1.1 answered by proxy ARP (and
    /// fe80::ecee:eeff:feee:eeee, the host veth's link-local address), host route per pod.
    Routed,
    /// Bridge CNI style: pods in 10.244.k.0/24 and fd00:10:244:k::/64 on bridge `cbr0`
    /// (10.244.k.1, fd00:10:244:k::1) of node `k`.
    Bridge,
}

/// Options for [`Node::new`] and [`Node::with_index`].
///
/// The node index (which pod CIDR the node gets) is not a field here, so that existing struct
/// literals keep compiling: pass it to [`Node::with_index`], or build a [`Cluster`](super::Cluster).
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Number of pods created up front (more with [`Node::add_pod`]).
    pub pods: usize,
    pub network: PodNetwork,
    /// Create the `ext` client namespace on `ext0` (192.168.77.0/24 and fd00:77::/64).
    pub external_client: bool,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            pods: 2,
            network: PodNetwork::Routed,
            external_client: false,
        }
    }
}

/// A pod: its own network namespace with `eth0`, wired to the node's `lxc{i}`.
#[derive(Debug)]
pub struct Pod {
    ns: Netns,
    name: String,
    ip: Ipv4Addr,
    ip6: Ipv6Addr,
    host_if: String,
}

impl Pod {
    pub fn ns(&self) -> &Netns {
        &self.ns
    }
    /// The pod's IPv4 address, 10.244.k.(10+i) on node `k`.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// The pod's IPv6 address, fd00:10:244:k::(10+i) on node `k`.
    pub fn ip6(&self) -> Ipv6Addr {
        self.ip6
    }
    /// The pod's address of `family`.
    pub fn ip_of(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.ip.into(),
            Family::V6 => self.ip6.into(),
        }
    }
    /// `pod{i}`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Host-side veth in the node namespace, `lxc{i}`.
    pub fn host_if(&self) -> &str {
        &self.host_if
    }
}

/// A Kubernetes node built from network namespaces; everything is deleted on drop.
#[derive(Debug)]
pub struct Node {
    // Field order is drop order: pods and the client go before the node.
    pods: Vec<Pod>,
    ext: Option<Netns>,
    pub(super) ns: Netns,
    prefix: String,
    network: PodNetwork,
    index: u8,
    /// The node's address on the cluster underlay (`eth0`), for a [`Cluster`](super::Cluster) node.
    pub(super) uplink: Option<Ipv4Addr>,
    /// The node's IPv6 address on the cluster underlay, for a [`Cluster`](super::Cluster) node.
    pub(super) uplink6: Option<Ipv6Addr>,
    /// The node-side name of the external client's link (`ext0` unless named otherwise).
    ext_if: String,
}

impl Node {
    /// Builds node 0: the node namespace, `opts.pods` pods and, if asked, the external client.
    pub fn new(opts: NodeOptions) -> Result<Node> {
        Self::with_index(opts, 0)
    }

    /// Like [`Node::new`], but as node `index` of a cluster: pods get 10.244.index.(10+i) and the
    /// bridge (in bridge mode) 10.244.index.1/24. A standalone node with an external client
    /// still uses `ext0` and 192.168.77.0/24.
    pub fn with_index(opts: NodeOptions, index: u8) -> Result<Node> {
        Self::build(opts, index, unique_prefix())
    }

    /// Like [`Node::new`], with the node's side of the external client's link named `name`
    /// instead of `ext0`. Interface names are per namespace, so the node may call it `eth0`,
    /// as a real node names its uplink: then a configuration written for real nodes
    /// (deploy/base's `externalInterfaces: ["eth0"]`) fits the test bed unchanged.
    pub fn with_external_interface(opts: NodeOptions, name: &str) -> Result<Node> {
        if name.is_empty() || name.len() > 15 || name.starts_with("lxc") {
            bail!("external interface name {name:?}: want 1 to 15 characters, not lxc* (the pods' interfaces)");
        }
        Self::build_named(opts, 0, unique_prefix(), name)
    }

    pub(super) fn build(opts: NodeOptions, index: u8, prefix: String) -> Result<Node> {
        Self::build_named(opts, index, prefix, "ext0")
    }

    fn build_named(opts: NodeOptions, index: u8, prefix: String, ext_if: &str) -> Result<Node> {
        let ns = Netns::with_name(format!("{prefix}-node"))?;
        let mut node = Node {
            pods: Vec::new(),
            ext: None,
            ns,
            prefix,
            network: opts.network,
            index,
            uplink: None,
            uplink6: None,
            ext_if: ext_if.to_string(),
        };
        node.ns.sysctl(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.conf.default.forwarding", "1"),
        ])?;
        if opts.network == PodNetwork::Bridge {
            ip_batch(
                &node.ns,
                &[
                    // No multicast snooping: neighbour solicitations are flooded like ARP.
                    "link add cbr0 type bridge mcast_snooping 0".into(),
                    format!("addr add {}/24 dev cbr0", bridge_ip_on(index)),
                    format!("addr add {}/64 dev cbr0 nodad", bridge_ip6_on(index)),
                    "link set cbr0 up".into(),
                ],
            )?;
        }
        if opts.external_client {
            let ext = new_leaf_ns(format!("{}-ext", node.prefix))?;
            let ext_ref = node.ext.insert(ext);
            ip_batch(
                &node.ns,
                &[
                    format!(
                        "link add {ext_if} type veth peer name eth0 netns {}",
                        ext_ref.name()
                    ),
                    format!("addr add {EXT_NODE_IP}/24 dev {ext_if}"),
                    format!("addr add {EXT_NODE_IP6}/64 dev {ext_if} nodad"),
                    format!("link set {ext_if} up"),
                ],
            )?;
            ip_batch(
                ext_ref,
                &[
                    format!("addr add {EXT_CLIENT_IP}/24 dev eth0"),
                    format!("addr add {EXT_CLIENT_IP6}/64 dev eth0 nodad"),
                    "link set eth0 up".into(),
                    // Covers the pod CIDR 10.244.0.0/16 and the Service CIDR 10.96.0.0/16.
                    format!("route add default via {EXT_NODE_IP}"),
                    // The same for IPv6 (fd00:10:244::/48, Service addresses fd00:...).
                    format!("route add ::/0 via {EXT_NODE_IP6}"),
                ],
            )?;
        }
        for _ in 0..opts.pods {
            node.add_pod()?;
        }
        Ok(node)
    }

    /// Adds pod number `pods().len()` (same scheme as the initial ones) and returns its index.
    pub fn add_pod(&mut self) -> Result<usize> {
        let i = self.pods.len();
        if i > 245 {
            bail!("at most 246 pods per node");
        }
        let (name, host_if, ip, ip6) = (
            format!("pod{i}"),
            format!("lxc{i}"),
            pod_ip_on(self.index, i),
            pod_ip6_on(self.index, i),
        );
        let ns = new_leaf_ns(format!("{}-{name}", self.prefix))?;
        let pod = Pod {
            ns,
            name,
            ip,
            ip6,
            host_if,
        };
        let (hif, pns) = (&pod.host_if, pod.ns.name());
        match self.network {
            PodNetwork::Routed => {
                ip_batch(
                    &self.ns,
                    &[
                        format!("link add {hif} address {ROUTED_HOST_MAC} type veth peer name eth0 netns {pns}"),
                        format!("link set {hif} up"),
                        format!("route add {ip}/32 dev {hif}"),
                        format!("route add {ip6}/128 dev {hif}"),
                    ],
                )?;
                self.ns.sysctl(&[
                    (&format!("net.ipv4.conf.{hif}.proxy_arp"), "1"),
                    (&format!("net.ipv4.neigh.{hif}.proxy_delay"), "0"),
                ])?;
                // The node namespace has no default route, so proxy ARP cannot answer for
                // 169.254.1.1 (the kernel needs a route to it via another device, which a real
                // Calico host has); pin the gateway's neighbour entry instead. For IPv6 the
                // gateway is the host veth's own link-local address (derived from its MAC); its
                // neighbour entry is pinned as well.
                ip_batch(
                    &pod.ns,
                    &[
                        format!("addr add {ip}/32 dev eth0"),
                        format!("addr add {ip6}/128 dev eth0 nodad"),
                        "link set eth0 up".into(),
                        format!("route add {ROUTED_GATEWAY} dev eth0 scope link"),
                        format!("neigh add {ROUTED_GATEWAY} lladdr {ROUTED_HOST_MAC} dev eth0 nud permanent"),
                        format!("route add default via {ROUTED_GATEWAY} dev eth0"),
                        format!("neigh add {ROUTED_GATEWAY6} lladdr {ROUTED_HOST_MAC} dev eth0 nud permanent"),
                        format!("route add ::/0 via {ROUTED_GATEWAY6} dev eth0"),
                    ],
                )?;
            }
            PodNetwork::Bridge => {
                ip_batch(
                    &self.ns,
                    &[
                        format!("link add {hif} type veth peer name eth0 netns {pns}"),
                        format!("link set {hif} master cbr0"),
                        format!("link set {hif} up"),
                    ],
                )?;
                ip_batch(
                    &pod.ns,
                    &[
                        format!("addr add {ip}/24 dev eth0"),
                        format!("addr add {ip6}/64 dev eth0 nodad"),
                        "link set eth0 up".into(),
                        format!(
                            "route add default via {} dev eth0",
                            bridge_ip_on(self.index)
                        ),
                        format!("route add ::/0 via {} dev eth0", bridge_ip6_on(self.index)),
                    ],
                )?;
            }
        }
        self.pods.push(pod);
        Ok(i)
    }

    /// The node namespace (where the agent runs).
    pub fn ns(&self) -> &Netns {
        &self.ns
    }
    /// Pod `i`; panics if there is no such pod.
    pub fn pod(&self, i: usize) -> &Pod {
        &self.pods[i]
    }
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }
    pub fn network(&self) -> PodNetwork {
        self.network
    }
    /// The external client namespace, if created.
    pub fn ext(&self) -> Option<&Netns> {
        self.ext.as_ref()
    }
    /// The external client's address (192.168.77.2), if created.
    pub fn ext_ip(&self) -> Option<Ipv4Addr> {
        self.ext.as_ref().map(|_| EXT_CLIENT_IP)
    }
    /// The external client's IPv6 address (fd00:77::2), if created.
    pub fn ext_ip6(&self) -> Option<Ipv6Addr> {
        self.ext.as_ref().map(|_| EXT_CLIENT_IP6)
    }
    /// The node's address on the external network, for NodePorts: 192.168.50.(10+k) on `eth0`
    /// for a [`Cluster`](super::Cluster) node, 192.168.77.1 on `ext0` for a standalone node with an external
    /// client, else `None`.
    pub fn node_ip(&self) -> Option<Ipv4Addr> {
        self.uplink
            .or_else(|| self.ext.as_ref().map(|_| EXT_NODE_IP))
    }
    /// The node's IPv6 address on the external network, for NodePorts: fd00:50::(10+k) on
    /// `eth0` for a [`Cluster`](super::Cluster) node, fd00:77::1 on `ext0` for a standalone node with an
    /// external client, else `None`.
    pub fn node_ip6(&self) -> Option<Ipv6Addr> {
        self.uplink6
            .or_else(|| self.ext.as_ref().map(|_| EXT_NODE_IP6))
    }
    /// [`Node::node_ip`] or [`Node::node_ip6`].
    pub fn node_ip_of(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.node_ip().map(IpAddr::V4),
            Family::V6 => self.node_ip6().map(IpAddr::V6),
        }
    }
    /// [`Node::ext_ip`] or [`Node::ext_ip6`].
    pub fn ext_ip_of(&self, family: Family) -> Option<IpAddr> {
        match family {
            Family::V4 => self.ext_ip().map(IpAddr::V4),
            Family::V6 => self.ext_ip6().map(IpAddr::V6),
        }
    }
    /// The node index `k` (pods are 10.244.k.(10+i)); 0 for [`Node::new`].
    pub fn index(&self) -> u8 {
        self.index
    }
    /// The Kubernetes node name, `node-{index}` (what [`Agent`](super::Agent) passes as `--node-name`).
    pub fn name(&self) -> String {
        format!("node-{}", self.index)
    }
    /// The node's pod CIDR, `10.244.k.0/24`.
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.index)
    }
    /// The node's IPv6 pod CIDR, `fd00:10:244:k::/64`.
    pub fn pod_cidr6(&self) -> String {
        format!("fd00:10:244:{}::/64", self.index)
    }
    /// The node's external interfaces (what [`Agent`](super::Agent) passes as `--external-interface`):
    /// `["eth0"]` for a [`Cluster`](super::Cluster) node, `["ext0"]` for a standalone node with an external
    /// client (or the name given to [`Node::with_external_interface`]), else none.
    pub fn external_interfaces(&self) -> Vec<String> {
        let mut ifs = Vec::new();
        if self.uplink.is_some() {
            ifs.push(CLUSTER_UPLINK.to_string());
        }
        if self.ext.is_some() {
            ifs.push(self.ext_if.clone());
        }
        ifs
    }
}
