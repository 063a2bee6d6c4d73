//! `podlb service list`: the frontends with their backends and counters, as a table or JSON.
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use lb_common::{FE_DROP_EMPTY, FE_MASQ_OFF_CLUSTER, FE_SNAT};

use super::table::print_table;
use crate::datapath::{fmt_addr, Maps};
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
                flags: [
                    (FE_SNAT, "snat"),
                    (FE_DROP_EMPTY, "drop-empty"),
                    (FE_MASQ_OFF_CLUSTER, "masq-off-cluster"),
                ]
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
