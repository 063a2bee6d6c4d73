//! Services and EndpointSlices as the model reads them: compact copies of the fields it uses,
//! made once when an object arrives (a watch event, a manifest file). The sources keep only
//! these, and the model shares them (`Arc`), so an agent holding 10,000 Services × 10
//! endpoints does not keep 10,000 full API objects (an EndpointSlice of 10 endpoints is about
//! 5 KB as a `k8s_openapi` value, its copy here about 400 bytes).
//!
//! Pure conversions, no I/O. An EndpointSlice is validated here, once: its compact form holds
//! either the parsed endpoints or the reason it is unusable, which the model reports with the
//! slice's name.
use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::Lookup;

use crate::types::{
    parse_ip_of, Family, Proto, LABEL_HEADLESS, LABEL_SERVICE_NAME, LABEL_SERVICE_PROXY_NAME,
};

fn has_label(meta: &ObjectMeta, label: &str) -> bool {
    meta.labels.as_ref().is_some_and(|l| l.contains_key(label))
}

/// The namespace of `meta`, "default" when missing.
fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_else(|| "default".into())
}

/// A Service reduced to what the model reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceObj {
    pub namespace: String,
    pub name: String,
    /// Labelled for another proxy (`service-proxy-name`) or headless: never programmed.
    pub foreign_or_headless: bool,
    pub spec: Option<ServiceSpecObj>,
    /// `status.loadBalancer.ingress`.
    pub ingress: Vec<IngressObj>,
}

/// The fields of a `ServiceSpec` the model reads, named as in `k8s_openapi`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceSpecObj {
    pub type_: Option<String>,
    pub cluster_ip: Option<String>,
    pub cluster_ips: Option<Vec<String>>,
    pub ip_families: Option<Vec<String>>,
    pub ports: Vec<ServicePortObj>,
    pub external_ips: Option<Vec<String>>,
    pub internal_traffic_policy: Option<String>,
    pub external_traffic_policy: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServicePortObj {
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub port: i32,
    pub node_port: Option<i32>,
}

/// One `status.loadBalancer.ingress` entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngressObj {
    pub ip: Option<String>,
    pub ip_mode: Option<String>,
}

impl ServiceObj {
    pub fn new(svc: &Service) -> Self {
        let meta = &svc.metadata;
        ServiceObj {
            namespace: namespace_of(meta),
            name: meta.name.clone().unwrap_or_default(),
            foreign_or_headless: has_label(meta, LABEL_SERVICE_PROXY_NAME)
                || has_label(meta, LABEL_HEADLESS),
            spec: svc.spec.as_ref().map(|s| ServiceSpecObj {
                type_: s.type_.clone(),
                cluster_ip: s.cluster_ip.clone(),
                cluster_ips: s.cluster_ips.clone(),
                ip_families: s.ip_families.clone(),
                ports: s
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| ServicePortObj {
                        name: p.name.clone(),
                        protocol: p.protocol.clone(),
                        port: p.port,
                        node_port: p.node_port,
                    })
                    .collect(),
                external_ips: s.external_ips.clone(),
                internal_traffic_policy: s.internal_traffic_policy.clone(),
                external_traffic_policy: s.external_traffic_policy.clone(),
            }),
            ingress: svc
                .status
                .iter()
                .filter_map(|s| s.load_balancer.as_ref())
                .flat_map(|lb| lb.ingress.iter().flatten())
                .map(|i| IngressObj {
                    ip: i.ip.clone(),
                    ip_mode: i.ip_mode.clone(),
                })
                .collect(),
        }
    }

    /// "namespace/name".
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// An endpoint's conditions, with the API's defaults for unset ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conditions {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    pub proto: Proto,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// The first address (kube-proxy uses only that one).
    pub ip: IpAddr,
    pub conditions: Conditions,
    /// `nodeName`, shared between the endpoints of one node (see [`intern`]).
    pub node: Option<Arc<str>>,
}

/// A validated IPv4 or IPv6 EndpointSlice reduced to what the model reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceView {
    pub family: Family,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

/// An EndpointSlice reduced to what the model reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceObj {
    pub namespace: String,
    pub name: String,
    /// The Service ("namespace/name") it feeds, if the model uses it at all: not for slices of
    /// another proxy, headless ones, FQDN ones or ones without a `kubernetes.io/service-name`.
    pub service: Option<String>,
    /// The slice, or why it is unusable (only computed for slices the model uses).
    pub view: Result<SliceView, String>,
}

impl SliceObj {
    pub fn new(slice: &EndpointSlice) -> Self {
        let meta = &slice.metadata;
        let namespace = namespace_of(meta);
        let feeds = (!(has_label(meta, LABEL_SERVICE_PROXY_NAME)
            || has_label(meta, LABEL_HEADLESS)))
        .then(|| {
            let family = Family::parse(&slice.address_type)?;
            let service = meta.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
            (!service.is_empty()).then(|| (format!("{namespace}/{service}"), family))
        })
        .flatten();
        let (service, view) = match feeds {
            Some((service, family)) => (Some(service), slice_view(slice, family)),
            None => (None, Err(String::new())),
        };
        SliceObj {
            name: meta.name.clone().unwrap_or_default(),
            namespace,
            service,
            view,
        }
    }

