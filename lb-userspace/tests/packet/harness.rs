//! The harness of the packet tests: one loaded TC or XDP program (and, on demand, the TC
//! egress program) with its maps, filled for either family, run through BPF_PROG_TEST_RUN; and
//! the checks of verdicts, conntrack entries and counters. The frames come from
//! `testkit::frame`.

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{ProgramError, SchedClassifier, Xdp},
    Ebpf, EbpfLoader, Pod, TestRun, TestRunOptions,
};
use lb_common::*;
use podlb::datapath::EBPF_OBJECT;
use testkit::frame::{assert_frame_eq, Addr6, Ip};
use testkit::testbed::{require_root, Netns};

/// `TC_NEXT` (-1) as the kernel reports it.
pub const TC_NEXT: u32 = u32::MAX;
pub const TC_ACT_SHOT: u32 = 2;
/// The packet was turned into a reply and redirected (back out of the ingress interface).
pub const TC_ACT_REDIRECT: u32 = 7;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

// ---------------------------------------------------------------------------------------------
// Harness: one loaded program (TC or XDP) and its maps.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Tc,
    Xdp,
}

impl Hook {
    /// NATed and handed on (TC: next program; XDP: no route in the test namespace, so the
    /// kernel stack gets it).
    pub fn nat(self) -> u32 {
        match self {
            Hook::Tc => TC_NEXT,
            Hook::Xdp => XDP_PASS,
        }
    }
    /// Not ours: left alone.
    pub fn pass(self) -> u32 {
        self.nat()
    }
    pub fn drop(self) -> u32 {
        match self {
            Hook::Tc => TC_ACT_SHOT,
            Hook::Xdp => XDP_DROP,
        }
    }
    /// Turned into a reply and sent back out.
    pub fn reject(self) -> u32 {
        match self {
            Hook::Tc => TC_ACT_REDIRECT,
            Hook::Xdp => XDP_TX,
        }
    }
}

pub struct Harness {
    pub hook: Hook,
    pub ebpf: Ebpf,
    /// XDP only: `bpf_fib_lookup` resolves in the namespace of the thread doing the test run, so
    /// every XDP harness owns a fresh namespace and runs the program only from inside it.
    ns: Option<Netns>,
    /// XDP: `xdp_md.ingress_ifindex` for the test run; `None`: the namespace's loopback.
    pub ingress: Option<u32>,
    pub next_backend: u32,
}

impl Harness {
    /// The TC program `podlb_tc_pod`.
    pub fn tc() -> Self {
        Self::new(Hook::Tc, "tc")
    }

    /// The XDP program `podlb_xdp_ext`, in a fresh network namespace.
    pub fn xdp() -> Self {
        Self::new(Hook::Xdp, "xdp")
    }

    /// Loads the program of `hook`; for XDP, creates its namespace (named after `ns_name`).
    pub fn new(hook: Hook, ns_name: &str) -> Self {
        require_root().expect("packet tests load eBPF programs and must run as root");
        assert!(
            !EBPF_OBJECT.is_empty(),
            "built without the eBPF object; run `cargo xtask build` first"
        );
        let mut ebpf = EbpfLoader::new()
            .load(EBPF_OBJECT)
            .expect("loading the eBPF object");
        let ns = match hook {
            Hook::Tc => {
                let prog: &mut SchedClassifier = ebpf
                    .program_mut(PROG_TC_POD)
                    .expect("program missing")
                    .try_into()
                    .unwrap();
                prog.load().expect("loading the TC program (verifier)");
                None
            }
            Hook::Xdp => {
                let prog: &mut Xdp = ebpf
                    .program_mut(PROG_XDP_EXT)
                    .expect("program missing")
                    .try_into()
                    .unwrap();
                prog.load().expect("loading the XDP program (verifier)");
                Some(Netns::new(ns_name).expect("creating a network namespace"))
            }
        };
        Self {
            hook,
            ebpf,
            ns,
            ingress: None,
            next_backend: 1,
        }
    }

    /// The XDP harness's network namespace.
    pub fn ns(&self) -> &Netns {
        self.ns
            .as_ref()
            .expect("only an XDP harness has a namespace")
    }

