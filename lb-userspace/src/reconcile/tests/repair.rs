//! Tests of the drift repair: every kind of drift, the order of the repairs, what was written
//! during the read, random drift, and the comparison at scale.
use std::collections::BTreeSet;
use std::net::IpAddr;

use lb_common::{FrontendKey, VipKey, FE_SNAT, SVC_NAME_LEN};
use testkit::Rng;

use super::{apply_read, be, be6, desired, fe, fe6, read_of, step, Pic};
use crate::model::{DesiredState, FrontendSpec};
use crate::reconcile::{
    frontend_key, plan, repair, stored_name, vip_key, BackendKey, MapState, Op, ReadBack, Touched,
};
use crate::types::{BackendAddr, FrontendAddr, FrontendKind, Proto};

/// Frontends whose `count` slots do not all name a backend of their family.
fn broken(r: &Pic) -> BTreeSet<FrontendKey> {
    r.frontends
        .iter()
        .filter(|(k, f)| {
            (0..f.count).any(|s| {
                r.slots
                    .get(&(f.svc_id, s))
                    .and_then(|id| r.backends.get(id))
                    .is_none_or(|b| b.to_map().family != k.family)
            })
        })
        .map(|(k, _)| *k)
        .collect()
}

/// ClusterIPs marked without any frontend on their address.
fn bare_vips(r: &Pic) -> BTreeSet<VipKey> {
    r.vips
        .iter()
        .filter(|v| {
            !r.frontends
                .keys()
                .any(|k| k.addr == v.addr && k.family == v.family)
        })
        .copied()
        .collect()
}

/// The repair of `read` against `mirror` with nothing touched, applied op by op: no
/// frontend breaks and no ClusterIP loses its frontends that was fine before, the result
/// is exactly the mirror's maps, and repairing it again writes nothing.
fn repair_checked(mirror: &MapState, read: &Pic) -> Vec<Op> {
    let ops = repair(mirror, &read.back(), &Touched::default());
    let (broken0, bare0) = (broken(read), bare_vips(read));
    let mut r = read.clone();
    for op in &ops {
        apply_read(&mut r, op);
        let b = broken(&r);
        assert!(b.is_subset(&broken0), "{b:?} broken after {op:?}");
        let v = bare_vips(&r);
        assert!(v.is_subset(&bare0), "{v:?} without frontends after {op:?}");
    }
    assert_eq!(r, read_of(mirror), "repaired maps differ from the mirror");
    assert!(repair(mirror, &r.back(), &Touched::default()).is_empty());
    ops
}

/// A mirror of both families: web (2 backends), dns (1, shared address), web6 (2).
fn drift_mirror() -> (MapState, [FrontendKey; 3]) {
    let web = fe([10, 96, 0, 10], 80, Proto::Tcp);
    let dns = fe([10, 96, 0, 53], 53, Proto::Udp);
    let web6 = fe6("fd00:96::10", 80, Proto::Tcp);
    let d = desired(&[
        (web, "default/web:http", vec![be(10, 8080), be(11, 8080)]),
        (dns, "kube-system/dns:dns", vec![be(10, 53)]),
        (web6, "default/web:http", vec![be6(10, 8080), be6(11, 8080)]),
    ]);
    let (s, _) = step(&MapState::default(), &d);
    (s, [web, dns, web6].map(|f| frontend_key(&f)))
}

#[test]
fn repair_of_identical_maps_writes_nothing() {
    let (m, _) = drift_mirror();
    assert_eq!(repair(&m, &read_of(&m).back(), &Touched::default()), vec![]);
    assert_eq!(
        repair(
            &MapState::default(),
            &ReadBack::default(),
            &Touched::default()
        ),
        vec![]
    );
}

#[test]
fn repair_of_a_deleted_frontend() {
    let (m, [web, ..]) = drift_mirror();
    let mut r = read_of(&m);
    let want = r.frontends.remove(&web).unwrap();
    assert_eq!(repair_checked(&m, &r), vec![Op::SetFrontend(web, want)]);
}

#[test]
fn repair_of_an_altered_or_deleted_backend() {
    let (m, [web, ..]) = drift_mirror();
    let id = m.frontends[&web].slots[0];
    let mut r = read_of(&m);
    r.backends.get_mut(&id).unwrap().port = 1;
    assert_eq!(
        repair_checked(&m, &r),
        vec![Op::SetBackend(id, m.backends[&id])]
    );
    r.backends.remove(&id);
    assert_eq!(
        repair_checked(&m, &r),
        vec![Op::SetBackend(id, m.backends[&id])]
    );
}

