//! Tests of the incremental planner: the same ops as the full plan, shared backends.
use std::collections::BTreeSet;

use testkit::Rng;

use super::{apply_checked, be, be6, desired, fe, fe6};
use crate::model::{Changes, DesiredState, FrontendSpec};
use crate::reconcile::planner::service_of;
use crate::reconcile::{plan, MapState, Op, Planner};
use crate::types::{BackendAddr, FrontendKind, Proto};

/// What changed between two desired states, as the incremental model reports it.
fn diff(a: &DesiredState, b: &DesiredState) -> Changes {
    let mut c = Changes::default();
    for fe in a.frontends.keys().chain(b.frontends.keys()) {
        if a.frontends.get(fe) != b.frontends.get(fe) {
            c.frontends.insert(*fe, a.frontends.get(fe).cloned());
        }
    }
    c.cluster_ips = a
        .cluster_ips
        .symmetric_difference(&b.cluster_ips)
        .copied()
        .collect();
    c.node_addresses = a.node_addresses != b.node_addresses;
    c
}

/// Random desired states in a row (frontends of both families appearing, changing and
/// going, backends shared between frontends, renames, policy changes, ClusterIPs and node
/// addresses): the incremental plan gives exactly the full plan's ops and state, and
/// every op keeps the invariants.
#[test]
fn incremental_plan_equals_full_plan() {
    let mut rng = Rng::new(0x1234_5678_9abc_def1u64);
    let mut total_ops = 0;
    for _run in 0..30 {
        let mut desired_prev = DesiredState::default();
        let p = plan(&MapState::default(), &desired_prev);
        let mut planner = Planner::new(p.next, &desired_prev);
        for _step in 0..60 {
            let mut d = desired_prev.clone();
            for _ in 0..=rng.below(4) {
                let i = rng.below(12) as u8;
                let proto = [Proto::Tcp, Proto::Udp][rng.below(2) as usize];
                let v6 = rng.below(3) == 0;
                let addr = match v6 {
                    true => fe6(&format!("fd00:96::{i}"), 80, proto),
                    false => fe([10, 96, 0, i], 80, proto),
                };
                if rng.below(4) == 0 {
                    d.frontends.remove(&addr);
                    continue;
                }
                let mut backends: Vec<BackendAddr> = (0..rng.below(6))
                    .map(|_| {
                        let (last, port) = (rng.below(10) as u8, 8080 + rng.below(2) as u16);
                        match v6 {
                            true => be6(last, port),
                            false => be(last, port),
                        }
                    })
                    .collect();
                backends.sort();
                backends.dedup();
                d.frontends.insert(
                    addr,
                    FrontendSpec {
                        name: format!("default/s{}:p", rng.below(4)),
                        kind: [FrontendKind::ClusterIp, FrontendKind::NodePort]
                            [rng.below(2) as usize],
                        snat: rng.below(2) == 0,
                        drop_when_empty: rng.below(2) == 0,
                        masq_off_cluster: false,
                        backends,
                    },
                );
            }
            d.cluster_ips = d.frontends.keys().map(|f| f.ip).collect();
            if rng.below(5) == 0 {
                d.node_addresses = match rng.below(3) {
                    0 => vec![],
                    1 => vec!["192.168.0.1".parse().unwrap()],
                    _ => vec!["fd00::1".parse().unwrap(), "192.168.0.2".parse().unwrap()],
                };
            }
            let before = planner.state().clone();
            let full = plan(&before, &d);
            assert!(full.errors.is_empty(), "{:?}", full.errors);
            let (ops, errors) = planner.plan(&d, &diff(&desired_prev, &d));
            assert!(errors.is_empty(), "{errors:?}");
            assert_eq!(ops, full.ops);
            assert_eq!(*planner.state(), full.next);
            assert_eq!(apply_checked(&before, &ops), full.next);
            let services: BTreeSet<&str> = full
                .next
                .frontends
                .values()
                .map(|f| service_of(&f.name))
                .collect();
            assert_eq!(planner.services(), services.len());
            total_ops += ops.len();
            desired_prev = d;
        }
    }
    assert!(total_ops > 5_000, "{total_ops}");
}

#[test]
fn incremental_plan_of_one_endpoint_change() {
    let fes: Vec<_> = (0..50u8)
        .map(|i| {
            (
                fe([10, 96, 1, i], 80, Proto::Tcp),
                "x",
                vec![be(i, 80), be(i + 100, 80)],
            )
        })
        .collect();
    let d1 = desired(&fes);
    let p = plan(&MapState::default(), &d1);
    let mut planner = Planner::new(p.next, &d1);
    // Backend 10.244.0.3:80 moves from frontend 3 to frontend 4.
    let mut fes2 = fes.clone();
    fes2[3].2 = vec![be(103, 80)];
    fes2[4].2 = vec![be(4, 80), be(104, 80), be(3, 80)];
    let d2 = desired(&fes2);
    let (ops, _) = planner.plan(&d2, &diff(&d1, &d2));
    // No backend is written or deleted: the moved one is shared.
    assert!(
        ops.iter()
            .all(|o| !matches!(o, Op::SetBackend(..) | Op::DelBackend(_))),
        "{ops:?}"
    );
    assert_eq!(ops.len(), 5, "{ops:?}");
}