    /// Runs one frame (XDP: inside the harness namespace); `Err` when the kernel refuses the
    /// test run itself.
    pub fn try_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
        match self.hook {
            Hook::Tc => tc_test_run(&self.ebpf, PROG_TC_POD, frame),
            Hook::Xdp => {
                let prog: &Xdp = self.ebpf.program(PROG_XDP_EXT).unwrap().try_into().unwrap();
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
                // egress.
                let md: Vec<u8> = [0, frame.len() as u32, 0, self.ingress.unwrap_or(0), 0, 0]
                    .iter()
                    .flat_map(|w| w.to_ne_bytes())
                    .collect();
                let (verdict, out) = self.ns().run_in(move || {
                    let mut out = vec![0u8; frame.len() + 256];
                    let mut md_out = vec![0u8; md.len()];
                    let r = prog.test_run(TestRunOptions {
                        data_in: Some(frame),
                        data_out: Some(&mut out),
                        ctx_in: Some(md.as_slice()),
                        ctx_out: Some(&mut md_out),
                        ..Default::default()
                    })?;
                    out.truncate(r.data_size_out as usize);
                    // The output starts at the XDP metadata; xdp_md.data is its length.
                    let meta = u32::from_ne_bytes(md_out[0..4].try_into().unwrap()) as usize;
                    let frame = out.split_off(meta);
                    assert_xdp_handoff(r.return_value, &out);
                    Ok::<_, ProgramError>((r.return_value, frame))
                })?;
                Ok((verdict, out))
            }
        }
    }

    #[track_caller]
    pub fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.try_run(frame).expect("BPF_PROG_TEST_RUN")
    }

    /// Loads the TC egress program `podlb_tc_egress` into this harness's `Ebpf` (so it shares
    /// the maps).
    pub fn load_egress(&mut self) {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(PROG_TC_EGRESS)
            .expect("program missing")
            .try_into()
            .unwrap();
        prog.load()
            .expect("loading the TC egress program (verifier)");
    }

    /// Runs one frame through the TC egress program (see [`Harness::load_egress`]).
    pub fn try_run_egress(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
        tc_test_run(&self.ebpf, PROG_TC_EGRESS, frame)
    }

    #[track_caller]
    pub fn run_egress(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.try_run_egress(frame)
            .expect("BPF_PROG_TEST_RUN (egress)")
    }

    pub fn hash<K: Pod, V: Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        HashMap::try_from(self.ebpf.map_mut(name).unwrap()).unwrap()
    }

    pub fn set_backend(&mut self, id: u32, b: Backend) {
        let mut m: Array<_, Backend> =
            Array::try_from(self.ebpf.map_mut(MAP_BACKENDS).unwrap()).unwrap();
        m.set(id, b, 0).unwrap();
    }

    /// Adds a backend of either family; returns its id.
    pub fn new_backend<A: Ip>(&mut self, (addr, port): (A, u16), proto: u8) -> u32 {
        let id = self.next_backend;
        self.next_backend += 1;
        let b = Backend {
            addr: addr.map_addr(),
            port,
            proto,
            family: A::FAMILY.number(),
        };
        self.set_backend(id, b);
        id
    }

    /// Writes the slots of `svc_id`, then the frontend `fe` (of either family) with its count.
    pub fn write_frontend<A: Ip>(
        &mut self,
        fe: (A, u16),
        proto: u8,
        svc_id: u32,
        ids: &[u32],
        flags: u16,
        kind: u16,
    ) {
        let mut slots = self.hash::<SlotKey, Slot>(MAP_SLOTS);
        for (i, id) in ids.iter().enumerate() {
            let key = SlotKey {
                svc_id,
                slot: i as u32,
            };
            slots.insert(key, Slot { backend_id: *id }, 0).unwrap();
        }
        let key = FrontendKey {
            addr: fe.0.map_addr(),
            port: fe.1,
            proto,
            family: A::FAMILY.number(),
        };
        let val = Frontend {
            svc_id,
            count: ids.len() as u32,
            flags,
            kind,
            pad: 0,
        };
        self.hash::<FrontendKey, Frontend>(MAP_FRONTENDS)
            .insert(key, val, 0)
            .unwrap();
    }

    /// Writes the slots of `svc_id`, then the ClusterIP frontend `fe` with its count, then
    /// removes the stale slots (the reconciler's order).
    pub fn set_frontend<A: Ip>(
        &mut self,
        fe: (A, u16),
        proto: u8,
        svc_id: u32,
        ids: &[u32],
        flags: u16,
    ) {
        self.write_frontend(fe, proto, svc_id, ids, flags, KIND_CLUSTER_IP);
        self.remove_stale_slots(svc_id, ids.len() as u32);
    }

    /// Removes the slots of `svc_id` from `count` on (stops at the first missing one).
    pub fn remove_stale_slots(&mut self, svc_id: u32, count: u32) {
        let mut slots = self.hash::<SlotKey, Slot>(MAP_SLOTS);
        for slot in count..MAX_BACKENDS_PER_SERVICE {
            if slots.remove(&SlotKey { svc_id, slot }).is_err() {
                break;
            }
        }
    }

    /// Adds backends (with `proto`) and a frontend of `kind` for them (all of one family),
    /// without touching stale slots; returns the backend ids (in slot order).
    pub fn add_frontend<A: Ip>(
        &mut self,
        fe: (A, u16),
        proto: u8,
        svc_id: u32,
        backends: &[(A, u16)],
        flags: u16,
        kind: u16,
    ) -> Vec<u32> {
        let ids: Vec<u32> = backends
            .iter()
            .map(|b| self.new_backend(*b, proto))
            .collect();
        self.write_frontend(fe, proto, svc_id, &ids, flags, kind);
        ids
    }

    pub fn conntrack(&mut self) -> Vec<(CtKey, CtEntry)> {
        let ct = self.hash::<CtKey, CtEntry>(MAP_CONNTRACK);
        let v = ct.iter().map(|r| r.unwrap()).collect();
        v
    }

    /// The conntrack entries, printed and sorted: to compare before and after.
    pub fn sorted_conntrack(&mut self) -> Vec<String> {
        let mut v: Vec<String> = self.conntrack().iter().map(|e| format!("{e:?}")).collect();
        v.sort();
        v
    }

    pub fn ct_get(&mut self, key: CtKey) -> Option<CtEntry> {
        self.hash::<CtKey, CtEntry>(MAP_CONNTRACK).get(&key, 0).ok()
    }

    /// Sum of the per-CPU counters of one service.
    pub fn stats(&self, svc_id: u32) -> SvcStats {
        let m: PerCpuArray<_, SvcStats> =
            PerCpuArray::try_from(self.ebpf.map(MAP_SVC_STATS).unwrap()).unwrap();
        m.get(&svc_id, 0)
            .unwrap()
            .iter()
            .fold(SvcStats::default(), |a, s| SvcStats {
                packets: a.packets + s.packets,
                bytes: a.bytes + s.bytes,
            })
    }

    /// Sum over the CPUs of one `CNT_*` event counter.
    pub fn counter(&self, idx: u32) -> u64 {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(MAP_COUNTERS).unwrap()).unwrap();
        m.get(&idx, 0).unwrap().iter().sum()
    }

    /// All `CNT_*` counters, by index.
    pub fn counters(&self) -> Vec<u64> {
        (0..COUNTERS).map(|i| self.counter(i)).collect()
    }

    /// The config with an IPv4 SNAT address only (`[0; 4]` disables SNAT).
    pub fn set_config(&mut self, snat_addr: [u8; 4], snat_port_min: u16, snat_port_max: u16) {
        self.set_config6(snat_addr, [0; 16], snat_port_min, snat_port_max);
    }

    /// The config with both SNAT addresses (`[0; 4]` / `[0; 16]` disable SNAT per family).
    pub fn set_config6(
        &mut self,
        snat_addr: [u8; 4],
        snat_addr6: [u8; 16],
        snat_port_min: u16,
        snat_port_max: u16,
    ) {
        let mut m: Array<_, Config> =
            Array::try_from(self.ebpf.map_mut(MAP_CONFIG).unwrap()).unwrap();
        let cfg = Config {
            snat_addr,
            snat_port_min,
            snat_port_max,
            snat_addr6,
            ..Config::default()
        };
        m.set(0, cfg, 0).unwrap();
    }

    /// Writes the whole config entry.
    pub fn write_config(&mut self, cfg: Config) {
        let mut m: Array<_, Config> =
            Array::try_from(self.ebpf.map_mut(MAP_CONFIG).unwrap()).unwrap();
        m.set(0, cfg, 0).unwrap();
    }

    /// Marks `addr` (of either family) as a ClusterIP (ports it does not expose are rejected).
    pub fn add_vip<A: Ip>(&mut self, addr: A) {
        let key = VipKey {
            addr: addr.map_addr(),
            family: A::FAMILY.number(),
            pad: [0; 3],
        };
        self.hash::<VipKey, Vip>(MAP_VIPS)
            .insert(key, Vip { flags: 0 }, 0)
            .unwrap();
    }

    /// Runs `ip <args>` in the XDP harness namespace.
    pub fn ip(&self, args: &str) {
        let args: Vec<&str> = std::iter::once("ip")
            .chain(args.split_whitespace())
            .collect();
        self.ns()
            .exec(&args)
            .unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
    }

    /// The index of interface `name` in the XDP harness namespace.
    pub fn ifindex(&self, name: &str) -> u32 {
        let c = std::ffi::CString::new(name).unwrap();
        let i = self
            .ns()
            .run_in(|| unsafe { libc::if_nametoindex(c.as_ptr()) });
        assert_ne!(i, 0, "no interface {name}");
        i
    }
}

