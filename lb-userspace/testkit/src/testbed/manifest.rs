//! YAML builders for the manifests the tests and the demo write.
//!
//! [`service`] and [`slice()`] write the simple single-port-list cases; [`Service`] and [`Slice`]
//! are builders for everything else: Service types, dual stack (`ipFamilies`,
//! `ipFamilyPolicy`, `clusterIPs`), NodePorts, externalIPs, LoadBalancer ingress, traffic
//! policies, labels, and EndpointSlices of either address type with `nodeName`s. [`node`]
//! writes a Node object with its addresses.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use podlb::types::Family;

/// A ClusterIP Service with `(name, port, protocol)` ports. An IPv6 `cluster_ip` makes a
/// single-stack IPv6 Service (`ipFamilies: [IPv6]`, `clusterIPs`); an IPv4 one writes the
/// same YAML as always (`clusterIP` only).
pub fn service(name: &str, cluster_ip: &str, ports: &[(&str, u16, &str)]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n\
         spec:\n  type: ClusterIP\n  clusterIP: {cluster_ip}\n"
    );
    if let Ok(IpAddr::V6(_)) = cluster_ip.parse::<IpAddr>() {
        s += &format!(
            "  clusterIPs: [\"{cluster_ip}\"]\n  ipFamilies: [IPv6]\n  \
             ipFamilyPolicy: SingleStack\n"
        );
    }
    s += "  ports:\n";
    for (pname, port, proto) in ports {
        s += &format!("  - {{name: {pname}, port: {port}, protocol: {proto}, targetPort: 9999}}\n");
    }
    s
}

/// A dual-stack ClusterIP Service (`ipFamilyPolicy: RequireDualStack`, `ipFamilies` in the
/// order of `cluster_ips`, the first being `clusterIP`) with `(name, port, protocol)` ports.
pub fn dual_stack_service(
    name: &str,
    cluster_ips: [IpAddr; 2],
    ports: &[(&str, u16, &str)],
) -> String {
    let mut svc = Service::new(name, "ClusterIP")
        .cluster_ip(cluster_ips[0])
        .cluster_ip(cluster_ips[1]);
    for &(pname, port, proto) in ports {
        svc = svc.port(pname, port, proto, 9999);
    }
    svc.yaml()
}

/// An IPv4 EndpointSlice for Service `service`, with `(name, port, protocol)` ports and
/// `(address, ready)` endpoints.
pub fn slice(
    service: &str,
    slice: &str,
    ports: &[(&str, u16, &str)],
    endpoints: &[(Ipv4Addr, bool)],
) -> String {
    let mut s = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  \
         namespace: default\n  labels:\n    kubernetes.io/service-name: {service}\naddressType: IPv4\nports:\n"
    );
    for (pname, port, proto) in ports {
        s += &format!("- {{name: {pname}, port: {port}, protocol: {proto}}}\n");
    }
    s += "endpoints:\n";
    for (ip, ready) in endpoints {
        s += &format!("- addresses: [\"{ip}\"]\n  conditions: {{ready: {ready}}}\n");
    }
    if endpoints.is_empty() {
        s += "[]\n";
    }
    s
}

/// [`slice()`] with `addressType: IPv6`.
pub fn slice6(
    service: &str,
    slice: &str,
    ports: &[(&str, u16, &str)],
    endpoints: &[(Ipv6Addr, bool)],
) -> String {
    let mut b = Slice::new(service, slice, Family::V6);
    for &(pname, port, proto) in ports {
        b = b.port(pname, port, proto);
    }
    for &(ip, ready) in endpoints {
        b = b.endpoint(ip, ready);
    }
    b.yaml()
}

/// A Node object named `name` whose `InternalIP`s are `addresses` (one per family on a
/// dual-stack node), with a `Hostname` address.
pub fn node(name: &str, addresses: &[IpAddr]) -> String {
    let mut s =
        format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\nstatus:\n  addresses:\n");
    for a in addresses {
        s += &format!("  - {{type: InternalIP, address: \"{a}\"}}\n");
    }
    s += &format!("  - {{type: Hostname, address: {name}}}\n");
    s
}

/// One entry of a Service's `spec.ports`.
#[derive(Debug, Clone)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub protocol: String,
    /// `targetPort` (podlb, like kube-proxy, never reads it).
    pub target: String,
    pub node_port: Option<u16>,
}