#[test]
fn repair_of_an_altered_or_deleted_slot() {
    let (m, [web, dns, _]) = drift_mirror();
    let f = &m.frontends[&web];
    let mut r = read_of(&m);
    // Slot 1 of web names dns's backend (another port), slot 0 is gone.
    r.slots.insert((f.svc_id, 1), m.frontends[&dns].slots[0]);
    r.slots.remove(&(f.svc_id, 0));
    assert_eq!(
        repair_checked(&m, &r),
        vec![
            Op::SetSlot {
                svc_id: f.svc_id,
                slot: 0,
                backend_id: f.slots[0]
            },
            Op::SetSlot {
                svc_id: f.svc_id,
                slot: 1,
                backend_id: f.slots[1]
            },
        ]
    );
}

#[test]
fn repair_of_an_extra_frontend_with_its_slots_and_name() {
    let (m, [web, ..]) = drift_mirror();
    let mut r = read_of(&m);
    let extra = frontend_key(&fe([10, 96, 0, 99], 80, Proto::Tcp));
    let mut e = r.frontends[&web];
    e.svc_id = 77;
    r.frontends.insert(extra, e);
    for (slot, id) in (0u32..).zip(&m.frontends[&web].slots) {
        r.slots.insert((77, slot), *id);
    }
    r.names.insert(77, "default/gone:http".into());
    assert_eq!(
        repair_checked(&m, &r),
        vec![
            Op::DelFrontend(extra),
            Op::DelSlot {
                svc_id: 77,
                slot: 0
            },
            Op::DelSlot {
                svc_id: 77,
                slot: 1
            },
            Op::DelMeta(77),
        ]
    );
}

#[test]
fn repair_of_orphans_and_a_slot_beyond_the_count() {
    let (m, [web, ..]) = drift_mirror();
    let f = &m.frontends[&web];
    let mut r = read_of(&m);
    r.slots.insert((f.svc_id, 2), f.slots[0]);
    r.slots.insert((500, 0), f.slots[0]);
    r.names.insert(501, "x".into());
    // A backend nothing refers to.
    r.backends
        .insert(999, BackendKey::new(be(200, 80), Proto::Tcp));
    assert_eq!(
        repair_checked(&m, &r),
        vec![
            Op::DelSlot {
                svc_id: f.svc_id,
                slot: 2
            },
            Op::DelSlot {
                svc_id: 500,
                slot: 0
            },
            Op::DelMeta(501),
            Op::DelBackend(999),
        ]
    );
}

#[test]
fn repair_of_a_frontend_entry_with_another_count_or_id() {
    let (m, [web, dns, _]) = drift_mirror();
    let f = &m.frontends[&web];
    let mut r = read_of(&m);
    // Count raised over a slot that is not there: broken until the switch.
    r.frontends.get_mut(&web).unwrap().count = 3;
    let want = read_of(&m).frontends[&web];
    assert_eq!(repair_checked(&m, &r), vec![Op::SetFrontend(web, want)]);
    // Pointed at dns's svc_id, and web's own slots gone.
    let mut r = read_of(&m);
    r.frontends.get_mut(&web).unwrap().svc_id = m.frontends[&dns].svc_id;
    r.frontends.get_mut(&web).unwrap().flags = FE_SNAT;
    r.slots.retain(|(id, _), _| *id != f.svc_id);
    let ops = repair_checked(&m, &r);
    assert_eq!(ops.len(), 3, "{ops:?}");
    assert_eq!(ops[2], Op::SetFrontend(web, want), "the switch comes last");
}

#[test]
fn repair_of_names() {
    let (m, [web, ..]) = drift_mirror();
    let id = m.frontends[&web].svc_id;
    let mut r = read_of(&m);
    r.names.insert(id, "default/other:http".into());
    assert_eq!(
        repair_checked(&m, &r),
        vec![Op::SetMeta(id, "default/web:http".into())]
    );
    r.names.remove(&id);
    assert_eq!(
        repair_checked(&m, &r),
        vec![Op::SetMeta(id, "default/web:http".into())]
    );
    // A name longer than the map holds reads back cut, which is no drift.
    let mut long = m.clone();
    long.frontends.get_mut(&web).unwrap().name = format!("default/{}:http", "é".repeat(80));
    assert!(stored_name(&long.frontends[&web].name).len() <= SVC_NAME_LEN + 3);
    assert_eq!(repair_checked(&long, &read_of(&long)), vec![]);
}

