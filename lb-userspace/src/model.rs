//! Desired IPv4 ClusterIP datapath state computed from Kubernetes objects.
//!
//! Pure functions, no I/O. The rules are kube-proxy's (kube-proxy-contract.md points 1-6 and 25):
//! which Services and EndpointSlices count, how slice ports are matched to Service ports, and
//! which endpoints become backends.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Objects carrying this label (any value) belong to another proxy.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Objects carrying this label (any value) are headless.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// The only link from an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    /// Parses a Kubernetes protocol name; `None` means TCP (the API default).
    pub fn parse(s: Option<&str>) -> Result<Proto, String> {
        match s.unwrap_or("TCP") {
            "TCP" => Ok(Proto::Tcp),
            "UDP" => Ok(Proto::Udp),
            "SCTP" => Ok(Proto::Sctp),
            other => Err(format!("unknown protocol {other:?}")),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendAddr {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for FrontendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.ip, self.port, self.proto)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    pub ip: Ipv4Addr,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendSpec {
    /// "namespace/name:portname", or "namespace/name" when the port has no name.
    pub name: String,
    /// Sorted and deduplicated; empty when the Service has no usable endpoints.
    pub backends: Vec<BackendAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub frontends: BTreeMap<FrontendAddr, FrontendSpec>,
}

pub struct NodeInfo {
    pub name: String,
}

pub struct Built {
    pub state: DesiredState,
    /// One line per skipped malformed object, naming it.
    pub warnings: Vec<String>,
}

/// "namespace/name"; a missing namespace counts as "default".
pub fn object_key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("")
    )
}

fn has_label(meta: &ObjectMeta, label: &str) -> bool {
    meta.labels.as_ref().is_some_and(|l| l.contains_key(label))
}

fn foreign_or_headless(meta: &ObjectMeta) -> bool {
    has_label(meta, LABEL_SERVICE_PROXY_NAME) || has_label(meta, LABEL_HEADLESS)
}

#[derive(Clone, Copy)]
struct Conditions {
    ready: bool,
    serving: bool,
    terminating: bool,
}

struct SlicePort {
    name: String,
    proto: Proto,
    port: u16,
}

/// A validated IPv4 EndpointSlice reduced to what the model reads.
struct SliceView {
    ports: Vec<SlicePort>,
    endpoints: Vec<(Ipv4Addr, Conditions)>,
}

impl SliceView {
    fn new(slice: &EndpointSlice) -> Result<SliceView, String> {
        let mut ports = Vec::new();
        for p in slice.ports.iter().flatten() {
            let Some(number) = p.port else { continue };
            let port = u16::try_from(number)
                .ok()
                .filter(|&n| n != 0)
                .ok_or_else(|| format!("port {number} is out of range"))?;
            let proto = Proto::parse(p.protocol.as_deref())?;
            let name = p.name.clone().unwrap_or_default();
            ports.push(SlicePort { name, proto, port });
        }
        let mut endpoints = Vec::new();
        for ep in &slice.endpoints {
            let Some(first) = ep.addresses.first() else {
                continue;
            };
            if let Some(bad) = ep.addresses.iter().find(|a| a.parse::<Ipv4Addr>().is_err()) {
                return Err(format!("address {bad:?} is not an IPv4 address"));
            }
            let c = ep.conditions.as_ref();
            let conditions = Conditions {
                ready: c.and_then(|c| c.ready).unwrap_or(true),
                serving: c.and_then(|c| c.serving).unwrap_or(true),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
            };
            endpoints.push((first.parse().expect("validated above"), conditions));
        }
        Ok(SliceView { ports, endpoints })
    }
}

/// The Service ("namespace/name") an EndpointSlice feeds, if the model should use it at all.
fn slice_service(slice: &EndpointSlice) -> Option<String> {
    let meta = &slice.metadata;
    if foreign_or_headless(meta) || slice.address_type != "IPv4" {
        return None;
    }
    let service = meta.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    (!service.is_empty()).then(|| {
        let ns = meta.namespace.as_deref().unwrap_or("default");
        format!("{ns}/{service}")
    })
}

