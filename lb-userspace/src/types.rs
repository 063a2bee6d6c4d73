//! The vocabulary every part of podlb shares: protocols, IP families, frontend and backend
//! addresses, frontend kinds, the labels kube-proxy reads, and how each is spelled in the
//! Kubernetes API, in the datapath's map fields (`lb_common`'s `PROTO_*`, `FAMILY_*`, `KIND_*`)
//! and in the operator's output. Each of these is defined here and nowhere else.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use lb_common::{
    FAMILY_V4, FAMILY_V6, KIND_CLUSTER_IP, KIND_EXTERNAL_IP, KIND_LOAD_BALANCER, KIND_NODE_PORT,
    PROTO_SCTP, PROTO_TCP, PROTO_UDP,
};

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
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
            Proto::Sctp => PROTO_SCTP,
        }
    }

    /// The protocol of a datapath `proto` field (an IP protocol number).
    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            PROTO_TCP => Some(Proto::Tcp),
            PROTO_UDP => Some(Proto::Udp),
            PROTO_SCTP => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// As in the Kubernetes API: "TCP", "UDP", "SCTP".
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
        }
    }

    /// The name of a datapath `proto` field; "?" for a number that is none of ours.
    pub fn name_of(n: u8) -> &'static str {
        Proto::from_number(n).map_or("?", Proto::name)
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
        f.write_str(self.name())
    }
}

/// An IP family, named as in the Kubernetes API (`ipFamilies`, EndpointSlice `addressType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// "IPv4" or "IPv6"; anything else (e.g. the slice address type "FQDN") is `None`.
    pub fn parse(s: &str) -> Option<Family> {
        match s {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The datapath's `family` field (`FAMILY_V4`, `FAMILY_V6`).
    pub fn number(self) -> u8 {
        match self {
            Family::V4 => FAMILY_V4,
            Family::V6 => FAMILY_V6,
        }
    }

    pub fn from_number(n: u8) -> Option<Family> {
        match n {
            FAMILY_V4 => Some(Family::V4),
            FAMILY_V6 => Some(Family::V6),
            _ => None,
        }
    }

    /// "IPv4" or "IPv6" for a datapath `family` field; "?" for anything else.
    pub fn name_of(n: u8) -> &'static str {
        Family::from_number(n).map_or("?", Family::name)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendAddr {
    pub ip: IpAddr,
    pub port: u16,
    pub proto: Proto,
}

impl FrontendAddr {
    pub fn family(&self) -> Family {
        Family::of(self.ip)
    }
}

/// `10.96.0.10:80/TCP`, `[fd00::10]:80/TCP`.
impl fmt::Display for FrontendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", SocketAddr::new(self.ip, self.port), self.proto)
    }
}

/// A backend of a frontend; always of the frontend's family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    pub ip: IpAddr,
    pub port: u16,
}

/// How a frontend address was derived from its Service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrontendKind {
    /// `spec.clusterIPs`.
    ClusterIp,
    /// A node address and `ports[].nodePort` (Services of type NodePort and LoadBalancer).
    NodePort,
    /// `spec.externalIPs`.
    ExternalIp,
    /// `status.loadBalancer.ingress[].ip` (Services of type LoadBalancer).
    LoadBalancer,
}

impl FrontendKind {
    /// Reachable from outside the cluster: externalTrafficPolicy applies, not
    /// internalTrafficPolicy (contract point 10).
    pub fn is_external(self) -> bool {
        self != FrontendKind::ClusterIp
    }

    /// Which kind keeps an address two frontends claim: the addresses the API server allocates
    /// (ClusterIPs, NodePorts) before the ones a controller writes (LoadBalancer ingress), and
    /// those before the ones any Service author may write (externalIPs), so that an externalIP
    /// cannot take over another Service's ClusterIP.
    pub(crate) fn precedence(self) -> u8 {
        match self {
            FrontendKind::ClusterIp => 0,
            FrontendKind::NodePort => 1,
            FrontendKind::LoadBalancer => 2,
            FrontendKind::ExternalIp => 3,
        }
    }

    pub const ALL: [FrontendKind; 4] = [
        FrontendKind::ClusterIp,
        FrontendKind::NodePort,
        FrontendKind::ExternalIp,
        FrontendKind::LoadBalancer,
    ];

    /// The datapath's `kind` field of a frontend entry (`KIND_*`).
    pub fn code(self) -> u16 {
        match self {
            FrontendKind::ClusterIp => KIND_CLUSTER_IP,
            FrontendKind::NodePort => KIND_NODE_PORT,
            FrontendKind::ExternalIp => KIND_EXTERNAL_IP,
            FrontendKind::LoadBalancer => KIND_LOAD_BALANCER,
        }
    }

