//! Desired datapath state, IPv4 and IPv6, computed from Kubernetes objects.
//!
//! Pure functions, no I/O. The rules are kube-proxy's (kube-proxy-contract.md points 1-10,
//! 13-16, 19, 21, 24 and 25): which Services and EndpointSlices count, how slice ports are matched
//! to Service ports, which frontends every Service type gets (ClusterIP, NodePort, externalIPs,
//! LoadBalancer ingress), and which endpoints become the backends of each frontend.
//!
//! Dual-stack (point 8) works the way kube-proxy's per-family proxiers do: a Service has the
//! families of its ClusterIPs (`spec.ipFamilies` paired with `spec.clusterIPs`), and each family
//! is programmed on its own. A frontend's backends come only from EndpointSlices of its family;
//! NodePorts are served on the node addresses of the Service's families; externalIPs and
//! LoadBalancer ingress IPs of a family the Service does not have are ignored.
//!
//! The parts: [`build`] computes the state from scratch (`full`), [`Incremental`] maintains it
//! object by object (`incremental`); both take the node's addresses from `node` and each
//! Service's frontends from `frontends`, which takes the endpoints of each port from
//! `endpoints`. This module holds what they produce.
mod endpoints;
mod frontends;
mod full;
mod incremental;
mod node;
#[cfg(test)]
mod tests;

pub use full::build;
pub use incremental::{Changes, Incremental};

use crate::types::{BackendAddr, Cidr, FrontendAddr, FrontendKind, NodePortAddresses};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendSpec {
    /// "namespace/name:portname", or "namespace/name" when the port has no name.
    pub name: String,
    pub kind: FrontendKind,
    /// Masquerade (SNAT to the node address) every new flow: externally reachable frontends
    /// (NodePort, ExternalIp, LoadBalancer) with externalTrafficPolicy Cluster (contract point 13).
    pub snat: bool,
    /// Masquerade new flows whose source is outside the cluster CIDR of the frontend's family:
    /// ClusterIP frontends of a family with a `--cluster-cidr` (contract point 12, kube-proxy's
    /// `! -s clusterCIDR -d clusterIP -j KUBE-MARK-MASQ`, for either internalTrafficPolicy).
    pub masq_off_cluster: bool,
    /// With no backends: drop silently (true: iTP=Local / eTP=Local with no local endpoints,
    /// points 14-15) instead of rejecting (false: point 16).
    pub drop_when_empty: bool,
    /// Sorted and deduplicated, all of the frontend's family; empty when the Service has no
    /// usable endpoints of that family.
    pub backends: Vec<BackendAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub frontends: BTreeMap<FrontendAddr, FrontendSpec>,
    /// Every programmed ClusterIP, of both families: traffic to one of these on a port that is
    /// not a frontend is rejected (point 24).
    pub cluster_ips: BTreeSet<IpAddr>,
    /// The node's addresses, of both families, in order (point 21 and DESIGN: the Node
    /// object's InternalIP and ExternalIP addresses, else NodeInfo.fallback_addresses). Never
    /// loopback, unspecified or IPv6 link-local. The first address of each family is that
    /// family's SNAT address. NodePorts are served on these unless `--nodeport-addresses`
    /// says otherwise (`Incremental::nodeport_addresses`, the `node` module).
    pub node_addresses: Vec<IpAddr>,
    /// The cluster CIDRs ([`NodeInfo::cluster_cidrs`]), for the datapath's configuration.
    pub cluster_cidrs: Vec<Cidr>,
}

#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// This node's name: the Node object to read addresses from, and endpoints whose `nodeName`
    /// is this name are local.
    pub name: String,
    /// Where NodePorts are served when the Node object is missing or has no usable address
    /// (the external interfaces' addresses, both families).
    pub fallback_addresses: Vec<IpAddr>,
    /// Which node addresses NodePorts are served on (`--nodeport-addresses`).
    pub nodeport_addresses: NodePortAddresses,
    /// Every address of the node (all interfaces of its network namespace): where
    /// `--nodeport-addresses` CIDRs look. Read only when CIDRs are configured.
    pub local_addresses: Vec<IpAddr>,
    /// The pods' address ranges (`--cluster-cidr`), at most one per family. ClusterIP traffic
    /// from outside the CIDR of its family is masqueraded; a family without one masquerades
    /// nothing for this reason (kube-proxy's local detector, per family).
    pub cluster_cidrs: Vec<Cidr>,
}

pub struct Built {
    pub state: DesiredState,
    /// One line per skipped malformed object, address or frontend, naming its object.
    pub warnings: Vec<String>,
}
