//! Rule sets in the shapes kube-proxy writes, generated for the bench's Services, so that the
//! same Services can be served by iptables and nftables instead of podlb (and so that
//! `podlb cleanup-kube-proxy` has kube-proxy's rules to remove in its tests).
//!
//! Written from kube-proxy's documented layouts (the Kubernetes "Virtual IPs and Service
//! Proxies" page, KEP-3866 for nftables, and the rule dumps in kube-proxy's own docs and tests),
//! not from its code:
//!
//! - iptables mode, layout of kube-proxy v1.28–v1.33: `KUBE-SERVICES` in the nat table with one
//!   rule per Service port (VIP, protocol, port) jumping to `KUBE-SVC-<hash>`; that chain marks
//!   traffic from outside the cluster CIDR for masquerade (`KUBE-MARK-MASQ`) and picks an endpoint
//!   with `statistic --mode random --probability 1/(n-i)`; each `KUBE-SEP-<hash>` marks hairpin
//!   traffic and DNATs. `KUBE-POSTROUTING` masquerades marked packets (`--random-fully`);
//!   `KUBE-SERVICES` ends with the `addrtype LOCAL` jump to `KUBE-NODEPORTS`. The filter table
//!   has kube-proxy's `KUBE-FORWARD` (drop INVALID, accept marked and established) and the
//!   jumps from INPUT/FORWARD/OUTPUT for new connections. Comments are written as kube-proxy
//!   does, except in its "large cluster" mode (more than 1,000 endpoints) where it omits them.
//! - nftables mode, layout of kube-proxy v1.31+: `table ip kube-proxy` with base chains
//!   `nat-prerouting`/`nat-output` jumping to `services`, which looks up the verdict map
//!   `service-ips` keyed on `ip daddr . meta l4proto . th dport` (and `service-nodeports` for
//!   local addresses); per Service port a chain `service-<hash>-<ns>/<name>/<proto>/<port>`
//!   marking non-cluster sources for masquerade and choosing an endpoint with
//!   `numgen random mod N vmap`; per endpoint a chain `endpoint-<hash>-…__<ip>/<port>` that
//!   marks hairpin traffic and DNATs; `nat-postrouting` → `masquerading` (mark 0x4000,
//!   `masquerade fully-random`); the filter base chains at priority -110 with the
//!   `service-endpoints-check`, `nodeport-endpoints-check`, `firewall-check` and
//!   `cluster-ips-check` chains and their maps and sets.
//!
//! The chain-name hashes are our own (FNV-1a; kube-proxy uses base32 of SHA-256); only their
//! length matters to the packet path.
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// One Service port and its endpoints.
#[derive(Clone, Debug)]
pub struct SvcPort {
    /// `namespace/name`
    pub service: String,
    pub port_name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    /// `tcp` or `udp`
    pub proto: &'static str,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const SERVICE_CIDR: &str = "10.96.0.0/12";

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// 16 characters of base32 (A-Z, 2-7), as long as kube-proxy's chain hashes.
fn hash16(s: &str) -> String {
    const ALPHA: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (a, b) = (fnv(s), fnv(&format!("{s}#")));
    let mut out = String::with_capacity(16);
    for i in 0..16 {
        let v = if i < 12 {
            a >> (i * 5)
        } else {
            b >> ((i - 12) * 5)
        };
        out.push(ALPHA[(v & 31) as usize] as char);
    }
    out
}

impl SvcPort {
    fn spn(&self) -> String {
        format!("{}:{}", self.service, self.port_name)
    }
    pub fn svc_chain(&self) -> String {
        format!(
            "KUBE-SVC-{}",
            hash16(&format!("{}{}", self.spn(), self.proto))
        )
    }
    fn sep_chain(&self, ep: (Ipv4Addr, u16)) -> String {
        format!(
            "KUBE-SEP-{}",
            hash16(&format!("{}{}{}:{}", self.spn(), self.proto, ep.0, ep.1))
        )
    }
    fn nft_svc_chain(&self) -> String {
        let (ns, name) = self
            .service
            .split_once('/')
            .unwrap_or(("default", &self.service));
        let id = format!("{ns}/{name}/{}/{}", self.proto, self.port_name);
        format!("service-{}-{id}", &hash16(&id)[..8])
    }
    fn nft_ep_chain(&self, ep: (Ipv4Addr, u16)) -> String {
        let (ns, name) = self
            .service
            .split_once('/')
            .unwrap_or(("default", &self.service));
        let id = format!(
            "{ns}/{name}/{}/{}__{}/{}",
            self.proto, self.port_name, ep.0, ep.1
        );
        format!("endpoint-{}-{id}", &hash16(&id)[..8])
    }
}

/// An `iptables-restore` input (filter and nat tables, replacing their contents).
pub fn iptables(svcs: &[SvcPort]) -> String {
    let endpoints: usize = svcs.iter().map(|s| s.endpoints.len()).sum();
    let large = endpoints > 1000;
    let mut f = String::with_capacity(svcs.len() * 2048);
    f += "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n";
    for ch in [
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-SERVICES",
        "KUBE-PROXY-CANARY",
    ] {
        let _ = writeln!(f, ":{ch} - [0:0]");
    }
    f += "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n";
    f += "-A INPUT -m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS\n";
    f += "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n";
    f += "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n";
    f += "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n";
    f += "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n";
    f += "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES\n";
    f += "-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n";
    f += "-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n";
    f += "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n";
    f += "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark 0x4000/0x4000 -j ACCEPT\n";
    f += "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
    f += "COMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n";
    for ch in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(f, ":{ch} - [0:0]");
    }
    for s in svcs {
        let _ = writeln!(f, ":{} - [0:0]", s.svc_chain());
        for ep in &s.endpoints {
            let _ = writeln!(f, ":{} - [0:0]", s.sep_chain(*ep));
        }
    }
    f += "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n";
    f += "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n";
    f += "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n";
    f += "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n";
    f += "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n";
    f += "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n";
    f += "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n";
    // Service chains (kube-proxy writes each service's chains, then KUBE-SERVICES at the end).
    for s in svcs {
        f += &iptables_service_rules(s, large);
    }
    for s in svcs {
        f += &iptables_services_rule(s, large);
    }
    f += "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n";
    f += "COMMIT\n";
    f
}