    pub fn from_code(k: u16) -> Option<FrontendKind> {
        FrontendKind::ALL.into_iter().find(|f| f.code() == k)
    }

    pub fn name(self) -> &'static str {
        match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::ExternalIp => "ExternalIP",
            FrontendKind::LoadBalancer => "LoadBalancer",
        }
    }

    /// The name of a datapath `kind` field; "?" for a code that is none of ours.
    pub fn name_of(k: u16) -> &'static str {
        FrontendKind::from_code(k).map_or("?", FrontendKind::name)
    }
}

impl fmt::Display for FrontendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// "namespace/name"; a missing namespace counts as "default".
pub fn object_key(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("")
    )
}

/// Parses an address of either family; Err names the string when it is no IP address.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not an IP address"))
}

/// Parses an address that must be of `family` (an EndpointSlice's addressType).
pub fn parse_ip_of(s: &str, family: Family) -> Result<IpAddr, String> {
    match s.parse::<IpAddr>() {
        Ok(ip) if Family::of(ip) == family => Ok(ip),
        _ => Err(format!("address {s:?} is not an {family} address")),
    }
}

/// An IP prefix, as in `--cluster-cidr 10.244.0.0/16` or `--nodeport-addresses fd00::/64`. The
/// address is kept as written; [`Cidr::contains`] compares only the first `prefix` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn family(&self) -> Family {
        Family::of(self.addr)
    }

    /// Whether `ip` (of the same family) falls in this prefix.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let other = Cidr {
            addr: *ip,
            prefix: self.prefix,
        };
        other.family() == self.family() && other.network() == self.network()
    }

    /// The network address: the first `prefix` bits of the address, the rest zero.
    pub fn network(&self) -> IpAddr {
        fn mask<const N: usize>(mut b: [u8; N], prefix: u8) -> [u8; N] {
            for (i, byte) in b.iter_mut().enumerate() {
                let keep = (prefix as usize).saturating_sub(i * 8).min(8);
                *byte &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            }
            b
        }
        match self.addr {
            IpAddr::V4(a) => IpAddr::from(mask(a.octets(), self.prefix)),
            IpAddr::V6(a) => IpAddr::from(mask(a.octets(), self.prefix)),
        }
    }

    /// The netmask: `prefix` one bits, the rest zero (`255.255.0.0` for a /16), of the
    /// address's family.
    pub fn netmask(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(_) => Cidr {
                addr: IpAddr::from([0xff; 4]),
                prefix: self.prefix,
            }
            .network(),
            IpAddr::V6(_) => Cidr {
                addr: IpAddr::from([0xff; 16]),
                prefix: self.prefix,
            }
            .network(),
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// "ADDR/PREFIX"; a bare address is its own /32 or /128.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR (want ADDR/PREFIX)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which node addresses NodePorts are served on (`--nodeport-addresses`, kube-proxy's
/// `nodePortAddresses`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// The Node object's InternalIP/ExternalIP addresses, else the external interfaces'.
    #[default]
    Default,
    /// The node's primary address of each family (the Node object's first InternalIP).
    Primary,
    /// The node's addresses (on any interface) that fall in one of these prefixes.
    Cidrs(Vec<Cidr>),
}

#[cfg(test)]
mod cidr_tests {
    use super::Cidr;

    #[test]
    fn parses_matches_and_rejects() {
        let c: Cidr = "10.244.0.0/16".parse().unwrap();
        assert!(c.contains(&"10.244.3.7".parse().unwrap()));
        assert!(!c.contains(&"10.245.0.1".parse().unwrap()));
        assert!(!c.contains(&"fd00::1".parse().unwrap()));
        let c: Cidr = "10.244.1.9/20".parse().unwrap();
        assert_eq!(c.network().to_string(), "10.244.0.0");
        assert!(c.contains(&"10.244.15.255".parse().unwrap()));
        assert!(!c.contains(&"10.244.16.0".parse().unwrap()));
        let c: Cidr = "fd00:10:244::/56".parse().unwrap();
        assert!(c.contains(&"fd00:10:244:ff::1".parse().unwrap()));
        assert!(!c.contains(&"fd00:10:244:100::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(&"192.0.2.1".parse().unwrap()));
        assert_eq!("192.0.2.1".parse::<Cidr>().unwrap().prefix, 32);
        assert_eq!(c.to_string(), "fd00:10:244::/56");
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
            "",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
