//! `podlb status`: the bpf root, the layout version, the attached interfaces, how full the
//! maps are, the SNAT sources, the cluster CIDRs and the datapath's event counters.
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use lb_common::PIN_LAYOUT_VERSION;

use crate::datapath::{Datapath, Maps};

#[derive(Serialize)]
struct Attachment {
    name: String,
    /// "tc", "xdp-native" or "xdp-generic".
    hook: &'static str,
}

#[derive(Serialize)]
struct Status {
    bpf_root: String,
    /// The pin layout version of the maps (the record under the bpf root); the maps are only
    /// read when it is this podlb's.
    layout_version: u32,
    interfaces: Vec<Attachment>,
    frontends: usize,
    backends: usize,
    conntrack_entries: usize,
    /// IPv4 SNAT source; 0.0.0.0 when there is none.
    snat_address: String,
    /// IPv6 SNAT source; :: when there is none.
    snat_address6: String,
    /// The cluster CIDRs the datapath holds (`--cluster-cidr`), of both families; ClusterIP
    /// traffic from outside them is masqueraded.
    cluster_cidrs: Vec<String>,
    counters: std::collections::BTreeMap<&'static str, u64>,
}

pub fn status(root: &Path, json: bool) -> Result<()> {
    let maps = Maps::open(root)?;
    let st = maps.read_state()?;
    let s = Status {
        bpf_root: root.display().to_string(),
        layout_version: PIN_LAYOUT_VERSION,
        interfaces: Datapath::attached(root)
            .into_iter()
            .map(|(name, hook)| Attachment {
                name,
                hook: hook.name(),
            })
            .collect(),
        frontends: st.frontends.len(),
        backends: st.backends.len(),
        conntrack_entries: maps.conntrack.keys().count(),
        snat_address: std::net::Ipv4Addr::from(st.config.snat_addr).to_string(),
        snat_address6: std::net::Ipv6Addr::from(st.config.snat_addr6).to_string(),
        cluster_cidrs: cluster_cidrs(&st.config),
        counters: maps.counters().into_iter().collect(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("bpf root:        {}", s.bpf_root);
        println!("layout version:  {}", s.layout_version);
        let ifs: Vec<String> = s
            .interfaces
            .iter()
            .map(|a| format!("{} ({})", a.name, a.hook))
            .collect();
        println!("attached:        {}", ifs.join(", "));
        println!("frontends:       {}", s.frontends);
        println!("backends:        {}", s.backends);
        println!("conntrack:       {} entries", s.conntrack_entries);
        println!("snat address:    {}", s.snat_address);
        println!("snat address v6: {}", s.snat_address6);
        let cidrs = match s.cluster_cidrs.is_empty() {
            true => "none".to_string(),
            false => s.cluster_cidrs.join(", "),
        };
        println!("cluster cidrs:   {cidrs}");
        for (name, v) in &s.counters {
            println!("  {name:<20} {v}");
        }
    }
    Ok(())
}

/// The configured cluster CIDRs as "NET/LEN": a family whose mask is all zeros has none.
fn cluster_cidrs(c: &lb_common::Config) -> Vec<String> {
    let len = |mask: &[u8]| mask.iter().map(|b| b.count_ones()).sum::<u32>();
    let mut out = Vec::new();
    if c.cluster_mask != [0; 4] {
        let net = std::net::Ipv4Addr::from(c.cluster_net);
        out.push(format!("{net}/{}", len(&c.cluster_mask)));
    }
    if c.cluster_mask6 != [0; 16] {
        let net = std::net::Ipv6Addr::from(c.cluster_net6);
        out.push(format!("{net}/{}", len(&c.cluster_mask6)));
    }
    out
}