/// An `nft -f` input creating `table ip kube-proxy` (the caller deletes an old one first).
pub fn nftables(svcs: &[SvcPort]) -> String {
    let t = "ip kube-proxy";
    let mut f = String::with_capacity(svcs.len() * 2048);
    let _ = writeln!(f, "add table {t} {{ comment \"rules for kube-proxy\" ; }}");
    for (name, spec) in [
        ("mark-for-masquerade", ""),
        ("masquerading", ""),
        ("services", ""),
        ("firewall-check", ""),
        ("service-endpoints-check", ""),
        ("nodeport-endpoints-check", ""),
        ("cluster-ips-check", ""),
        (
            "filter-prerouting",
            "type filter hook prerouting priority -110 ;",
        ),
        ("filter-input", "type filter hook input priority -110 ;"),
        ("filter-forward", "type filter hook forward priority -110 ;"),
        ("filter-output", "type filter hook output priority -110 ;"),
        (
            "filter-output-post-dnat",
            "type filter hook output priority -90 ;",
        ),
        ("nat-prerouting", "type nat hook prerouting priority -100 ;"),
        ("nat-output", "type nat hook output priority -100 ;"),
        (
            "nat-postrouting",
            "type nat hook postrouting priority 100 ;",
        ),
    ] {
        if spec.is_empty() {
            let _ = writeln!(f, "add chain {t} {name}");
        } else {
            let _ = writeln!(f, "add chain {t} {name} {{ {spec} }}");
        }
    }
    let _ = writeln!(
        f,
        "add set {t} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"
    );
    let _ = writeln!(f, "add set {t} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}");
    let _ = writeln!(f, "add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}");
    let _ = writeln!(f, "add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}");
    let _ = writeln!(f, "add map {t} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to services with no endpoints\" ; }}");
    let _ = writeln!(f, "add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }}");
    let _ = writeln!(f, "add map {t} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"destinations that are subject to LoadBalancerSourceRanges\" ; }}");
    for rule in [
        "mark-for-masquerade mark set mark or 0x4000".to_string(),
        "masquerading mark and 0x4000 == 0 return".into(),
        "masquerading mark set mark xor 0x4000".into(),
        "masquerading masquerade fully-random".into(),
        "filter-prerouting ct state new jump firewall-check".into(),
        "filter-input ct state new jump nodeport-endpoints-check".into(),
        "filter-input ct state new jump service-endpoints-check".into(),
        "filter-forward ct state new jump service-endpoints-check".into(),
        "filter-forward ct state new jump cluster-ips-check".into(),
        "filter-output ct state new jump service-endpoints-check".into(),
        "filter-output ct state new jump cluster-ips-check".into(),
        "filter-output-post-dnat ct state new jump firewall-check".into(),
        "nat-prerouting jump services".into(),
        "nat-output jump services".into(),
        "nat-postrouting jump masquerading".into(),
        "firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips".into(),
        "service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into(),
        "nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports".into(),
        "cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\"".into(),
        format!("cluster-ips-check ip daddr {{ {SERVICE_CIDR} }} drop comment \"Drop traffic to unallocated ClusterIPs\""),
        "services ip daddr . meta l4proto . th dport vmap @service-ips".into(),
        "services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports".into(),
    ] {
        let _ = writeln!(f, "add rule {t} {rule}");
    }
    for s in svcs {
        f += &nft_service(s);
        let _ = writeln!(f, "add element {t} cluster-ips {{ {} }}", s.vip);
        let _ = writeln!(
            f,
            "add element {t} service-ips {{ {} . {} . {} : goto {} }}",
            s.vip,
            s.proto,
            s.port,
            s.nft_svc_chain()
        );
    }
    f
}