#[test]
fn repair_of_cluster_ips_and_config() {
    let (m, [web, ..]) = drift_mirror();
    let vip = m.vips.iter().next().copied().unwrap();
    let extra = vip_key("10.96.0.99".parse().unwrap());
    let mut r = read_of(&m);
    r.vips.remove(&vip);
    r.vips.insert(extra);
    r.config.snat_addr = [1, 2, 3, 4];
    r.frontends.remove(&web);
    let ops = repair_checked(&m, &r);
    assert_eq!(
        ops,
        vec![
            Op::SetConfig(m.config),
            Op::SetFrontend(web, read_of(&m).frontends[&web]),
            Op::SetVip(vip),
            Op::DelVip(extra),
        ]
    );
}

#[test]
fn repair_leaves_out_what_was_written_during_the_read() {
    let (m, [web, dns, web6]) = drift_mirror();
    let (web_id, dns_id) = (m.frontends[&web].svc_id, m.frontends[&dns].svc_id);
    let mut r = read_of(&m);
    // Drift everywhere: web's entry gone and a slot beyond its count, dns's slot and name
    // altered, web6's backend altered, a ClusterIP gone, the config altered.
    r.frontends.remove(&web);
    r.slots.insert((web_id, 5), 1);
    r.slots.insert((dns_id, 0), m.frontends[&web].slots[0]);
    r.names.insert(dns_id, "x".into());
    let b6 = m.frontends[&web6].slots[0];
    r.backends.get_mut(&b6).unwrap().port = 1;
    let vip = vip_key("10.96.0.53".parse().unwrap());
    r.vips.remove(&vip);
    r.config.snat_port_min = 1;
    let all = repair_checked(&m, &r);
    assert_eq!(all.len(), 7, "{all:?}");
    let without = |t: Touched| -> Vec<Op> {
        let ops = repair(&m, &r.back(), &t);
        all.iter().filter(|o| !ops.contains(o)).cloned().collect()
    };
    let t = |f: &dyn Fn(&mut Touched)| {
        let mut t = Touched::default();
        f(&mut t);
        t
    };
    // web's key written: its entry and its slots by id are left out.
    assert_eq!(
        without(t(&|t| {
            t.frontends.insert(web);
        })),
        vec![
            Op::SetFrontend(web, read_of(&m).frontends[&web]),
            Op::DelSlot {
                svc_id: web_id,
                slot: 5
            }
        ]
    );
    // web's slots written (its id): the same unit.
    assert_eq!(
        without(t(&|t| t.record(&[Op::DelSlot {
            svc_id: web_id,
            slot: 0
        }]))),
        without(t(&|t| {
            t.frontends.insert(web);
        }))
    );
    // dns's name written: its slot and name are left out, its entry too.
    assert_eq!(
        without(t(&|t| t.record(&[Op::SetMeta(dns_id, "x".into())]))).len(),
        2
    );
    assert_eq!(
        without(t(&|t| t.record(&[Op::DelBackend(b6)]))),
        vec![Op::SetBackend(b6, m.backends[&b6])]
    );
    assert_eq!(
        without(t(&|t| t.record(&[Op::SetVip(vip)]))),
        vec![Op::SetVip(vip)]
    );
    assert_eq!(
        without(t(&|t| t.record(&[Op::SetConfig(m.config)]))),
        vec![Op::SetConfig(m.config)]
    );
    assert_eq!(without(t(&|t| t.all = true)), all);
    // Writes elsewhere leave everything in.
    assert_eq!(
        without(t(&|t| t.record(&[
            Op::SetBackend(4000, m.backends[&b6]),
            Op::SetMeta(4000, "y".into())
        ]))),
        vec![]
    );
}

