//! `podlb status`: the bpf root, the layout version, the attached interfaces, how full the
//! maps are, the SNAT sources and the datapath's event counters.
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
        for (name, v) in &s.counters {
            println!("  {name:<20} {v}");
        }
    }
    Ok(())
}