/// The chains and rules of one Service port (its service chain and endpoint chains).
fn nft_service(s: &SvcPort) -> String {
    let t = "ip kube-proxy";
    let mut f = String::new();
    let chain = s.nft_svc_chain();
    let _ = writeln!(f, "add chain {t} {chain}");
    for ep in &s.endpoints {
        let ec = s.nft_ep_chain(*ep);
        let _ = writeln!(f, "add chain {t} {ec}");
        let _ = writeln!(
            f,
            "add rule {t} {ec} ip saddr {} jump mark-for-masquerade",
            ep.0
        );
        let _ = writeln!(
            f,
            "add rule {t} {ec} meta l4proto {} dnat to {}:{}",
            s.proto, ep.0, ep.1
        );
    }
    f += &nft_service_rules(s);
    f
}

fn nft_service_rules(s: &SvcPort) -> String {
    let t = "ip kube-proxy";
    let chain = s.nft_svc_chain();
    let mut f = String::new();
    let _ = writeln!(
        f,
        "add rule {t} {chain} ip daddr {} {} dport {} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
        s.vip, s.proto, s.port
    );
    let vmap: Vec<String> = s
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| format!("{i} : goto {}", s.nft_ep_chain(*ep)))
        .collect();
    let _ = writeln!(
        f,
        "add rule {t} {chain} numgen random mod {} vmap {{ {} }}",
        vmap.len(),
        vmap.join(" , ")
    );
    f
}

/// One endpoint of a Service port replaced, as one nftables transaction in the way kube-proxy's
/// nftables mode writes an incremental sync: the new endpoint chain, the service chain
/// flushed and rewritten, the old endpoint chain deleted.
pub fn nft_change(old: &SvcPort, new: &SvcPort) -> String {
    let t = "ip kube-proxy";
    let mut f = String::new();
    for ep in new.endpoints.iter().filter(|e| !old.endpoints.contains(e)) {
        let ec = new.nft_ep_chain(*ep);
        let _ = writeln!(f, "add chain {t} {ec}");
        let _ = writeln!(
            f,
            "add rule {t} {ec} ip saddr {} jump mark-for-masquerade",
            ep.0
        );
        let _ = writeln!(
            f,
            "add rule {t} {ec} meta l4proto {} dnat to {}:{}",
            new.proto, ep.0, ep.1
        );
    }
    let _ = writeln!(f, "flush chain {t} {}", new.nft_svc_chain());
    f += &nft_service_rules(new);
    for ep in old.endpoints.iter().filter(|e| !new.endpoints.contains(e)) {
        let _ = writeln!(f, "delete chain {t} {}", old.nft_ep_chain(*ep));
    }
    f
}