/// kube-proxy's cluster endpoint set for one Service port: ready endpoints, else the ones
/// that are serving and terminating. A non-terminating endpoint wins over a duplicate.
fn backends(slices: &[SliceView], port_name: &str, proto: Proto) -> Vec<BackendAddr> {
    let mut seen: BTreeMap<BackendAddr, Conditions> = BTreeMap::new();
    for slice in slices {
        let Some(sp) = slice
            .ports
            .iter()
            .find(|p| p.name == port_name && p.proto == proto)
        else {
            continue;
        };
        for &(ip, cond) in &slice.endpoints {
            match seen.entry(BackendAddr { ip, port: sp.port }) {
                Entry::Vacant(v) => {
                    v.insert(cond);
                }
                Entry::Occupied(mut o) if o.get().terminating && !cond.terminating => {
                    o.insert(cond);
                }
                Entry::Occupied(_) => {}
            }
        }
    }
    let pick = |f: fn(&Conditions) -> bool| -> Vec<BackendAddr> {
        seen.iter().filter(|(_, c)| f(c)).map(|(a, _)| *a).collect()
    };
    let ready = pick(|c| c.ready);
    if ready.is_empty() {
        pick(|c| c.serving && c.terminating)
    } else {
        ready
    }
}

/// The frontends of one Service (empty when kube-proxy would skip it); Err when malformed.
fn service_frontends(
    svc: &Service,
    key: &str,
    slices: &[SliceView],
) -> Result<BTreeMap<FrontendAddr, FrontendSpec>, String> {
    let mut out = BTreeMap::new();
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(out);
    };
    if foreign_or_headless(&svc.metadata) || spec.type_.as_deref() == Some("ExternalName") {
        return Ok(out);
    }
    let cluster_ip = match spec.cluster_ip.as_ref() {
        Some(ip) if !ip.is_empty() && ip != "None" => ip,
        _ => return Ok(out),
    };
    let ips = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips,
        _ => std::slice::from_ref(cluster_ip),
    };
    let mut v4 = Vec::new();
    for ip in ips {
        match ip.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => v4.push(ip),
            Ok(IpAddr::V6(_)) => {}
            Err(_) => return Err(format!("clusterIP {ip:?} is not an IPv4 address")),
        }
    }
    for sp in spec.ports.iter().flatten() {
        let proto = Proto::parse(sp.protocol.as_deref())?;
        let port = u16::try_from(sp.port)
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port {} is out of range", sp.port))?;
        let port_name = sp.name.as_deref().unwrap_or("");
        let name = match port_name {
            "" => key.to_string(),
            n => format!("{key}:{n}"),
        };
        let backends = backends(slices, port_name, proto);
        for &ip in &v4 {
            let addr = FrontendAddr { ip, port, proto };
            let spec = FrontendSpec {
                name: name.clone(),
                backends: backends.clone(),
            };
            if out.insert(addr, spec).is_some() {
                return Err(format!("frontend {addr} is listed twice"));
            }
        }
    }
    Ok(out)
}

