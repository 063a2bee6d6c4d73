//! Tests of the full plan: writes, their order and the datapath invariants on the way, stable
//! and reused ids, slot layout, both families.
use std::collections::BTreeSet;

use super::{be, be6, desired, fe, fe6, step};
use crate::model::DesiredState;
use crate::reconcile::plan::place;
use crate::reconcile::{frontend_key, plan, vip_key, BackendKey, MapState, Op};
use crate::types::{BackendAddr, FrontendAddr, Proto};

#[test]
fn empty_to_services_and_back() {
    let web = fe([10, 96, 0, 10], 80, Proto::Tcp);
    let dns = fe([10, 96, 0, 53], 53, Proto::Udp);
    let d = desired(&[
        (web, "default/web:http", vec![be(10, 8080), be(11, 8080)]),
        (dns, "kube-system/dns", vec![be(10, 53)]),
    ]);
    let (s1, ops) = step(&MapState::default(), &d);
    assert_eq!(s1.frontends.len(), 2);
    assert_eq!(
        s1.backends.len(),
        3,
        "same IP on two ports/protocols = two backends"
    );
    assert!(ops.iter().any(|o| matches!(o, Op::ResetStats(_))));
    // Unchanged desired state: nothing to write.
    let (s2, ops) = step(&s1, &d);
    assert!(ops.is_empty(), "{ops:?}");
    assert_eq!(s1, s2);
    // Remove everything.
    let (s3, ops) = step(&s2, &DesiredState::default());
    assert!(s3.frontends.is_empty() && s3.backends.is_empty() && s3.vips.is_empty());
    assert!(matches!(ops.last(), Some(Op::DelBackend(_))));
}

#[test]
fn one_endpoint_change_writes_a_handful() {
    let web = fe([10, 96, 0, 10], 80, Proto::Tcp);
    let mut fes: Vec<_> = (0..50u8)
        .map(|i| {
            (
                fe([10, 96, 1, i], 80, Proto::Tcp),
                "x",
                vec![be(i, 80), be(i + 100, 80)],
            )
        })
        .collect();
    fes.push((web, "web", vec![be(10, 8080), be(11, 8080), be(12, 8080)]));
    let (s1, _) = step(&MapState::default(), &desired(&fes));
    // Replace one backend of "web": one backend write, one slot write, one backend delete.
    fes.last_mut().unwrap().2 = vec![be(10, 8080), be(13, 8080), be(12, 8080)];
    let (s2, ops) = step(&s1, &desired(&fes));
    assert_eq!(ops.len(), 3, "{ops:?}");
    let f = &s2.frontends[&frontend_key(&web)];
    assert_eq!(
        f.svc_id,
        s1.frontends[&frontend_key(&web)].svc_id,
        "svc id is stable"
    );
    assert_eq!(
        f.slots[0],
        s1.frontends[&frontend_key(&web)].slots[0],
        "kept backend keeps its slot"
    );
}

#[test]
fn shrink_grow_and_replace_never_expose_dead_slots() {
    let web = fe([10, 96, 0, 10], 80, Proto::Tcp);
    let sets: Vec<Vec<BackendAddr>> = vec![
        vec![be(1, 80), be(2, 80), be(3, 80), be(4, 80)],
        vec![be(2, 80), be(4, 80)],
        vec![be(5, 80), be(6, 80), be(7, 80)],
        vec![],
        vec![be(1, 80)],
        vec![
            be(1, 80),
            be(2, 80),
            be(3, 80),
            be(4, 80),
            be(5, 80),
            be(6, 80),
        ],
        vec![be(6, 80)],
    ];
    walk_backend_sets(web, &sets);
}

/// Steps one frontend through backend sets in a row ([`step`] checks every op); after each,
/// its slots name exactly the set.
fn walk_backend_sets(web: FrontendAddr, sets: &[Vec<BackendAddr>]) {
    let mut s = MapState::default();
    for set in sets {
        let (n, _) = step(&s, &desired(&[(web, "web", set.clone())]));
        let got: BTreeSet<BackendKey> = n.frontends[&frontend_key(&web)]
            .slots
            .iter()
            .map(|id| n.backends[id])
            .collect();
        let want: BTreeSet<BackendKey> =
            set.iter().map(|b| BackendKey::new(*b, web.proto)).collect();
        assert_eq!(got, want);
        s = n;
    }
}

#[test]
fn frontend_without_backends_is_programmed_with_zero_count() {
    let web = fe([10, 96, 0, 10], 80, Proto::Tcp);
    let (s, ops) = step(&MapState::default(), &desired(&[(web, "web", vec![])]));
    assert!(s.frontends[&frontend_key(&web)].slots.is_empty());
    assert!(ops
        .iter()
        .any(|o| matches!(o, Op::SetFrontend(_, f) if f.count == 0)));
}

