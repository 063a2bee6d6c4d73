//! Which frontends each Service gets (contract points 1-5, 7-9, 12-16 and 21): whether a
//! Service counts at all, its ClusterIPs by family, its ports, the NodePorts on the node
//! addresses, externalIPs and LoadBalancer ingress IPs, and for each frontend the endpoint set
//! its traffic policy selects (from [`super::endpoints`]) and whether it masquerades.
use super::endpoints::{endpoint_sets, EndpointSets};
use super::node::push_unique;
use super::{FrontendSpec, NodeInfo};
use crate::objects::{ServiceObj, ServiceSpecObj, SliceView};
use crate::types::{parse_ip, Family, FrontendAddr, FrontendKind, Proto};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The addresses of `addrs` in order, without duplicates; a string that is no IP address is
/// left out with a warning naming `what`.
fn ip_list<'a>(
    addrs: impl IntoIterator<Item = &'a str>,
    what: &str,
    warnings: &mut Vec<String>,
) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for a in addrs {
        match parse_ip(a) {
            Ok(ip) => push_unique(&mut out, ip),
            Err(e) => warnings.push(format!("{what} {e}; skipped")),
        }
    }
    out
}

/// What one accepted Service contributes.
pub(super) struct ServiceOutput {
    /// At most one per family.
    pub(super) cluster_ips: Vec<IpAddr>,
    /// Port by port, in Service port order; several may claim the same address.
    pub(super) frontends: Vec<(FrontendAddr, FrontendSpec)>,
    /// Addresses and frontends left out of an otherwise good Service.
    pub(super) warnings: Vec<String>,
}

struct PortView<'a> {
    name: &'a str,
    proto: Proto,
    port: u16,
    node_port: Option<i32>,
}

/// The ClusterIPs of a Service, at most one per family: the Service's families (point 8).
/// `None` when kube-proxy would skip the Service (no ClusterIP, or "None": headless), Err when
/// an address or family is malformed.
///
/// Like kube-proxy's `GetClusterIPByFamily`: with `ipFamilies` set, family `ipFamilies[i]` has
/// the ClusterIP `clusterIPs[i]` (a family without one is not programmed). Without
/// `ipFamilies` (older objects, hand-written manifests) each address of `clusterIPs`, or of
/// `clusterIP` when `clusterIPs` is empty, brings its own family; the first of a family counts.
fn service_cluster_ips(spec: &ServiceSpecObj) -> Result<Option<Vec<IpAddr>>, String> {
    let listed = spec.cluster_ips.as_deref().unwrap_or_default();
    let ips: Vec<&String> = match (listed.is_empty(), spec.cluster_ip.as_ref()) {
        (false, _) => listed.iter().collect(),
        (true, Some(ip)) => vec![ip],
        (true, None) => vec![],
    };
    match spec.cluster_ip.as_ref().or(ips.first().copied()) {
        Some(ip) if !ip.is_empty() && ip != "None" => {}
        _ => return Ok(None),
    }
    let parse = |ip: &String| parse_ip(ip).map_err(|e| format!("clusterIP {e}"));
    let mut out: Vec<IpAddr> = Vec::new();
    match spec.ip_families.as_deref().filter(|f| !f.is_empty()) {
        Some(families) => {
            for (i, name) in families.iter().enumerate() {
                let family = Family::parse(name)
                    .ok_or_else(|| format!("ipFamilies[{i}] {name:?} is not IPv4 or IPv6"))?;
                let Some(ip) = ips.get(i) else { continue };
                let ip = parse(ip)?;
                if Family::of(ip) != family {
                    return Err(format!(
                        "clusterIP {:?} is not an {family} address (ipFamilies[{i}] is {family})",
                        ip.to_string()
                    ));
                }
                if !out.iter().any(|o| Family::of(*o) == family) {
                    out.push(ip);
                }
            }
        }
        None => {
            for ip in ips {
                let ip = parse(ip)?;
                if !out.iter().any(|o| Family::of(*o) == Family::of(ip)) {
                    out.push(ip);
                }
            }
        }
    }
    Ok(Some(out))
}