pub fn ct_key<A: Ip>(src: (A, u16), dst: (A, u16), proto: u8) -> CtKey {
    CtKey {
        saddr: src.0.map_addr(),
        daddr: dst.0.map_addr(),
        sport: src.1,
        dport: dst.1,
        proto,
        family: A::FAMILY.number(),
        pad: [0; 2],
    }
}

/// A conntrack entry; `snat` is `([0; 4], 0)` or [`NO_SNAT6`] when the flow is not
/// source-NATed.
pub fn ct_entry<A: Ip>(
    nat: (A, u16),
    flags: u32,
    svc_id: u32,
    backend_id: u32,
    snat: (A, u16),
) -> CtEntry {
    CtEntry {
        nat_addr: nat.0.map_addr(),
        nat_port: nat.1,
        snat_port: snat.1,
        snat_addr: snat.0.map_addr(),
        flags,
        svc_id,
        backend_id,
    }
}

/// The `snat` of an IPv6 conntrack entry whose flow is not source-NATed.
pub const NO_SNAT6: Addr6 = ([0; 16], 0);

/// Runs `frame` through the TC program `name` of `ebpf`: (verdict, output frame).
fn tc_test_run(ebpf: &Ebpf, name: &str, frame: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
    let prog: &SchedClassifier = ebpf.program(name).unwrap().try_into().unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let r = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..Default::default()
    })?;
    out.truncate(r.data_size_out as usize);
    Ok((r.return_value, out))
}

