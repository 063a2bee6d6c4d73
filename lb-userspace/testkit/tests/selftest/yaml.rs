//! The manifest builders write what the agent's `manifests` source parses.
use super::*;

/// The manifest builders write what the agent's `manifests` source parses: dual-stack and
/// IPv6 Services, IPv6 EndpointSlices, Node objects with both addresses.
#[test]
fn manifest_builders() {
    use k8s_openapi::api::core::v1::{Node as K8sNode, Service as K8sService};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use manifest::{Service, Slice};

    let v4: IpAddr = "10.96.0.10".parse().unwrap();
    let v6: IpAddr = "fd00:96::10".parse().unwrap();
    let yaml = Service::new("web", "LoadBalancer")
        .cluster_ip(v6)
        .cluster_ip(v4)
        .node_port("http", 80, "TCP", 8080, 30080)
        .port("dns", 53, "UDP", 5353)
        .external_ip(ip6("fd00:78::10"))
        .ingress(ip6("fd00:79::10"), Some("VIP"))
        .external_traffic_policy("Local")
        .yaml();
    let svc: K8sService = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("fd00:96::10"));
    assert_eq!(
        spec.cluster_ips.unwrap(),
        vec!["fd00:96::10".to_string(), "10.96.0.10".to_string()]
    );
    assert_eq!(
        spec.ip_families.unwrap(),
        vec!["IPv6".to_string(), "IPv4".to_string()]
    );
    assert_eq!(spec.ip_family_policy.as_deref(), Some("RequireDualStack"));
    assert_eq!(spec.external_ips.unwrap(), vec!["fd00:78::10".to_string()]);
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    let ports = spec.ports.unwrap();
    assert_eq!(
        (ports[0].node_port, ports[1].node_port),
        (Some(30080), None)
    );
    let ingress = svc.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("fd00:79::10"));
    assert_eq!(ingress[0].ip_mode.as_deref(), Some("VIP"));

    // The simple helpers.
    let yaml = manifest::service("web6", "fd00:96::11", &[("http", 80, "TCP")]);
    let spec = serde_yaml::from_str::<K8sService>(&yaml)
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(spec.ip_families.unwrap(), vec!["IPv6".to_string()]);
    assert_eq!(spec.cluster_ips.unwrap(), vec!["fd00:96::11".to_string()]);
    let yaml = manifest::service("web4", "10.96.0.11", &[("http", 80, "TCP")]);
    assert!(!yaml.contains("ipFamilies"), "{yaml}");
    let yaml = manifest::dual_stack_service("ds", [v4, v6], &[("http", 80, "TCP")]);
    let spec = serde_yaml::from_str::<K8sService>(&yaml)
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(
        spec.ip_families.unwrap(),
        vec!["IPv4".to_string(), "IPv6".to_string()]
    );
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));

    let yaml = manifest::slice6(
        "web6",
        "web6-1",
        &[("http", 8080, "TCP")],
        &[(pod_ip6(1), true), (pod_ip6(2), false)],
    );
    let slice: EndpointSlice =
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(slice.address_type, "IPv6");
    assert_eq!(
        slice.endpoints[0].addresses,
        vec!["fd00:10:244::11".to_string()]
    );
    assert_eq!(
        slice.endpoints[1].conditions.as_ref().unwrap().ready,
        Some(false)
    );
    let yaml = Slice::new("web6", "web6-2", Family::V6)
        .port("http", 8080, "TCP")
        .endpoint_on(pod_ip6_on(1, 0), "node-1")
        .label("foo", "bar")
        .yaml();
    let slice: EndpointSlice = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("node-1"));
    assert_eq!(
        slice
            .metadata
            .labels
            .unwrap()
            .get("kubernetes.io/service-name")
            .map(String::as_str),
        Some("web6")
    );
    let yaml = Slice::new("empty", "empty-1", Family::V6)
        .port("http", 8080, "TCP")
        .yaml();
    let slice: EndpointSlice = serde_yaml::from_str(&yaml).unwrap();
    assert!(slice.endpoints.is_empty());

    let yaml = manifest::node(
        "node-1",
        &[cluster_node_ip(1).into(), cluster_node_ip6(1).into()],
    );
    let node: K8sNode = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let addrs: Vec<(String, String)> = node
        .status
        .unwrap()
        .addresses
        .unwrap()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addrs,
        vec![
            ("InternalIP".to_string(), "192.168.50.11".to_string()),
            ("InternalIP".to_string(), "fd00:50::11".to_string()),
            ("Hostname".to_string(), "node-1".to_string()),
        ]
    );
}
