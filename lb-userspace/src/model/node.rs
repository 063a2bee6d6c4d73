//! The node's addresses (contract point 21): the ones NodePorts are served on, as
//! `--nodeport-addresses` selects them, and the ones masquerading uses (the first of each
//! family of the default selection, whatever `--nodeport-addresses` says).
//!
//! - Default: the InternalIP and ExternalIP addresses of the Node object (in its order), else
//!   the external interfaces' addresses ([`NodeInfo::fallback_addresses`]).
//! - `primary`: the node's primary address of each family, as kube-proxy picks it from the
//!   Node object: the first InternalIP, else the first ExternalIP, of the first address's
//!   family, then the same of the other family. Without a Node object or a usable address
//!   there, the first external interface address of each family.
//! - CIDRs: every address of the node ([`NodeInfo::local_addresses`]: all interfaces of its
//!   network namespace) that falls in one of the CIDRs. Loopback addresses never count: the
//!   datapath is not attached to `lo` (kube-proxy's nftables mode serves no localhost NodePorts
//!   either).
//!
//! Never loopback, unspecified or IPv6 link-local.
use super::NodeInfo;
use crate::types::{parse_ip, Family, NodePortAddresses};
use k8s_openapi::api::core::v1::Node;
use std::borrow::Borrow;
use std::net::IpAddr;

/// The node's addresses, as the model uses them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct NodeAddresses {
    /// The default selection: the first address of each family is its SNAT address
    /// ([`super::DesiredState::node_addresses`]).
    pub(super) node: Vec<IpAddr>,
    /// Where NodePorts are served.
    pub(super) nodeports: Vec<IpAddr>,
}

/// Appends `ip` unless `list` has it.
pub(super) fn push_unique(list: &mut Vec<IpAddr>, ip: IpAddr) {
    if !list.contains(&ip) {
        list.push(ip);
    }
}

/// An address NodePorts can be served on: not loopback or unspecified, and for IPv6 not
/// link-local (fe80::/10: only meaningful with an interface scope).
pub(super) fn usable_node_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified(),
        IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unspecified() && !v6.is_unicast_link_local(),
    }
}

/// The usable addresses of `list` in order, without duplicates.
fn usable(list: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for ip in list.into_iter().filter(usable_node_address) {
        push_unique(&mut out, ip);
    }
    out
}

/// The first address of `list`, then the first of the other family (kube-proxy's
/// `GetNodeHostIPs`).
fn first_of_each_family(list: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    for &ip in list {
        if !out.iter().any(|o| Family::of(*o) == Family::of(ip)) {
            out.push(ip);
        }
    }
    out
}

/// The node's addresses (see the module docs), from the Node object named `node.name` among
/// `nodes`; a Node address that is no IP address is left out with a warning.
pub(super) fn node_addresses<N: Borrow<Node>>(
    nodes: &[N],
    node: &NodeInfo,
    warnings: &mut Vec<String>,
) -> NodeAddresses {
    // (type, address) of the Node object's InternalIP and ExternalIP addresses, in its order.
    let mut listed: Vec<(bool, IpAddr)> = Vec::new();
    if let Some(obj) = nodes
        .iter()
        .map(Borrow::borrow)
        .find(|n| n.metadata.name.as_deref() == Some(node.name.as_str()))
    {
        let addrs = obj.status.iter().flat_map(|s| s.addresses.iter().flatten());
        for a in addrs.filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP") {
            match parse_ip(&a.address) {
                Ok(ip) => listed.push((a.type_ == "InternalIP", ip)),
                Err(e) => warnings.push(format!("node {}: address {e}; skipped", node.name)),
            }
        }
    }
    let mut own = usable(listed.iter().map(|(_, ip)| *ip));
    if own.is_empty() {
        own = usable(node.fallback_addresses.iter().copied());
    }
    let nodeports = match &node.nodeport_addresses {
        NodePortAddresses::Default => own.clone(),
        NodePortAddresses::Primary => {
            let internal = listed.iter().filter(|(i, _)| *i).map(|(_, ip)| *ip);
            let external = listed.iter().filter(|(i, _)| !*i).map(|(_, ip)| *ip);
            let candidates = usable(internal.chain(external));
            match candidates.is_empty() {
                false => first_of_each_family(&candidates),
                true => first_of_each_family(&usable(node.fallback_addresses.iter().copied())),
            }
        }
        NodePortAddresses::Cidrs(cidrs) => {
            let within = node
                .local_addresses
                .iter()
                .filter(|ip| cidrs.iter().any(|c| c.contains(ip)));
            let found = usable(within.copied());
            if found.is_empty() {
                let list: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
                warnings.push(format!(
                    "nodePortAddresses: no address of this node is within {}; NodePorts are \
                     served on none",
                    list.join(", ")
                ));
            }
            found
        }
    };
    NodeAddresses {
        node: own,
        nodeports,
    }
}