/// The frontends of one Service; `None` when kube-proxy would skip it, Err when malformed.
pub(super) fn service_frontends(
    svc: &ServiceObj,
    key: &str,
    slices: &[&SliceView],
    nodeport_addresses: &[IpAddr],
    node: &NodeInfo,
) -> Result<Option<ServiceOutput>, String> {
    let node_name = node.name.as_str();
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(None);
    };
    let type_ = spec.type_.as_deref().unwrap_or("ClusterIP");
    if svc.foreign_or_headless || type_ == "ExternalName" {
        return Ok(None);
    }
    let Some(cluster_ips) = service_cluster_ips(spec)? else {
        return Ok(None);
    };
    let families: BTreeSet<Family> = cluster_ips.iter().map(|ip| Family::of(*ip)).collect();
    let has_family = |ip: &IpAddr| families.contains(&Family::of(*ip));
    let mut ports = Vec::new();
    for sp in &spec.ports {
        ports.push(PortView {
            name: sp.name.as_deref().unwrap_or(""),
            proto: Proto::parse(sp.protocol.as_deref())?,
            port: u16::try_from(sp.port)
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("port {} is out of range", sp.port))?,
            // 0 is the API's "no nodePort" (kube-proxy tests `NodePort() != 0`).
            node_port: sp.node_port.filter(|&n| n != 0),
        });
    }

    // Point 8: externalIPs and ingress IPs of a family the Service does not have are ignored
    // (kube-proxy only logs them at a high verbosity); bad strings are warned about.
    let mut warnings = Vec::new();
    let mut external_ips = ip_list(
        spec.external_ips.iter().flatten().map(String::as_str),
        &format!("service {key}: externalIP"),
        &mut warnings,
    );
    external_ips.retain(has_family);
    let mut lb_ips = if type_ == "LoadBalancer" {
        let ingress = svc
            .ingress
            .iter()
            // Point 9: with ipMode Proxy (anything but VIP) the load balancer delivers to the
            // nodes itself; hostname-only entries have nothing to program.
            .filter(|ing| ing.ip_mode.as_deref().is_none_or(|m| m == "VIP"))
            .filter_map(|ing| ing.ip.as_deref().filter(|ip| !ip.is_empty()));
        ip_list(
            ingress,
            &format!("service {key}: loadBalancer ingress IP"),
            &mut warnings,
        )
    } else {
        Vec::new()
    };
    lb_ips.retain(has_family);
    let node_ports = matches!(type_, "NodePort" | "LoadBalancer");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    // Point 12: with a cluster CIDR of the family, ClusterIP traffic from outside it is
    // masqueraded. kube-proxy writes that rule into the chain internal traffic goes to, the
    // Cluster or the Local one, so internalTrafficPolicy does not matter.
    let has_cidr = |ip: &IpAddr| {
        node.cluster_cidrs
            .iter()
            .any(|c| c.family() == Family::of(*ip))
    };

    let mut frontends = Vec::new();
    for p in &ports {
        let name = match p.name {
            "" => key.to_string(),
            n => format!("{key}:{n}"),
        };
        let sets: BTreeMap<Family, EndpointSets> = families
            .iter()
            .map(|f| (*f, endpoint_sets(slices, *f, p.name, p.proto, node_name)))
            .collect();
        let mut add = |kind: FrontendKind, ip: IpAddr, port: u16| {
            // Point 10: the Local set when the policy that applies to this kind is Local.
            let local = if kind.is_external() {
                external_local
            } else {
                internal_local
            };
            let set = &sets[&Family::of(ip)];
            let addr = FrontendAddr {
                ip,
                port,
                proto: p.proto,
            };
            let spec = FrontendSpec {
                name: name.clone(),
                kind,
                snat: kind.is_external() && !local,
                masq_off_cluster: kind == FrontendKind::ClusterIp && has_cidr(&ip),
                drop_when_empty: local,
                backends: if local { &set.local } else { &set.cluster }.clone(),
            };
            frontends.push((addr, spec));
        };
        for &ip in &cluster_ips {
            add(FrontendKind::ClusterIp, ip, p.port);
        }
        if let (true, Some(number)) = (node_ports, p.node_port) {
            match u16::try_from(number) {
                Ok(np) => {
                    for &ip in nodeport_addresses.iter().filter(|ip| has_family(ip)) {
                        add(FrontendKind::NodePort, ip, np);
                    }
                }
                Err(_) => warnings.push(format!(
                    "service {key}: nodePort {number} of port {}/{} is out of range; skipped",
                    p.port, p.proto
                )),
            }
        }
        for &ip in &external_ips {
            add(FrontendKind::ExternalIp, ip, p.port);
        }
        for &ip in &lb_ips {
            add(FrontendKind::LoadBalancer, ip, p.port);
        }
    }
    Ok(Some(ServiceOutput {
        cluster_ips,
        frontends,
        warnings,
    }))
}
