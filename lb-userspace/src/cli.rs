//! Operator subcommands. They read the pinned maps directly, so they work while the agent is
//! stopped.
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::datapath::{fmt_addr, proto_name, Datapath, Maps};

#[derive(Serialize)]
pub struct ServiceRow {
    pub id: u32,
    pub frontend: String,
    pub protocol: &'static str,
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
                frontend: fmt_addr(k.addr, k.port),
                protocol: proto_name(k.proto),
                service: f.name.clone(),
                backends: f
                    .slots
                    .iter()
                    .map(|id| {
                        st.backends
                            .get(id)
                            .map(|b| format!("{}:{}", b.ip, b.port))
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
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.to_string(),
                r.frontend.clone(),
                r.protocol.to_string(),
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
            "ID", "FRONTEND", "PROTO", "SERVICE", "BACKENDS", "PACKETS", "BYTES",
        ],
        &table,
    );
    Ok(())
}

#[derive(Serialize)]
struct Status {
    bpf_root: String,
    interfaces: Vec<String>,
    frontends: usize,
    backends: usize,
    conntrack_entries: usize,
}

pub fn status(root: &Path, json: bool) -> Result<()> {
    let maps = Maps::open(root)?;
    let st = maps.read_state()?;
    let s = Status {
        bpf_root: root.display().to_string(),
        interfaces: Datapath::attached(root),
        frontends: st.frontends.len(),
        backends: st.backends.len(),
        conntrack_entries: maps.conntrack.keys().count(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("bpf root:     {}", s.bpf_root);
        println!("attached (TC ingress): {}", s.interfaces.join(", "));
        println!("frontends:    {}", s.frontends);
        println!("backends:     {}", s.backends);
        println!("conntrack:    {} entries", s.conntrack_entries);
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
