//! Shared by the BPF_PROG_TEST_RUN packet tests (`packet_tests.rs`, `xdp_packet_tests.rs`,
//! `sctp_packet_tests.rs`): the harness (one loaded TC or XDP program and its maps), the
//! Ethernet + IPv4 + TCP/UDP frame builder, and the independent checksum arithmetic and
//! verifiers.

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{ProgramError, SchedClassifier, Xdp},
    Ebpf, EbpfLoader, Pod, TestRun, TestRunOptions,
};
use lb_common::*;
use podlb::{
    datapath::EBPF_OBJECT,
    testbed::{require_root, Netns},
};

/// `TC_NEXT` (-1) as the kernel reports it.
pub const TC_NEXT: u32 = u32::MAX;
pub const TC_ACT_SHOT: u32 = 2;
/// The packet was turned into a reply and redirected (back out of the ingress interface).
pub const TC_ACT_REDIRECT: u32 = 7;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const IPPROTO_ICMP: u8 = 1;

pub type Addr = ([u8; 4], u16);

pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

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
            Hook::Tc => {
                let prog: &SchedClassifier =
                    self.ebpf.program(PROG_TC_POD).unwrap().try_into().unwrap();
                let mut out = vec![0u8; frame.len() + 256];
                let r = prog.test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ..Default::default()
                })?;
                out.truncate(r.data_size_out as usize);
                Ok((r.return_value, out))
            }
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

    pub fn hash<K: Pod, V: Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        HashMap::try_from(self.ebpf.map_mut(name).unwrap()).unwrap()
    }

    pub fn set_backend(&mut self, id: u32, b: Backend) {
        let mut m: Array<_, Backend> =
            Array::try_from(self.ebpf.map_mut(MAP_BACKENDS).unwrap()).unwrap();
        m.set(id, b, 0).unwrap();
    }

    pub fn new_backend(&mut self, (addr, port): Addr, proto: u8) -> u32 {
        let id = self.next_backend;
        self.next_backend += 1;
        let b = Backend {
            addr: addr4(addr),
            port,
            proto,
            family: FAMILY_V4,
        };
        self.set_backend(id, b);
        id
    }

    /// Writes the slots of `svc_id`, then the frontend `fe` with its count.
    #[allow(clippy::too_many_arguments)]
    pub fn write_frontend(
        &mut self,
        fe: Addr,
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
            addr: addr4(fe.0),
            port: fe.1,
            proto,
            family: FAMILY_V4,
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

    /// Removes the slots of `svc_id` from `count` on (stops at the first missing one).
    pub fn remove_stale_slots(&mut self, svc_id: u32, count: u32) {
        let mut slots = self.hash::<SlotKey, Slot>(MAP_SLOTS);
        for slot in count..MAX_BACKENDS_PER_SERVICE {
            if slots.remove(&SlotKey { svc_id, slot }).is_err() {
                break;
            }
        }
    }

    /// Adds backends (with `proto`) and a frontend of `kind` for them, without touching stale
    /// slots; returns the backend ids (in slot order).
    pub fn add_frontend(
        &mut self,
        fe: Addr,
        proto: u8,
        svc_id: u32,
        backends: &[Addr],
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

    pub fn ct_get(&mut self, key: CtKey) -> Option<CtEntry> {
        self.hash::<CtKey, CtEntry>(MAP_CONNTRACK)
            .get(&key, 0)
            .ok()
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

    pub fn set_config(&mut self, snat_addr: [u8; 4], snat_port_min: u16, snat_port_max: u16) {
        let mut m: Array<_, Config> =
            Array::try_from(self.ebpf.map_mut(MAP_CONFIG).unwrap()).unwrap();
        let cfg = Config {
            snat_addr,
            snat_port_min,
            snat_port_max,
            snat_addr6: [0; 16],
        };
        m.set(0, cfg, 0).unwrap();
    }

    /// Marks `addr` as a ClusterIP (ports it does not expose are rejected).
    pub fn add_vip(&mut self, addr: [u8; 4]) {
        let key = VipKey {
            addr: addr4(addr),
            family: FAMILY_V4,
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

pub fn ct_key(src: Addr, dst: Addr, proto: u8) -> CtKey {
    CtKey {
        saddr: addr4(src.0),
        daddr: addr4(dst.0),
        sport: src.1,
        dport: dst.1,
        proto,
        family: FAMILY_V4,
        pad: [0; 2],
    }
}

/// A conntrack entry; `snat` is `([0; 4], 0)` when the flow is not source-NATed.
pub fn ct_entry(nat: Addr, flags: u32, svc_id: u32, backend_id: u32, snat: Addr) -> CtEntry {
    CtEntry {
        nat_addr: addr4(nat.0),
        nat_port: nat.1,
        snat_port: snat.1,
        snat_addr: addr4(snat.0),
        flags,
        svc_id,
        backend_id,
    }
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

// ---------------------------------------------------------------------------------------------
// Packet builder: Ethernet + IPv4 (+ options) + TCP/UDP + payload, with correct checksums.

#[derive(Clone, Debug)]
pub struct Pkt {
    pub ethertype: u16,
    pub src: Addr,
    pub dst: Addr,
    pub proto: u8,
    /// IPv4 flags + fragment offset field (DF by default: DF alone is not a fragment).
    pub frag: u16,
    pub ttl: u8,
    pub ip_opts: Vec<u8>,
    pub tcp_flags: u8,
    pub tcp_opts: Vec<u8>,
    /// UDP: send checksum 0 ("no checksum").
    pub udp_no_csum: bool,
    pub payload: Vec<u8>,
}

pub fn tcp(src: Addr, dst: Addr, flags: u8) -> Pkt {
    Pkt {
        ethertype: 0x0800,
        src,
        dst,
        proto: PROTO_TCP,
        frag: 0x4000,
        ttl: 64,
        ip_opts: vec![],
        tcp_flags: flags,
        tcp_opts: vec![],
        udp_no_csum: false,
        payload: vec![],
    }
}

pub fn udp(src: Addr, dst: Addr) -> Pkt {
    Pkt {
        proto: PROTO_UDP,
        frag: 0,
        ..tcp(src, dst, 0)
    }
}

impl Pkt {
    pub fn src(self, src: Addr) -> Self {
        Self { src, ..self }
    }
    pub fn dst(self, dst: Addr) -> Self {
        Self { dst, ..self }
    }
    pub fn ttl(self, ttl: u8) -> Self {
        Self { ttl, ..self }
    }
    pub fn ip_opts(self, o: &[u8]) -> Self {
        assert!(o.len().is_multiple_of(4) && o.len() <= 40);
        Self {
            ip_opts: o.to_vec(),
            ..self
        }
    }
    pub fn tcp_opts(self, o: &[u8]) -> Self {
        assert!(o.len().is_multiple_of(4) && o.len() <= 40);
        Self {
            tcp_opts: o.to_vec(),
            ..self
        }
    }
    pub fn payload(self, p: &[u8]) -> Self {
        Self {
            payload: p.to_vec(),
            ..self
        }
    }
    pub fn frag(self, frag: u16) -> Self {
        Self { frag, ..self }
    }
    pub fn no_udp_csum(self) -> Self {
        Self {
            udp_no_csum: true,
            ..self
        }
    }

    pub fn l4(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend(self.src.1.to_be_bytes());
        l4.extend(self.dst.1.to_be_bytes());
        let csum_off = if self.proto == PROTO_TCP {
            l4.extend(0x1122_3344u32.to_be_bytes()); // seq
            let ack: u32 = if self.tcp_flags & ACK != 0 {
                0x5566_7788
            } else {
                0
            };
            l4.extend(ack.to_be_bytes());
            l4.push((((20 + self.tcp_opts.len()) / 4) << 4) as u8);
            l4.push(self.tcp_flags);
            l4.extend(64240u16.to_be_bytes()); // window
            l4.extend([0, 0, 0, 0]); // checksum, urgent pointer
            l4.extend(&self.tcp_opts);
            16
        } else {
            l4.extend(((8 + self.payload.len()) as u16).to_be_bytes());
            l4.extend([0, 0]);
            6
        };
        l4.extend(&self.payload);
        let mut c = !fold(pseudo_sum(self.src.0, self.dst.0, self.proto, l4.len()) + sum16(&l4));
        if self.proto == PROTO_UDP && c == 0 {
            c = 0xffff; // RFC 768: a computed zero is sent as all ones
        }
        if self.proto == PROTO_UDP && self.udp_no_csum {
            c = 0;
        }
        l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
        l4
    }

    pub fn build(&self) -> Vec<u8> {
        let l4 = self.l4();
        let hlen = 20 + self.ip_opts.len();
        let mut f = vec![
            0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x01, 0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x05,
        ];
        f.extend(self.ethertype.to_be_bytes());
        f.push(0x40 | (hlen / 4) as u8);
        f.push(0); // TOS
        f.extend(((hlen + l4.len()) as u16).to_be_bytes());
        f.extend(0x1c46u16.to_be_bytes()); // id
        f.extend(self.frag.to_be_bytes());
        f.extend([self.ttl, self.proto, 0, 0]); // TTL, protocol, checksum
        f.extend(self.src.0);
        f.extend(self.dst.0);
        f.extend(&self.ip_opts);
        let c = !fold(sum16(&f[14..14 + hlen]));
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f.extend(l4);
        f
    }
}

/// Applies `patch` to the IPv4 header, then recomputes its checksum over what is present of it.
pub fn patch_ip(mut f: Vec<u8>, patch: impl FnOnce(&mut [u8])) -> Vec<u8> {
    patch(&mut f[14..]);
    let hlen = (((f[14] & 0x0f) as usize) * 4).clamp(12, f.len() - 14);
    f[24..26].fill(0);
    let c = !fold(sum16(&f[14..14 + hlen]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// A valid frame whose L4 part is cut to `n` bytes (total length and header checksum adjusted).
pub fn cut_l4(f: &[u8], n: usize) -> Vec<u8> {
    patch_ip(f[..34 + n].to_vec(), |ip| {
        ip[2..4].copy_from_slice(&(20 + n as u16).to_be_bytes())
    })
}

// ---------------------------------------------------------------------------------------------
// Independent checksum arithmetic and verifiers.

pub fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

pub fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: usize) -> u32 {
    sum16(&src) + sum16(&dst) + u32::from(proto) + l4_len as u32
}

pub fn be16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

/// Checks that `f` is IPv4 with sane lengths and a correct header checksum; returns the header
/// length and the IPv4 total length.
pub fn ipv4_lengths(f: &[u8], min_l4: usize) -> Result<(usize, usize), String> {
    if be16(f, 12) != 0x0800 {
        return Err("not IPv4".into());
    }
    let hlen = (f[14] & 0x0f) as usize * 4;
    let tot = be16(f, 16) as usize;
    if hlen < 20 || tot < hlen + min_l4 || 14 + tot > f.len() {
        return Err(format!(
            "bad lengths: header {hlen}, total {tot}, frame {}",
            f.len()
        ));
    }
    if fold(sum16(&f[14..14 + hlen])) != 0xffff {
        return Err("bad IPv4 header checksum".into());
    }
    Ok((hlen, tot))
}

/// Recomputes the IPv4 header checksum and the TCP/UDP checksum of `f` from scratch (the L4
/// length comes from the IPv4 total length, so Ethernet padding is ignored). Returns the L4
/// checksum field; a UDP field of 0 means "none" and is accepted.
pub fn checksums(f: &[u8]) -> Result<u16, String> {
    let (hlen, tot) = ipv4_lengths(f, 0)?;
    let proto = f[23];
    let l4 = &f[14 + hlen..14 + tot];
    let field = match proto {
        PROTO_TCP if l4.len() >= 20 => be16(l4, 16),
        PROTO_UDP if l4.len() >= 8 && be16(l4, 4) as usize == l4.len() => be16(l4, 6),
        _ => return Err(format!("not a complete TCP/UDP datagram (proto {proto})")),
    };
    if proto == PROTO_UDP && field == 0 {
        return Ok(0);
    }
    let (src, dst) = (f[26..30].try_into().unwrap(), f[30..34].try_into().unwrap());
    if fold(pseudo_sum(src, dst, proto, l4.len()) + sum16(l4)) != 0xffff {
        return Err(format!("bad L4 checksum {field:#06x} (proto {proto})"));
    }
    Ok(field)
}

#[track_caller]
pub fn verify_checksums(f: &[u8]) -> u16 {
    checksums(f).unwrap_or_else(|e| panic!("{e}\nframe: {}", hex(f)))
}

/// Independent check of an ICMP reply's IPv4 header and ICMP checksums.
#[track_caller]
pub fn verify_icmp(f: &[u8]) {
    assert_eq!(f[23], IPPROTO_ICMP);
    assert_eq!(fold(sum16(&f[14..34])), 0xffff, "IPv4 header checksum");
    let end = 14 + be16(f, 16) as usize;
    assert_eq!(fold(sum16(&f[34..end])), 0xffff, "ICMP checksum");
}

/// Byte-exact comparison with a readable failure: the differing offsets and both frames.
#[track_caller]
pub fn assert_frame_eq(got: &[u8], want: &[u8]) {
    if got != want {
        let diff: Vec<usize> = (0..got.len().max(want.len()))
            .filter(|&i| got.get(i) != want.get(i))
            .collect();
        panic!(
            "frames differ at offsets {diff:?}\n got: {}\nwant: {}",
            hex(got),
            hex(want)
        );
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Offsets where two equally long frames differ.
pub fn changed(a: &[u8], b: &[u8]) -> Vec<usize> {
    assert_eq!(a.len(), b.len(), "frame length changed");
    (0..a.len()).filter(|&i| a[i] != b[i]).collect()
}

/// The reply the program must send for `req` (IPv4 without options): Ethernet addresses
/// swapped, a fresh IPv4 header (ID 0, DF, TTL 64) from the request's destination back to its
/// source, then `l4` with its checksum filled in (TCP: with the pseudo-header; ICMP: plain).
pub fn reply_to(req: &[u8], proto: u8, mut l4: Vec<u8>) -> Vec<u8> {
    let src: [u8; 4] = req[30..34].try_into().unwrap();
    let dst: [u8; 4] = req[26..30].try_into().unwrap();
    let mut f = req[6..12].to_vec();
    f.extend(&req[0..6]);
    f.extend([0x08, 0x00, 0x45, 0]);
    f.extend(((20 + l4.len()) as u16).to_be_bytes());
    f.extend([0, 0, 0x40, 0, 64, proto, 0, 0]);
    f.extend(src);
    f.extend(dst);
    let c = !fold(sum16(&f[14..34]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let (off, pseudo) = match proto {
        PROTO_TCP => (16, pseudo_sum(src, dst, proto, l4.len())),
        _ => (2, 0),
    };
    let c = !fold(pseudo + sum16(&l4));
    l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    f.extend(l4);
    f
}

/// The 54-byte RST answering the TCP frame `req`.
pub fn rst_for(req: &[u8], seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut t = [&req[36..38], &req[34..36]].concat();
    t.extend(seq.to_be_bytes());
    t.extend(ack.to_be_bytes());
    t.extend([5 << 4, flags, 0, 0, 0, 0, 0, 0]); // data offset, flags, window, csum, urgent
    reply_to(req, PROTO_TCP, t)
}

/// The 70-byte ICMP port unreachable answering the UDP (or SCTP) frame `req`: the original
/// IPv4 header and the first 8 bytes of the L4 header.
pub fn icmp_for(req: &[u8]) -> Vec<u8> {
    let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
    m.extend(&req[14..42]);
    reply_to(req, IPPROTO_ICMP, m)
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