/// Computes the desired state. Malformed objects are skipped with a warning; objects are
/// processed in "namespace/name" order, so when two Services claim the same frontend the
/// first one in that order keeps it.
pub fn build(services: &[Service], slices: &[EndpointSlice], _node: &NodeInfo) -> Built {
    let mut warnings = Vec::new();

    let mut sorted: Vec<&EndpointSlice> = slices.iter().collect();
    sorted.sort_by_cached_key(|s| object_key(&s.metadata));
    let mut by_service: HashMap<String, Vec<SliceView>> = HashMap::new();
    for slice in sorted {
        let Some(service) = slice_service(slice) else {
            continue;
        };
        match SliceView::new(slice) {
            Ok(view) => by_service.entry(service).or_default().push(view),
            Err(e) => warnings.push(format!(
                "endpointslice {}: {e}",
                object_key(&slice.metadata)
            )),
        }
    }

    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by_cached_key(|s| object_key(&s.metadata));
    let mut state = DesiredState::default();
    for svc in sorted {
        let key = object_key(&svc.metadata);
        let slices = by_service.get(&key).map_or(&[][..], Vec::as_slice);
        let frontends = match service_frontends(svc, &key, slices) {
            Ok(f) => f,
            Err(e) => {
                warnings.push(format!("service {key}: {e}"));
                continue;
            }
        };
        if let Some((addr, other)) = frontends
            .keys()
            .find_map(|a| state.frontends.get(a).map(|o| (a, &o.name)))
        {
            warnings.push(format!(
                "service {key}: frontend {addr} is already used by {other}"
            ));
            continue;
        }
        state.frontends.extend(frontends);
    }
    Built { state, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn objects(yaml: &str) -> (Vec<Service>, Vec<EndpointSlice>) {
        let (mut services, mut slices) = (Vec::new(), Vec::new());
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            match v["kind"].as_str() {
                Some("Service") => services.push(serde_yaml::from_value(v).unwrap()),
                Some("EndpointSlice") => slices.push(serde_yaml::from_value(v).unwrap()),
                other => panic!("unexpected kind {other:?}"),
            }
        }
        (services, slices)
    }

    fn run(yaml: &str) -> Built {
        let (services, slices) = objects(yaml);
        build(
            &services,
            &slices,
            &NodeInfo {
                name: "node-a".into(),
            },
        )
    }

    fn fe(ip: &str, port: u16, proto: Proto) -> FrontendAddr {
        FrontendAddr {
            ip: ip.parse().unwrap(),
            port,
            proto,
        }
    }

    fn be(s: &str) -> BackendAddr {
        let (ip, port) = s.split_once(':').unwrap();
        BackendAddr {
            ip: ip.parse().unwrap(),
            port: port.parse().unwrap(),
        }
    }

    fn bes(list: &[&str]) -> Vec<BackendAddr> {
        list.iter().map(|s| be(s)).collect()
    }

    /// Backends of the frontend, panicking when it is missing.
    fn backends_of(b: &Built, ip: &str, port: u16, proto: Proto) -> Vec<BackendAddr> {
        b.state.frontends[&fe(ip, port, proto)].backends.clone()
    }

    const WEB: &str = r#"
kind: Service
apiVersion: v1
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: metrics, port: 9090, targetPort: metrics}
"#;

    #[test]
    fn proto_parse_and_number() {
        assert_eq!(Proto::parse(None), Ok(Proto::Tcp));
        assert_eq!(Proto::parse(Some("UDP")).map(Proto::number), Ok(17));
        assert_eq!(Proto::parse(Some("SCTP")).map(Proto::number), Ok(132));
        assert_eq!(Proto::Tcp.number(), 6);
        assert!(Proto::parse(Some("tcp")).is_err());
        assert_eq!(
            fe("10.0.0.1", 53, Proto::Udp).to_string(),
            "10.0.0.1:53/UDP"
        );
    }

    #[test]
    fn named_ports_resolved_per_slice_and_target_port_ignored() {
        let b = run(&format!(
            r#"{WEB}
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: web-a, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports:
- {{name: http, port: 8080}}
- {{name: metrics, port: 9100}}
endpoints:
- addresses: [10.0.1.1]
---
kind: EndpointSlice
apiVersion: discovery.k8s.io/v1
metadata: {{name: web-b, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports:
- {{name: http, port: 8081}}
- {{name: metrics, port: 9101}}
endpoints:
- addresses: [10.0.2.1]
"#
        ));
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(b.state.frontends.len(), 2);
        let http = &b.state.frontends[&fe("10.96.0.10", 80, Proto::Tcp)];
        assert_eq!(http.name, "default/web:http");
        assert_eq!(http.backends, bes(&["10.0.1.1:8080", "10.0.2.1:8081"]));
        assert_eq!(
            backends_of(&b, "10.96.0.10", 9090, Proto::Tcp),
            bes(&["10.0.1.1:9100", "10.0.2.1:9101"])
        );
    }

    #[test]
    fn unnamed_port_matches_missing_or_empty_name_and_protocol() {
        let b = run(r#"
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.53
  ports:
  - {port: 53, protocol: UDP}
---
kind: EndpointSlice
metadata: {name: dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports:
- {port: 5353}
- {name: "", port: 5300, protocol: UDP}
endpoints:
- addresses: [10.0.0.5]
---
kind: EndpointSlice
metadata: {name: dns-2, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports:
- {protocol: UDP, port: 5301}
- {name: other, protocol: UDP, port: 9}
- {protocol: UDP}
endpoints:
- addresses: [10.0.0.6]
"#);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        let f = &b.state.frontends[&fe("10.96.0.53", 53, Proto::Udp)];
        assert_eq!(f.name, "kube-system/dns");
        assert_eq!(f.backends, bes(&["10.0.0.5:5300", "10.0.0.6:5301"]));
    }

    #[test]
    fn same_port_tcp_and_udp_are_two_frontends() {
        let b = run(r#"
kind: Service
metadata: {name: dns, namespace: kube-system}
spec:
  clusterIP: 10.96.0.53
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
  - {name: sctp, port: 53, protocol: SCTP}
---
kind: EndpointSlice
metadata: {name: dns-1, namespace: kube-system, labels: {kubernetes.io/service-name: dns}}
addressType: IPv4
ports:
- {name: dns, port: 1053, protocol: UDP}
- {name: dns-tcp, port: 2053, protocol: TCP}
- {name: sctp, port: 3053, protocol: SCTP}
endpoints:
- addresses: [10.0.0.5]
"#);
        assert_eq!(b.state.frontends.len(), 3);
        assert_eq!(
            backends_of(&b, "10.96.0.53", 53, Proto::Udp),
            bes(&["10.0.0.5:1053"])
        );
        assert_eq!(
            backends_of(&b, "10.96.0.53", 53, Proto::Tcp),
            bes(&["10.0.0.5:2053"])
        );
        assert_eq!(
            backends_of(&b, "10.96.0.53", 53, Proto::Sctp),
            bes(&["10.0.0.5:3053"])
        );
    }

    #[test]
    fn slice_port_must_match_protocol_too() {
        let b = run(r#"
kind: Service
metadata: {name: s}
spec:
  clusterIP: 10.96.0.1
  ports: [{name: p, port: 80}]
---
kind: EndpointSlice
metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{name: p, port: 8080, protocol: UDP}]
endpoints: [{addresses: [10.0.0.1]}]
"#);
        assert_eq!(backends_of(&b, "10.96.0.1", 80, Proto::Tcp), vec![]);
    }

    #[test]
    fn readiness_and_terminating_fallback() {
        let svc = r#"
kind: Service
metadata: {name: s}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8080}]
endpoints:
"#;
        // ready: nil counts as ready; not-ready endpoints are excluded.
        let b = run(&format!(
            "{svc}
- {{addresses: [10.0.0.1]}}
- {{addresses: [10.0.0.2], conditions: {{ready: true}}}}
- {{addresses: [10.0.0.3], conditions: {{ready: false}}}}
- {{addresses: [10.0.0.4], conditions: {{ready: false, serving: true, terminating: true}}}}
- {{addresses: []}}
"
        ));
        assert_eq!(
            backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
            bes(&["10.0.0.1:8080", "10.0.0.2:8080"])
        );
        // No ready endpoint: fall back to serving+terminating (serving nil = true).
        let b = run(&format!(
            "{svc}
- {{addresses: [10.0.0.3], conditions: {{ready: false}}}}
- {{addresses: [10.0.0.4], conditions: {{ready: false, serving: true, terminating: true}}}}
- {{addresses: [10.0.0.5], conditions: {{ready: false, terminating: true}}}}
- {{addresses: [10.0.0.6], conditions: {{ready: false, serving: false, terminating: true}}}}
"
        ));
        assert_eq!(
            backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
            bes(&["10.0.0.4:8080", "10.0.0.5:8080"])
        );
        // Nothing usable: the frontend stays, with no backends.
        let b = run(&format!(
            "{svc}
- {{addresses: [10.0.0.3], conditions: {{ready: false}}}}
- {{addresses: [10.0.0.6], conditions: {{ready: false, serving: false, terminating: true}}}}
"
        ));
        assert_eq!(backends_of(&b, "10.96.0.1", 80, Proto::Tcp), vec![]);
    }

    #[test]
    fn uses_first_address_only() {
        let b = run(r#"
kind: Service
metadata: {name: s}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: s-1, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1, 10.0.0.2]}]
"#);
        assert_eq!(
            backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
            bes(&["10.0.0.1:8080"])
        );
    }

    #[test]
    fn duplicate_ip_non_terminating_wins_and_backends_deduplicated() {
        let slice = |name: &str, eps: &str| {
            format!(
                "---
kind: EndpointSlice
metadata: {{name: {name}, labels: {{kubernetes.io/service-name: s}}}}
addressType: IPv4
ports: [{{port: 8080}}]
endpoints: {eps}
"
            )
        };
        let svc = "kind: Service
metadata: {name: s}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
";
        // The terminating (not ready) copy comes first; the ready copy must win.
        let b = run(&format!(
            "{svc}{}{}",
            slice("s-1", "[{addresses: [10.0.0.9], conditions: {ready: false, terminating: true}}, {addresses: [10.0.0.1]}]"),
            slice("s-2", "[{addresses: [10.0.0.9]}, {addresses: [10.0.0.1]}]"),
        ));
        assert_eq!(
            backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
            bes(&["10.0.0.1:8080", "10.0.0.9:8080"])
        );
        // Reverse order: the non-terminating one is kept.
        let b = run(&format!(
            "{svc}{}{}",
            slice("s-1", "[{addresses: [10.0.0.9]}]"),
            slice(
                "s-2",
                "[{addresses: [10.0.0.9], conditions: {ready: false, terminating: true}}]"
            ),
        ));
        assert_eq!(
            backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
            bes(&["10.0.0.9:8080"])
        );
    }

    #[test]
    fn skip_labels_headless_external_name() {
        let b = run(r#"
kind: Service
metadata: {name: other-proxy, labels: {service.kubernetes.io/service-proxy-name: foo}}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: Service
metadata: {name: labelled-headless, labels: {service.kubernetes.io/headless: ""}}
spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
---
kind: Service
metadata: {name: headless}
spec: {clusterIP: None, ports: [{port: 80}]}
---
kind: Service
metadata: {name: no-ip}
spec: {clusterIP: "", ports: [{port: 80}]}
---
kind: Service
metadata: {name: no-spec}
---
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.com, clusterIP: 10.96.0.3, ports: [{port: 80}]}
---
kind: Service
metadata: {name: ok}
spec: {clusterIP: 10.96.0.4, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata:
  name: ok-foreign
  labels: {kubernetes.io/service-name: ok, service.kubernetes.io/service-proxy-name: foo}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
---
kind: EndpointSlice
metadata:
  name: ok-headless
  labels: {kubernetes.io/service-name: ok, service.kubernetes.io/headless: ""}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.2]}]
---
kind: EndpointSlice
metadata: {name: ok-good, labels: {kubernetes.io/service-name: ok}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.3]}]
"#);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(
            b.state.frontends.keys().copied().collect::<Vec<_>>(),
            vec![fe("10.96.0.4", 80, Proto::Tcp)]
        );
        assert_eq!(
            backends_of(&b, "10.96.0.4", 80, Proto::Tcp),
            bes(&["10.0.0.3:8080"])
        );
    }

    #[test]
    fn slices_need_service_name_label_same_namespace_and_ipv4() {
        let b = run(r#"
kind: Service
metadata: {name: s, namespace: a}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: unlabelled, namespace: a}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1]}]
---
kind: EndpointSlice
metadata: {name: other-ns, namespace: b, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.2]}]
---
kind: EndpointSlice
metadata: {name: v6, namespace: a, labels: {kubernetes.io/service-name: s}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00::1"]}]
---
kind: EndpointSlice
metadata: {name: fqdn, namespace: a, labels: {kubernetes.io/service-name: s}}
addressType: FQDN
ports: [{port: 8080}]
endpoints: [{addresses: [example.com]}]
---
kind: EndpointSlice
metadata: {name: good, namespace: a, labels: {kubernetes.io/service-name: s}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.3]}]
"#);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(
            backends_of(&b, "10.96.0.1", 80, Proto::Tcp),
            bes(&["10.0.0.3:8080"])
        );
    }

    #[test]
    fn ipv6_cluster_ips_ignored_and_all_ipv4_ips_used() {
        let b = run(r#"
kind: Service
metadata: {name: v6only}
spec: {clusterIP: "fd00::10", clusterIPs: ["fd00::10"], ports: [{port: 80}]}
---
kind: Service
metadata: {name: dual}
spec: {clusterIP: "fd00::11", clusterIPs: ["fd00::11", 10.96.0.11], ports: [{name: http, port: 80}]}
---
kind: Service
metadata: {name: no-cluster-ips}
spec: {clusterIP: 10.96.0.12, ports: [{port: 81}]}
"#);
        assert!(b.warnings.is_empty(), "{:?}", b.warnings);
        assert_eq!(
            b.state.frontends.keys().copied().collect::<Vec<_>>(),
            vec![
                fe("10.96.0.11", 80, Proto::Tcp),
                fe("10.96.0.12", 81, Proto::Tcp)
            ]
        );
        assert_eq!(
            b.state.frontends[&fe("10.96.0.11", 80, Proto::Tcp)].name,
            "default/dual:http"
        );
    }

    #[test]
    fn malformed_objects_warn_and_are_skipped() {
        let b = run(r#"
kind: Service
metadata: {name: web, namespace: default}
spec: {clusterIP: 10.0.0.300, ports: [{port: 80}]}
---
kind: Service
metadata: {name: proto}
spec: {clusterIP: 10.96.0.2, ports: [{port: 80, protocol: ICMP}]}
---
kind: Service
metadata: {name: range}
spec: {clusterIP: 10.96.0.3, ports: [{port: 70000}]}
---
kind: Service
metadata: {name: twice}
spec: {clusterIP: 10.96.0.4, ports: [{name: a, port: 80}, {name: b, port: 80}]}
---
kind: Service
metadata: {name: good}
spec: {clusterIP: 10.96.0.5, ports: [{port: 80}]}
---
kind: EndpointSlice
metadata: {name: good-bad, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.1]}, {addresses: ["fd00::1"]}]
---
kind: EndpointSlice
metadata: {name: good-proto, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
ports: [{port: 8080, protocol: tcp}]
endpoints: [{addresses: [10.0.0.2]}]
---
kind: EndpointSlice
metadata: {name: good-ok, labels: {kubernetes.io/service-name: good}}
addressType: IPv4
ports: [{port: 8080}]
endpoints: [{addresses: [10.0.0.3]}]
"#);
        assert_eq!(
            b.warnings,
            vec![
                r#"endpointslice default/good-bad: address "fd00::1" is not an IPv4 address"#,
                r#"endpointslice default/good-proto: unknown protocol "tcp""#,
                r#"service default/proto: unknown protocol "ICMP""#,
                "service default/range: port 70000 is out of range",
                "service default/twice: frontend 10.96.0.4:80/TCP is listed twice",
                r#"service default/web: clusterIP "10.0.0.300" is not an IPv4 address"#,
            ]
        );
        assert_eq!(b.state.frontends.len(), 1);
        assert_eq!(
            backends_of(&b, "10.96.0.5", 80, Proto::Tcp),
            bes(&["10.0.0.3:8080"])
        );
    }

    #[test]
    fn conflicting_frontend_keeps_first_service() {
        let b = run(r#"
kind: Service
metadata: {name: b}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}, {port: 81}]}
---
kind: Service
metadata: {name: a}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
"#);
        assert_eq!(
            b.warnings,
            vec!["service default/b: frontend 10.96.0.1:80/TCP is already used by default/a"]
        );
        assert_eq!(b.state.frontends.len(), 1);
        assert_eq!(
            b.state.frontends[&fe("10.96.0.1", 80, Proto::Tcp)].name,
            "default/a"
        );
    }

    #[test]
    fn service_without_slices_has_empty_backends() {
        let b = run(WEB);
        assert_eq!(b.state.frontends.len(), 2);
        assert!(b.state.frontends.values().all(|f| f.backends.is_empty()));
    }
}