/// Random mirrors with random drift on every kind of entry: the repair restores the
/// mirror's maps exactly, breaks nothing that was whole on the way, and a second repair
/// writes nothing.
#[test]
fn repair_restores_random_drift() {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15u64);
    let mut total = 0;
    for _ in 0..300 {
        let fes: Vec<_> = (0..1 + rng.below(8) as u8)
            .map(|i| {
                let backends = (0..rng.below(5))
                    .map(|_| be(rng.below(12) as u8, 80))
                    .collect();
                (fe([10, 96, 0, i], 80, Proto::Tcp), "default/s:p", backends)
            })
            .collect();
        let mut d = desired(&fes);
        for b in d.frontends.values_mut() {
            b.backends.sort();
            b.backends.dedup();
        }
        let (m, _) = step(&MapState::default(), &d);
        let mut r = read_of(&m);
        let keys: Vec<FrontendKey> = m.frontends.keys().copied().collect();
        let key = |n: u64| keys[n as usize % keys.len()];
        for _ in 0..=rng.below(4) {
            let k = key(rng.below(100));
            let id = m.frontends[&k].svc_id;
            match rng.below(12) {
                0 => {
                    r.frontends.remove(&k);
                }
                1 => {
                    if let Some(f) = r.frontends.get_mut(&k) {
                        f.count = rng.below(4) as u32;
                    }
                }
                2 => {
                    if let Some(f) = r.frontends.get_mut(&k) {
                        f.svc_id = 1 + rng.below(10) as u32;
                    }
                }
                3 => {
                    r.slots
                        .insert((id, rng.below(6) as u32), 1 + rng.below(14) as u32);
                }
                4 => {
                    r.slots.remove(&(id, rng.below(4) as u32));
                }
                5 => {
                    r.names.insert(1 + rng.below(10) as u32, "n".into());
                }
                6 => {
                    r.names.remove(&id);
                }
                7 => {
                    let b = 1 + rng.below(14) as u32;
                    r.backends.insert(
                        b,
                        BackendKey::new(be(100 + rng.below(3) as u8, 80), Proto::Tcp),
                    );
                }
                8 => {
                    r.backends.remove(&(1 + rng.below(14) as u32));
                }
                9 => {
                    let f = read_of(&m).frontends[&key(0)];
                    r.frontends
                        .insert(frontend_key(&fe([10, 96, 1, 1], 80, Proto::Udp)), f);
                }
                10 => {
                    r.vips
                        .remove(&vip_key(IpAddr::from([10, 96, 0, rng.below(8) as u8])));
                    r.vips
                        .insert(vip_key(IpAddr::from([10, 96, 2, rng.below(2) as u8])));
                }
                _ => r.config.snat_port_max = rng.below(3) as u16,
            }
        }
        total += repair_checked(&m, &r).len();
    }
    assert!(total > 300, "{total}");
}

/// 10,000 frontends of 10 backends each: the comparison (the part of a resync that runs
/// on the agent loop) of the mirror with its own read-back, and with one drifted slot.
#[test]
fn repair_at_scale() {
    let mut d = DesiredState::default();
    for i in 0..10_000u32 {
        let f = FrontendAddr {
            ip: IpAddr::from([10, 100, (i / 250) as u8, (i % 250) as u8 + 1]),
            port: 80,
            proto: Proto::Tcp,
        };
        let backends = (0..10u32)
            .map(|j| {
                let p = (i * 10 + j) % 50_000;
                BackendAddr {
                    ip: IpAddr::from([10, 128, (p / 250) as u8, (p % 250) as u8 + 1]),
                    port: 8080,
                }
            })
            .collect();
        d.cluster_ips.insert(f.ip);
        d.frontends.insert(
            f,
            FrontendSpec {
                name: format!("default/svc-{i}:http"),
                kind: FrontendKind::ClusterIp,
                snat: false,
                drop_when_empty: false,
                masq_off_cluster: false,
                backends,
            },
        );
    }
    let m = plan(&MapState::default(), &d).next;
    let mut r = read_of(&m).back();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let ops = repair(&m, &r, &Touched::default());
        times.push(t.elapsed());
        assert!(ops.is_empty());
    }
    r.slots[12_345].1 = 1;
    let ops = repair(&m, &r, &Touched::default());
    assert_eq!(ops.len(), 1);
    let t = std::time::Instant::now();
    drop(r);
    let dropped = t.elapsed();
    let first = times[0];
    times.sort();
    eprintln!(
        "repair of 10,000 x 10 against its read-back: first {first:?}, median {:?}, max {:?}; \
         dropping the read-back: {dropped:?}",
        times[2], times[4]
    );
}