#[test]
fn ids_are_reused_lowest_first() {
    let a = fe([10, 96, 0, 1], 80, Proto::Tcp);
    let b = fe([10, 96, 0, 2], 80, Proto::Tcp);
    let (s1, _) = step(
        &MapState::default(),
        &desired(&[(a, "a", vec![be(1, 80)]), (b, "b", vec![be(2, 80)])]),
    );
    let (s2, _) = step(&s1, &desired(&[(b, "b", vec![be(2, 80)])]));
    let c = fe([10, 96, 0, 3], 80, Proto::Tcp);
    let (s3, _) = step(
        &s2,
        &desired(&[(b, "b", vec![be(2, 80)]), (c, "c", vec![be(3, 80)])]),
    );
    assert_eq!(
        s3.frontends[&frontend_key(&c)].svc_id,
        s1.frontends[&frontend_key(&a)].svc_id
    );
    assert_eq!(
        s3.frontends[&frontend_key(&b)].svc_id,
        s1.frontends[&frontend_key(&b)].svc_id
    );
}

#[test]
fn place_keeps_and_compacts() {
    assert_eq!(place(&[1, 2, 3, 4], &[1, 2, 3, 4]), vec![1, 2, 3, 4]);
    assert_eq!(place(&[1, 2, 3, 4], &[1, 3, 4]), vec![1, 4, 3]);
    assert_eq!(place(&[1, 2, 3], &[1, 3, 5]), vec![1, 5, 3]);
    assert_eq!(place(&[], &[7, 8]), vec![7, 8]);
    assert_eq!(place(&[1, 2, 3, 4], &[4]), vec![4]);
    assert_eq!(place(&[1, 2], &[]), Vec::<u32>::new());
}

#[test]
fn dual_stack_service_shares_id_spaces() {
    let v4 = fe([10, 96, 0, 10], 80, Proto::Tcp);
    let v6 = fe6("fd00:96::10", 80, Proto::Tcp);
    let d = desired(&[
        (v4, "default/web:http", vec![be(1, 8080), be(2, 8080)]),
        (v6, "default/web:http", vec![be6(1, 8080), be6(2, 8080)]),
    ]);
    let (s1, _) = step(&MapState::default(), &d);
    // One id space: four distinct backend ids, two distinct svc ids.
    assert_eq!(s1.backends.len(), 4);
    assert_eq!(
        s1.backends.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let (f4, f6) = (
        &s1.frontends[&frontend_key(&v4)],
        &s1.frontends[&frontend_key(&v6)],
    );
    assert_ne!(f4.svc_id, f6.svc_id);
    assert!(f6.slots.iter().all(|id| s1.backends[id].ip.is_ipv6()));
    assert!(f4.slots.iter().all(|id| s1.backends[id].ip.is_ipv4()));
    assert_eq!(
        s1.vips,
        [vip_key(v4.ip), vip_key(v6.ip)].into_iter().collect()
    );
    // SNAT addresses of both families.
    assert_eq!(s1.config.snat_addr, [192, 168, 77, 1]);
    assert_eq!(
        s1.config.snat_addr6,
        "2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
    );
    // Unchanged: nothing to write.
    assert!(step(&s1, &d).1.is_empty());
    // Dropping the IPv6 family leaves the IPv4 frontend untouched.
    let only4 = desired(&[(v4, "default/web:http", vec![be(1, 8080), be(2, 8080)])]);
    let (s2, ops) = step(&s1, &only4);
    assert!(
        ops.iter()
            .all(|o| !matches!(o, Op::SetFrontend(..) | Op::SetSlot { .. })),
        "{ops:?}"
    );
    assert_eq!(s2.frontends[&frontend_key(&v4)], *f4);
    assert_eq!(s2.backends.len(), 2);
    assert_eq!(s2.vips, [vip_key(v4.ip)].into_iter().collect());
    // And back to dual-stack.
    let (s3, _) = step(&s2, &d);
    assert_eq!(s3.backends.len(), 4);
    assert_eq!(s3.frontends.len(), 2);
}

#[test]
fn same_address_bytes_in_two_families_are_two_frontends() {
    // 10.96.0.10 and the IPv6 address whose first bytes are 10.96.0.10 differ only in
    // the family field; neither may shadow the other.
    let v4 = fe([10, 96, 0, 10], 80, Proto::Tcp);
    let v6 = fe6("a60:a::", 80, Proto::Tcp);
    assert_eq!(frontend_key(&v4).addr[..4], frontend_key(&v6).addr[..4]);
    let (s, _) = step(
        &MapState::default(),
        &desired(&[(v4, "a", vec![be(1, 80)]), (v6, "b", vec![be6(1, 80)])]),
    );
    assert_eq!(s.frontends.len(), 2);
    assert_eq!(s.vips.len(), 2);
}

#[test]
fn backend_of_the_other_family_is_left_out() {
    let v6 = fe6("fd00:96::10", 80, Proto::Tcp);
    let p = plan(
        &MapState::default(),
        &desired(&[(v6, "web", vec![be6(1, 80), be(1, 80)])]),
    );
    assert_eq!(
        p.errors,
        vec!["frontend [fd00:96::10]:80/TCP (web): backend 10.244.0.1:80 of the other family left out"]
    );
    let f = &p.next.frontends[&frontend_key(&v6)];
    assert_eq!(f.slots.len(), 1);
    assert_eq!(p.next.backends.len(), 1);
}

#[test]
fn shrink_grow_and_replace_ipv6() {
    let web = fe6("fd00:96::10", 443, Proto::Sctp);
    walk_backend_sets(
        web,
        &[
            vec![be6(1, 80), be6(2, 80), be6(3, 80)],
            vec![be6(3, 80)],
            vec![be6(4, 80), be6(3, 80), be6(5, 80)],
            vec![],
        ],
    );
}