/// A Service manifest builder.
///
/// ```
/// # use testkit::testbed::manifest::Service;
/// let yaml = Service::new("web", "NodePort")
///     .cluster_ip("10.96.0.10".parse::<std::net::IpAddr>().unwrap())
///     .cluster_ip("fd00:96::10".parse::<std::net::IpAddr>().unwrap())
///     .node_port("http", 80, "TCP", 8080, 30080)
///     .yaml();
/// assert!(yaml.contains("ipFamilies: [IPv4, IPv6]"));
/// assert!(yaml.contains("ipFamilyPolicy: RequireDualStack"));
/// ```
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub type_: String,
    /// `clusterIPs` (the first is also `clusterIP`); empty: no `clusterIP` field.
    pub cluster_ips: Vec<IpAddr>,
    /// Written as `clusterIP` instead of the addresses when set (e.g. `None`).
    pub cluster_ip_literal: Option<String>,
    /// `ipFamilies`; `None`: the families of `cluster_ips`, in order.
    pub ip_families: Option<Vec<Family>>,
    /// `ipFamilyPolicy`; `None`: SingleStack for one family, RequireDualStack for two.
    pub ip_family_policy: Option<String>,
    pub ports: Vec<ServicePort>,
    pub external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress`: (ip, ipMode).
    pub ingress: Vec<(IpAddr, Option<String>)>,
    pub external_traffic_policy: Option<String>,
    pub internal_traffic_policy: Option<String>,
    pub labels: Vec<(String, String)>,
    pub external_name: Option<String>,
}

impl Service {
    /// A Service of `type_` (ClusterIP, NodePort, LoadBalancer, ExternalName) in namespace
    /// `default`, without addresses or ports yet.
    pub fn new(name: &str, type_: &str) -> Service {
        Service {
            name: name.to_string(),
            type_: type_.to_string(),
            cluster_ips: Vec::new(),
            cluster_ip_literal: None,
            ip_families: None,
            ip_family_policy: None,
            ports: Vec::new(),
            external_ips: Vec::new(),
            ingress: Vec::new(),
            external_traffic_policy: None,
            internal_traffic_policy: None,
            labels: Vec::new(),
            external_name: None,
        }
    }

    /// Appends a cluster IP (the first one is the primary `clusterIP`).
    pub fn cluster_ip(mut self, ip: impl Into<IpAddr>) -> Service {
        self.cluster_ips.push(ip.into());
        self
    }

    /// `clusterIP: {s}` verbatim (e.g. `None` for a headless Service), no `clusterIPs`.
    pub fn cluster_ip_literal(mut self, s: &str) -> Service {
        self.cluster_ip_literal = Some(s.to_string());
        self
    }

    /// Sets `ipFamilies` explicitly.
    pub fn ip_families(mut self, families: &[Family]) -> Service {
        self.ip_families = Some(families.to_vec());
        self
    }

    /// Sets `ipFamilyPolicy` (SingleStack, PreferDualStack, RequireDualStack).
    pub fn ip_family_policy(mut self, policy: &str) -> Service {
        self.ip_family_policy = Some(policy.to_string());
        self
    }

    /// A port with a numeric `targetPort`.
    pub fn port(self, name: &str, port: u16, protocol: &str, target: u16) -> Service {
        self.port_named(name, port, protocol, &target.to_string(), None)
    }

    /// A port with a NodePort.
    pub fn node_port(
        self,
        name: &str,
        port: u16,
        protocol: &str,
        target: u16,
        node_port: u16,
    ) -> Service {
        self.port_named(name, port, protocol, &target.to_string(), Some(node_port))
    }

    /// A port with any `targetPort` (a number or a name) and an optional NodePort.
    pub fn port_named(
        mut self,
        name: &str,
        port: u16,
        protocol: &str,
        target: &str,
        node_port: Option<u16>,
    ) -> Service {
        self.ports.push(ServicePort {
            name: name.to_string(),
            port,
            protocol: protocol.to_string(),
            target: target.to_string(),
            node_port,
        });
        self
    }

    pub fn external_ip(mut self, ip: impl Into<IpAddr>) -> Service {
        self.external_ips.push(ip.into());
        self
    }

    /// A `status.loadBalancer.ingress` entry with an optional `ipMode`.
    pub fn ingress(mut self, ip: impl Into<IpAddr>, ip_mode: Option<&str>) -> Service {
        self.ingress.push((ip.into(), ip_mode.map(String::from)));
        self
    }

    pub fn external_traffic_policy(mut self, policy: &str) -> Service {
        self.external_traffic_policy = Some(policy.to_string());
        self
    }

    pub fn internal_traffic_policy(mut self, policy: &str) -> Service {
        self.internal_traffic_policy = Some(policy.to_string());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Service {
        self.labels.push((key.to_string(), value.to_string()));
        self
    }

    pub fn external_name(mut self, name: &str) -> Service {
        self.external_name = Some(name.to_string());
        self
    }

    /// The families written as `ipFamilies` (explicit, or those of the cluster IPs).
    pub fn families(&self) -> Vec<Family> {
        self.ip_families.clone().unwrap_or_else(|| {
            let mut f: Vec<Family> = Vec::new();
            for ip in &self.cluster_ips {
                let fam = Family::of(*ip);
                if !f.contains(&fam) {
                    f.push(fam);
                }
            }
            f
        })
    }

    pub fn yaml(&self) -> String {
        let mut s = format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {}\n  namespace: default\n",
            self.name
        );
        if !self.labels.is_empty() {
            s += "  labels:\n";
            for (k, v) in &self.labels {
                s += &format!("    {k}: \"{v}\"\n");
            }
        }
        s += &format!("spec:\n  type: {}\n", self.type_);
        if let Some(lit) = &self.cluster_ip_literal {
            s += &format!("  clusterIP: {lit}\n");
        } else if let Some(first) = self.cluster_ips.first() {
            let ips: Vec<String> = self
                .cluster_ips
                .iter()
                .map(|i| format!("\"{i}\""))
                .collect();
            s += &format!(
                "  clusterIP: \"{first}\"\n  clusterIPs: [{}]\n",
                ips.join(", ")
            );
        }
        let families = self.families();
        if !families.is_empty() {
            let names: Vec<&str> = families.iter().map(|f| f.name()).collect();
            s += &format!("  ipFamilies: [{}]\n", names.join(", "));
        }
        let policy = self
            .ip_family_policy
            .clone()
            .or_else(|| match families.len() {
                0 => None,
                1 => Some("SingleStack".into()),
                _ => Some("RequireDualStack".into()),
            });
        if let Some(p) = policy {
            s += &format!("  ipFamilyPolicy: {p}\n");
        }
        if let Some(n) = &self.external_name {
            s += &format!("  externalName: {n}\n");
        }
        if let Some(p) = &self.external_traffic_policy {
            s += &format!("  externalTrafficPolicy: {p}\n");
        }
        if let Some(p) = &self.internal_traffic_policy {
            s += &format!("  internalTrafficPolicy: {p}\n");
        }
        if !self.external_ips.is_empty() {
            let ips: Vec<String> = self
                .external_ips
                .iter()
                .map(|i| format!("\"{i}\""))
                .collect();
            s += &format!("  externalIPs: [{}]\n", ips.join(", "));
        }
        if !self.ports.is_empty() {
            s += "  ports:\n";
            for p in &self.ports {
                s += &format!(
                    "  - {{name: {}, port: {}, protocol: {}, targetPort: {}",
                    p.name, p.port, p.protocol, p.target
                );
                if let Some(np) = p.node_port {
                    s += &format!(", nodePort: {np}");
                }
                s += "}\n";
            }
        }
        if !self.ingress.is_empty() {
            s += "status:\n  loadBalancer:\n    ingress:\n";
            for (ip, mode) in &self.ingress {
                s += &format!("    - ip: \"{ip}\"\n");
                if let Some(m) = mode {
                    s += &format!("      ipMode: {m}\n");
                }
            }
        }
        s
    }
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone)]
pub struct SliceEndpoint {
    pub address: IpAddr,
    pub ready: bool,
    pub node_name: Option<String>,
}

/// An EndpointSlice manifest builder (`addressType` IPv4 or IPv6).
#[derive(Debug, Clone)]
pub struct Slice {
    pub service: String,
    pub name: String,
    pub family: Family,
    /// (name, port, protocol)
    pub ports: Vec<(String, u16, String)>,
    pub endpoints: Vec<SliceEndpoint>,
    pub labels: Vec<(String, String)>,
}

impl Slice {
    /// EndpointSlice `name` of Service `service` (label `kubernetes.io/service-name`) with
    /// `addressType` `family`.
    pub fn new(service: &str, name: &str, family: Family) -> Slice {
        Slice {
            service: service.to_string(),
            name: name.to_string(),
            family,
            ports: Vec::new(),
            endpoints: Vec::new(),
            labels: Vec::new(),
        }
    }

    pub fn port(mut self, name: &str, port: u16, protocol: &str) -> Slice {
        self.ports
            .push((name.to_string(), port, protocol.to_string()));
        self
    }

    /// An endpoint with `ready` (serving = ready, not terminating) and no node name.
    pub fn endpoint(mut self, ip: impl Into<IpAddr>, ready: bool) -> Slice {
        self.endpoints.push(SliceEndpoint {
            address: ip.into(),
            ready,
            node_name: None,
        });
        self
    }

    /// A ready endpoint on node `node` (`nodeName`).
    pub fn endpoint_on(mut self, ip: impl Into<IpAddr>, node: &str) -> Slice {
        self.endpoints.push(SliceEndpoint {
            address: ip.into(),
            ready: true,
            node_name: Some(node.to_string()),
        });
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Slice {
        self.labels.push((key.to_string(), value.to_string()));
        self
    }

    pub fn yaml(&self) -> String {
        let mut s = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {}\n  \
             namespace: default\n  labels:\n    kubernetes.io/service-name: {}\n",
            self.name, self.service
        );
        for (k, v) in &self.labels {
            s += &format!("    {k}: \"{v}\"\n");
        }
        s += &format!("addressType: {}\nports:\n", self.family.name());
        for (name, port, proto) in &self.ports {
            s += &format!("- {{name: {name}, port: {port}, protocol: {proto}}}\n");
        }
        if self.endpoints.is_empty() {
            s += "endpoints: []\n";
        } else {
            s += "endpoints:\n";
            for e in &self.endpoints {
                s += &format!(
                    "- addresses: [\"{}\"]\n  conditions: {{ready: {}}}\n",
                    e.address, e.ready
                );
                if let Some(n) = &e.node_name {
                    s += &format!("  nodeName: {n}\n");
                }
            }
        }
        s
    }
}
