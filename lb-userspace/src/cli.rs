//! Operator subcommands. They read the pinned maps directly, so they work while the agent is
//! stopped.
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use lb_common::{FE_DROP_EMPTY, FE_SNAT, PIN_LAYOUT_VERSION};

use crate::datapath::{fmt_addr, Datapath, Maps};
use crate::types::{Family, FrontendKind, Proto};

#[derive(Serialize)]
pub struct ServiceRow {
    pub id: u32,
    /// `10.96.0.10:80`, or `[fd00::10]:80` for IPv6.
    pub frontend: String,
    /// "IPv4" or "IPv6"; the backends are of the same family.
    pub family: &'static str,
    pub protocol: &'static str,
    /// ClusterIP, NodePort, ExternalIP or LoadBalancer.
    pub kind: &'static str,
    /// Policy flags: "snat" (masquerade), "drop-empty" (drop instead of reject without backends).
    pub flags: Vec<&'static str>,
    pub service: String,
    pub backends: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
}

/// Frontends with their backends and counters, sorted by frontend.
pub fn service_rows(root: &Path) -> Result<Vec<ServiceRow>> {
    let maps = Maps::open(root)?;
    let st = maps.read_state()?;
    Ok(st
        .frontends
        .iter()
        .map(|(k, f)| {
            let stats = maps.stats_of(f.svc_id);
            ServiceRow {
                id: f.svc_id,
                frontend: fmt_addr(&k.addr, k.family, k.port),
                family: Family::name_of(k.family),
                protocol: Proto::name_of(k.proto),
                kind: FrontendKind::name_of(f.kind),
                flags: [(FE_SNAT, "snat"), (FE_DROP_EMPTY, "drop-empty")]
                    .into_iter()
                    .filter(|(bit, _)| f.flags & bit != 0)
                    .map(|(_, n)| n)
                    .collect(),
                service: f.name.clone(),
                backends: f
                    .slots
                    .iter()
                    .map(|id| {
                        st.backends
                            .get(id)
                            .map(|b| b.socket_addr().to_string())
                            .unwrap_or_else(|| format!("?{id}"))
                    })
                    .collect(),
                packets: stats.packets,
                bytes: stats.bytes,
            }
        })
        .collect())
}

pub fn service_list(root: &Path, json: bool) -> Result<()> {
    let rows = service_rows(root)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.frontend.clone(),
                r.protocol.to_string(),
                if r.flags.is_empty() {
                    r.kind.to_string()
                } else {
                    format!("{} ({})", r.kind, r.flags.join(","))
                },
                r.service.clone(),
                if r.backends.is_empty() {
                    "(none)".into()
                } else {
                    r.backends.join(", ")
                },
                r.packets.to_string(),
                r.bytes.to_string(),
            ]
        })
        .collect();
    print_table(
        [
            "ID", "FRONTEND", "PROTO", "TYPE", "SERVICE", "BACKENDS", "PACKETS", "BYTES",
        ],
        &table,
    );
    Ok(())
}

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

fn print_table<const N: usize>(head: [&str; N], rows: &[[String; N]]) {
    let mut w: [usize; N] = head.map(str::len);
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