    /// "namespace/name".
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

fn slice_view(slice: &EndpointSlice, family: Family) -> Result<SliceView, String> {
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
    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    for ep in &slice.endpoints {
        let Some(first) = ep.addresses.first() else {
            continue;
        };
        for a in &ep.addresses {
            parse_ip_of(a, family)?;
        }
        let c = ep.conditions.as_ref();
        endpoints.push(SliceEndpoint {
            ip: parse_ip_of(first, family)?,
            conditions: Conditions {
                ready: c.and_then(|c| c.ready).unwrap_or(true),
                serving: c.and_then(|c| c.serving).unwrap_or(true),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
            },
            node: ep.node_name.as_deref().map(intern),
        });
    }
    Ok(SliceView {
        family,
        ports,
        endpoints,
    })
}

/// One shared copy of each node name: a cluster has few nodes and many endpoints. Names are
/// kept for the life of the process (a node name costs a few bytes).
pub fn intern(name: &str) -> Arc<str> {
    static NAMES: Mutex<Option<HashSet<Arc<str>>>> = Mutex::new(None);
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let names = names.get_or_insert_with(HashSet::new);
    match names.get(name) {
        Some(n) => n.clone(),
        None => {
            let n: Arc<str> = Arc::from(name);
            names.insert(n.clone());
            n
        }
    }
}

/// So that reflector stores can hold the compact objects (keyed by namespace and name).
macro_rules! lookup {
    ($t:ty, $kind:literal, $group:literal, $version:literal, $plural:literal) => {
        impl Lookup for $t {
            type DynamicType = ();
            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn name(&self) -> Option<Cow<'_, str>> {
                Some(Cow::Borrowed(&self.name))
            }
            fn namespace(&self) -> Option<Cow<'_, str>> {
                Some(Cow::Borrowed(&self.namespace))
            }
            fn resource_version(&self) -> Option<Cow<'_, str>> {
                None
            }
            fn uid(&self) -> Option<Cow<'_, str>> {
                None
            }
        }
    };
}
lookup!(ServiceObj, "Service", "", "v1", "services");
lookup!(
    SliceObj,
    "EndpointSlice",
    "discovery.k8s.io",
    "v1",
    "endpointslices"
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(v: serde_json::Value) -> SliceObj {
        SliceObj::new(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn slice_keeps_what_the_model_reads() {
        let s = slice(json!({
            "metadata": {"name": "web-1", "namespace": "prod",
                         "labels": {"kubernetes.io/service-name": "web", "x": "y"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "no-port"}],
            "endpoints": [
                {"addresses": ["10.0.0.1", "10.0.0.9"], "nodeName": "n1",
                 "conditions": {"ready": false, "terminating": true},
                 "targetRef": {"kind": "Pod", "name": "web-abc"}},
                {"addresses": [], "nodeName": "n1"},
                {"addresses": ["10.0.0.2"], "nodeName": "n1"},
            ],
        }));
        assert_eq!(s.key(), "prod/web-1");
        assert_eq!(s.service.as_deref(), Some("prod/web"));
        let v = s.view.unwrap();
        assert_eq!(v.family, Family::V4);
        assert_eq!(
            v.ports,
            vec![SlicePort {
                name: "http".into(),
                proto: Proto::Tcp,
                port: 8080
            }]
        );
        assert_eq!(v.endpoints.len(), 2);
        assert_eq!(v.endpoints[0].ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            v.endpoints[0].conditions,
            Conditions {
                ready: false,
                serving: true,
                terminating: true
            }
        );
        assert_eq!(
            v.endpoints[1].conditions,
            Conditions {
                ready: true,
                serving: true,
                terminating: false
            }
        );
        // One copy of the node name for both endpoints.
        let (a, b) = (&v.endpoints[0].node, &v.endpoints[1].node);
        assert!(Arc::ptr_eq(a.as_ref().unwrap(), b.as_ref().unwrap()));
        assert_eq!(a.as_deref(), Some("n1"));
    }

    #[test]
    fn unusable_slices_say_why_or_are_not_used() {
        let bad = slice(json!({
            "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv6",
            "endpoints": [{"addresses": ["10.0.0.1"]}],
        }));
        assert_eq!(bad.key(), "default/s");
        assert_eq!(bad.service.as_deref(), Some("default/web"));
        assert!(bad.view.unwrap_err().contains("not an IPv6 address"));
        for labels in [
            json!({}),
            json!({"kubernetes.io/service-name": ""}),
            json!({"kubernetes.io/service-name": "web", "service.kubernetes.io/headless": ""}),
            json!({"kubernetes.io/service-name": "web",
                   "service.kubernetes.io/service-proxy-name": "other"}),
        ] {
            let s = slice(json!({"metadata": {"name": "s", "labels": labels},
                                 "addressType": "IPv4", "endpoints": []}));
            assert_eq!(s.service, None, "{labels}");
        }
        let fqdn = slice(json!({
            "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "FQDN", "endpoints": [{"addresses": ["example.com"]}],
        }));
        assert_eq!(fqdn.service, None);
    }

    #[test]
    fn service_keeps_what_the_model_reads() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "labels": {"service.kubernetes.io/headless": ""},
                         "annotations": {"a": "b"}},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.1",
                     "clusterIPs": ["10.96.0.1"], "ipFamilies": ["IPv4"],
                     "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
                     "externalIPs": ["192.0.2.1"], "externalTrafficPolicy": "Local"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.9", "ipMode": "Proxy"}]}},
        }))
        .unwrap();
        let o = ServiceObj::new(&svc);
        assert_eq!(o.key(), "default/web");
        assert!(o.foreign_or_headless);
        let spec = o.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(
            spec.cluster_ips.as_deref(),
            Some(&["10.96.0.1".to_string()][..])
        );
        assert_eq!(spec.ports[0].node_port, Some(30080));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(o.ingress[0].ip_mode.as_deref(), Some("Proxy"));
    }
}