/// Expects exactly these `CNT_*` counters to be non-zero, with these values.
#[track_caller]
pub fn assert_counters(h: &Harness, nonzero: &[(u32, u64)]) {
    let mut want = vec![0; COUNTERS as usize];
    for &(i, n) in nonzero {
        want[i as usize] = n;
    }
    assert_eq!(h.counters(), want, "counters (by index: {COUNTER_NAMES:?})");
}

/// Runs `input` and expects it left alone, unchanged (TC: `TC_NEXT`; XDP: `XDP_PASS`).
#[track_caller]
pub fn assert_untouched(h: &Harness, input: &[u8]) {
    let (verdict, out) = h.run(input);
    assert_eq!(verdict, h.hook.pass(), "verdict");
    assert_frame_eq(&out, input);
}

/// Runs `input` and expects it dropped (left as it was).
#[track_caller]
pub fn assert_dropped(h: &Harness, input: &[u8]) {
    let (verdict, out) = h.run(input);
    assert_eq!(verdict, h.hook.drop(), "verdict");
    assert_frame_eq(&out, input);
}

/// The XDP program hands every packet it passes on to the TC program with a mark in its
/// metadata (so TC does not repeat the lookups); anything else carries no metadata.
#[track_caller]
fn assert_xdp_handoff(verdict: u32, meta: &[u8]) {
    const XDP_PASS: u32 = 2;
    const MARK: u32 = 0x706f_646c;
    if verdict == XDP_PASS {
        assert_eq!(
            meta,
            MARK.to_ne_bytes(),
            "XDP_PASS without the handoff mark for TC"
        );
    } else {
        assert!(meta.is_empty(), "metadata {meta:02x?} on verdict {verdict}");
    }
}