/// One endpoint of `new` (an element of `all`) replaced, as an `iptables-restore --noflush`
/// input in the way kube-proxy's iptables mode writes a partial sync (v1.27+): the whole
/// `KUBE-SERVICES` chain, the changed service's chains, and the removed endpoint's chain
/// deleted.
pub fn iptables_change(all: &[SvcPort], old: &SvcPort, new: &SvcPort) -> String {
    let endpoints: usize = all.iter().map(|s| s.endpoints.len()).sum();
    let large = endpoints > 1000;
    let mut f = String::from("*nat\n:KUBE-SERVICES - [0:0]\n");
    let _ = writeln!(f, ":{} - [0:0]", new.svc_chain());
    for ep in &new.endpoints {
        let _ = writeln!(f, ":{} - [0:0]", new.sep_chain(*ep));
    }
    // Declaring a chain flushes it; only an empty chain can be deleted.
    for ep in old.endpoints.iter().filter(|e| !new.endpoints.contains(e)) {
        let _ = writeln!(f, ":{} - [0:0]", old.sep_chain(*ep));
    }
    f += &iptables_service_rules(new, large);
    for s in all {
        f += &iptables_services_rule(s, large);
    }
    f += "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n";
    for ep in old.endpoints.iter().filter(|e| !new.endpoints.contains(e)) {
        let _ = writeln!(f, "-X {}", old.sep_chain(*ep));
    }
    f += "COMMIT\n";
    f
}

fn comment(large: bool, text: &str) -> String {
    if large {
        String::new()
    } else {
        format!(" -m comment --comment \"{text}\"")
    }
}

/// The `KUBE-SVC-*` and `KUBE-SEP-*` rules of one Service port.
fn iptables_service_rules(s: &SvcPort, large: bool) -> String {
    let c = |text: &str| comment(large, text);
    let mut f = String::new();
    let chain = s.svc_chain();
    let spn = s.spn();
    let _ = writeln!(
        f,
        "-A {chain} ! -s {CLUSTER_CIDR} -d {}/32 -p {p}{} -m {p} --dport {} -j KUBE-MARK-MASQ",
        s.vip,
        c(&format!("{spn} cluster IP")),
        s.port,
        p = s.proto
    );
    let n = s.endpoints.len();
    for (i, ep) in s.endpoints.iter().enumerate() {
        let stat = if i + 1 < n {
            format!(
                " -m statistic --mode random --probability {:.11}",
                1.0 / (n - i) as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            f,
            "-A {chain}{}{stat} -j {}",
            c(&format!("{spn} -> {}:{}", ep.0, ep.1)),
            s.sep_chain(*ep)
        );
    }
    for ep in &s.endpoints {
        let sep = s.sep_chain(*ep);
        let _ = writeln!(f, "-A {sep} -s {}/32{} -j KUBE-MARK-MASQ", ep.0, c(&spn));
        let _ = writeln!(
            f,
            "-A {sep} -p {p}{} -m {p} -j DNAT --to-destination {}:{}",
            c(&spn),
            ep.0,
            ep.1,
            p = s.proto
        );
    }
    f
}

/// The `KUBE-SERVICES` rule of one Service port.
fn iptables_services_rule(s: &SvcPort, large: bool) -> String {
    format!(
        "-A KUBE-SERVICES -d {}/32 -p {p}{} -m {p} --dport {} -j {}\n",
        s.vip,
        comment(large, &format!("{} cluster IP", s.spn())),
        s.port,
        s.svc_chain(),
        p = s.proto
    )
}
