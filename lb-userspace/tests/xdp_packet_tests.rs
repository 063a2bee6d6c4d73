//! Packet-level tests of the XDP program `podlb_xdp_ext` through BPF_PROG_TEST_RUN.
//!
//! Like `packet_tests.rs` (the TC program), each test loads its own copy of the eBPF object,
//! fills its maps, runs hand-built frames and checks the verdict, the output bytes (against a
//! frame built from scratch with freshly computed checksums, and an independent checksum
//! verifier), conntrack and counters. XDP rewrites with direct writes and RFC 1624 incremental
//! checksums, so the byte-exact comparisons check that arithmetic too.
//!
//! After NAT the program calls `bpf_fib_lookup`, which resolves in the network namespace of the
//! thread doing the test run (its ingress device is that namespace's `lo`, or the device named
//! in the `xdp_md` passed as `ctx_in`). Every harness therefore owns a fresh namespace and runs
//! the program only from inside it: with no routes there, a NATed packet is `XDP_PASS`. The
//! forwarding test adds a veth pair, routes and a permanent neighbour to get `XDP_TX`.
//! They need root and fail (never skip) without it.

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{ProgramError, Xdp},
    Ebpf, EbpfLoader, Pod, TestRun, TestRunOptions,
};
use lb_common::*;
use podlb::{
    datapath::EBPF_OBJECT,
    testbed::{require_root, Netns},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const IPPROTO_ICMP: u8 = 1;

type Addr = ([u8; 4], u16);
const NODE: [u8; 4] = [192, 168, 77, 1];
const EXT: Addr = ([192, 168, 77, 2], 40000);
const NODE_PORT: Addr = (NODE, 30080);
const BE1: Addr = ([10, 244, 0, 11], 8080);
const BE2: Addr = ([10, 244, 0, 12], 8080);
const DNS_BE: Addr = ([10, 244, 0, 21], 5353);
const POD: Addr = ([10, 244, 0, 5], 40000);
const VIP: [u8; 4] = [10, 96, 0, 10];
const MSS: [u8; 4] = [2, 4, 0x05, 0xb4];

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

// ---------------------------------------------------------------------------------------------
// Harness: one loaded program, its maps and its own network namespace.

struct Harness {
    ebpf: Ebpf,
    ns: Netns,
    /// `xdp_md.ingress_ifindex` for the test run; `None`: the namespace's loopback.
    ingress: Option<u32>,
    next_backend: u32,
}

impl Harness {
    fn new() -> Self {
        require_root().expect("packet tests load eBPF programs and must run as root");
        assert!(
            !EBPF_OBJECT.is_empty(),
            "built without the eBPF object; run `cargo xtask build` first"
        );
        let mut ebpf = EbpfLoader::new()
            .load(EBPF_OBJECT)
            .expect("loading the eBPF object");
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_XDP_EXT)
            .expect("program missing")
            .try_into()
            .unwrap();
        prog.load().expect("loading the XDP program (verifier)");
        let ns = Netns::new("xdp").expect("creating a network namespace");
        Self {
            ebpf,
            ns,
            ingress: None,
            next_backend: 1,
        }
    }

    /// Runs one frame inside the harness namespace; `Err` when the kernel refuses the run.
    fn try_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
        let prog: &Xdp = self.ebpf.program(PROG_XDP_EXT).unwrap().try_into().unwrap();
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress.
        let md: Vec<u8> = [0, frame.len() as u32, 0, self.ingress.unwrap_or(0), 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let ingress = self.ingress;
        self.ns.run_in(move || {
            let mut out = vec![0u8; frame.len() + 256];
            let r = prog.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: ingress.map(|_| md.as_slice()),
                ..Default::default()
            })?;
            out.truncate(r.data_size_out as usize);
            Ok((r.return_value, out))
        })
    }

    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.try_run(frame).expect("BPF_PROG_TEST_RUN")
    }

    fn hash<K: Pod, V: Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        HashMap::try_from(self.ebpf.map_mut(name).unwrap()).unwrap()
    }

    fn new_backend(&mut self, (addr, port): Addr, proto: u8) -> u32 {
        let id = self.next_backend;
        self.next_backend += 1;
        let mut m: Array<_, Backend4> =
            Array::try_from(self.ebpf.map_mut(MAP_BACKENDS).unwrap()).unwrap();
        m.set(
            id,
            Backend4 {
                addr,
                port,
                proto,
                flags: 0,
            },
            0,
        )
        .unwrap();
        id
    }

    /// Adds a frontend (slots first, then the frontend with its count); returns the backend ids.
    fn add_service(
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
        let mut slots = self.hash::<SlotKey, Slot>(MAP_SLOTS);
        for (i, id) in ids.iter().enumerate() {
            slots
                .insert(
                    SlotKey {
                        svc_id,
                        slot: i as u32,
                    },
                    Slot { backend_id: *id },
                    0,
                )
                .unwrap();
        }
        let key = Frontend4Key {
            addr: fe.0,
            port: fe.1,
            proto,
            pad: 0,
        };
        let val = Frontend {
            svc_id,
            count: ids.len() as u32,
            flags,
            kind,
            pad: 0,
        };
        self.hash::<Frontend4Key, Frontend>(MAP_FRONTENDS)
            .insert(key, val, 0)
            .unwrap();
        ids
    }

    /// A NodePort frontend with FE_SNAT.
    fn node_port(&mut self, fe: Addr, proto: u8, svc_id: u32, backends: &[Addr]) -> Vec<u32> {
        self.add_service(fe, proto, svc_id, backends, FE_SNAT, KIND_NODE_PORT)
    }

    fn set_config(&mut self, snat_addr: [u8; 4], snat_port_min: u16, snat_port_max: u16) {
        let mut m: Array<_, Config> =
            Array::try_from(self.ebpf.map_mut(MAP_CONFIG).unwrap()).unwrap();
        m.set(
            0,
            Config {
                snat_addr,
                snat_port_min,
                snat_port_max,
            },
            0,
        )
        .unwrap();
    }

    fn add_vip(&mut self, addr: [u8; 4]) {
        self.hash::<[u8; 4], Vip>(MAP_VIPS)
            .insert(addr, Vip { flags: 0 }, 0)
            .unwrap();
    }

    fn conntrack(&mut self) -> Vec<(Ct4Key, Ct4Entry)> {
        let ct = self.hash::<Ct4Key, Ct4Entry>(MAP_CONNTRACK);
        let v = ct.iter().map(|r| r.unwrap()).collect();
        v
    }

    fn ct_get(&mut self, key: Ct4Key) -> Option<Ct4Entry> {
        self.hash::<Ct4Key, Ct4Entry>(MAP_CONNTRACK)
            .get(&key, 0)
            .ok()
    }

    fn stats(&self, svc_id: u32) -> SvcStats {
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

    fn counters(&self) -> Vec<u64> {
        let m: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(MAP_COUNTERS).unwrap()).unwrap();
        (0..COUNTERS)
            .map(|i| m.get(&i, 0).unwrap().iter().sum())
            .collect()
    }

    fn ip(&self, args: &str) {
        let args: Vec<&str> = std::iter::once("ip")
            .chain(args.split_whitespace())
            .collect();
        self.ns
            .exec(&args)
            .unwrap_or_else(|e| panic!("{args:?}: {e:#}"));
    }

    fn ifindex(&self, name: &str) -> u32 {
        let c = std::ffi::CString::new(name).unwrap();
        let i = self
            .ns
            .run_in(|| unsafe { libc::if_nametoindex(c.as_ptr()) });
        assert_ne!(i, 0, "no interface {name}");
        i
    }
}

fn ct_key(src: Addr, dst: Addr, proto: u8) -> Ct4Key {
    Ct4Key {
        saddr: src.0,
        daddr: dst.0,
        sport: src.1,
        dport: dst.1,
        proto,
        pad: [0; 3],
    }
}

fn ct_entry(nat: Addr, flags: u32, svc_id: u32, backend_id: u32, snat: Addr) -> Ct4Entry {
    Ct4Entry {
        nat_addr: nat.0,
        nat_port: nat.1,
        snat_port: snat.1,
        snat_addr: snat.0,
        flags,
        svc_id,
        backend_id,
    }
}

#[track_caller]
fn assert_counters(h: &Harness, nonzero: &[(u32, u64)]) {
    let mut want = vec![0; COUNTERS as usize];
    for &(i, n) in nonzero {
        want[i as usize] = n;
    }
    assert_eq!(h.counters(), want, "counters (by index: {COUNTER_NAMES:?})");
}

/// Runs `input` and expects `XDP_PASS` with the frame unchanged.
#[track_caller]
fn assert_untouched(h: &Harness, input: &[u8]) {
    let (verdict, out) = h.run(input);
    assert_eq!(verdict, XDP_PASS, "verdict");
    assert_frame_eq(&out, input);
}

/// Runs `p` and expects `XDP_PASS` with exactly `want` (checksums verified independently).
/// Returns the output's L4 checksum field.
#[track_caller]
fn assert_nat(h: &Harness, p: &Pkt, want: &Pkt) -> u16 {
    let (verdict, out) = h.run(&p.build());
    assert_eq!(verdict, XDP_PASS, "verdict");
    assert_frame_eq(&out, &want.build());
    verify_checksums(&out)
}

// ---------------------------------------------------------------------------------------------
// Packet builder (as in packet_tests.rs): Ethernet + IPv4 (+ options) + TCP/UDP + payload.

#[derive(Clone, Debug)]
struct Pkt {
    src: Addr,
    dst: Addr,
    proto: u8,
    frag: u16,
    ttl: u8,
    ip_opts: Vec<u8>,
    tcp_flags: u8,
    tcp_opts: Vec<u8>,
    udp_no_csum: bool,
    payload: Vec<u8>,
}

fn tcp(src: Addr, dst: Addr, flags: u8) -> Pkt {
    Pkt {
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

fn udp(src: Addr, dst: Addr) -> Pkt {
    Pkt {
        proto: PROTO_UDP,
        frag: 0,
        ..tcp(src, dst, 0)
    }
}

impl Pkt {
    fn src(self, src: Addr) -> Self {
        Self { src, ..self }
    }
    fn dst(self, dst: Addr) -> Self {
        Self { dst, ..self }
    }
    fn ttl(self, ttl: u8) -> Self {
        Self { ttl, ..self }
    }
    fn ip_opts(self, o: &[u8]) -> Self {
        Self {
            ip_opts: o.to_vec(),
            ..self
        }
    }
    fn tcp_opts(self, o: &[u8]) -> Self {
        Self {
            tcp_opts: o.to_vec(),
            ..self
        }
    }
    fn payload(self, p: &[u8]) -> Self {
        Self {
            payload: p.to_vec(),
            ..self
        }
    }
    fn frag(self, frag: u16) -> Self {
        Self { frag, ..self }
    }
    fn no_udp_csum(self) -> Self {
        Self {
            udp_no_csum: true,
            ..self
        }
    }

    fn l4(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend(self.src.1.to_be_bytes());
        l4.extend(self.dst.1.to_be_bytes());
        let csum_off = if self.proto == PROTO_TCP {
            l4.extend(0x1122_3344u32.to_be_bytes());
            let ack: u32 = if self.tcp_flags & ACK != 0 {
                0x5566_7788
            } else {
                0
            };
            l4.extend(ack.to_be_bytes());
            l4.push((((20 + self.tcp_opts.len()) / 4) << 4) as u8);
            l4.push(self.tcp_flags);
            l4.extend(64240u16.to_be_bytes());
            l4.extend([0, 0, 0, 0]);
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
            c = 0xffff;
        }
        if self.proto == PROTO_UDP && self.udp_no_csum {
            c = 0;
        }
        l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
        l4
    }

    fn build(&self) -> Vec<u8> {
        let l4 = self.l4();
        let hlen = 20 + self.ip_opts.len();
        let mut f = vec![
            0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x01, 0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x05, 0x08, 0x00,
        ];
        f.push(0x40 | (hlen / 4) as u8);
        f.push(0);
        f.extend(((hlen + l4.len()) as u16).to_be_bytes());
        f.extend(0x1c46u16.to_be_bytes());
        f.extend(self.frag.to_be_bytes());
        f.extend([self.ttl, self.proto, 0, 0]);
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
fn patch_ip(mut f: Vec<u8>, patch: impl FnOnce(&mut [u8])) -> Vec<u8> {
    patch(&mut f[14..]);
    let hlen = (((f[14] & 0x0f) as usize) * 4).clamp(12, f.len() - 14);
    f[24..26].fill(0);
    let c = !fold(sum16(&f[14..14 + hlen]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// A valid frame whose L4 part is cut to `n` bytes (total length and header checksum adjusted).
fn cut_l4(f: &[u8], n: usize) -> Vec<u8> {
    patch_ip(f[..34 + n].to_vec(), |ip| {
        ip[2..4].copy_from_slice(&(20 + n as u16).to_be_bytes())
    })
}

// ---------------------------------------------------------------------------------------------
// Independent checksum arithmetic and verifiers.

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: usize) -> u32 {
    sum16(&src) + sum16(&dst) + u32::from(proto) + l4_len as u32
}

fn be16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

/// Recomputes the IPv4 header and TCP/UDP checksums of `f` from scratch; returns the L4 field.
fn checksums(f: &[u8]) -> Result<u16, String> {
    if be16(f, 12) != 0x0800 {
        return Err("not IPv4".into());
    }
    let hlen = (f[14] & 0x0f) as usize * 4;
    let tot = be16(f, 16) as usize;
    if hlen < 20 || tot < hlen || 14 + tot > f.len() {
        return Err(format!(
            "bad lengths: header {hlen}, total {tot}, frame {}",
            f.len()
        ));
    }
    if fold(sum16(&f[14..14 + hlen])) != 0xffff {
        return Err("bad IPv4 header checksum".into());
    }
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
fn verify_checksums(f: &[u8]) -> u16 {
    checksums(f).unwrap_or_else(|e| panic!("{e}\nframe: {}", hex(f)))
}

#[track_caller]
fn verify_icmp(f: &[u8]) {
    assert_eq!(f[23], IPPROTO_ICMP);
    assert_eq!(fold(sum16(&f[14..34])), 0xffff, "IPv4 header checksum");
    let end = 14 + be16(f, 16) as usize;
    assert_eq!(fold(sum16(&f[34..end])), 0xffff, "ICMP checksum");
}

#[track_caller]
fn assert_frame_eq(got: &[u8], want: &[u8]) {
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

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn changed(a: &[u8], b: &[u8]) -> Vec<usize> {
    assert_eq!(a.len(), b.len(), "frame length changed");
    (0..a.len()).filter(|&i| a[i] != b[i]).collect()
}

/// The reply the program must send for `req`: MACs swapped, a fresh IPv4 header (ID 0, DF,
/// TTL 64) from the request's destination to its source, then `l4` with its checksum.
fn reply_to(req: &[u8], proto: u8, mut l4: Vec<u8>) -> Vec<u8> {
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

fn rst_for(req: &[u8], seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut t = [&req[36..38], &req[34..36]].concat();
    t.extend(seq.to_be_bytes());
    t.extend(ack.to_be_bytes());
    t.extend([5 << 4, flags, 0, 0, 0, 0, 0, 0]);
    reply_to(req, PROTO_TCP, t)
}

fn icmp_for(req: &[u8]) -> Vec<u8> {
    let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
    m.extend(&req[14..42]);
    reply_to(req, IPPROTO_ICMP, m)
}

/// NodePort 192.168.77.1:30080 (svc 3) -> BE1 with SNAT from the default range; sends the SYN
/// from EXT and returns (SYN as sent, its output, backend id, SNAT port).
fn nodeport_flow(h: &mut Harness) -> (Pkt, Vec<u8>, u32, u16) {
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = h.node_port(NODE_PORT, PROTO_TCP, 3, &[BE1]);
    let syn = tcp(EXT, NODE_PORT, SYN).tcp_opts(&MSS).payload(b"x");
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(
        verdict, XDP_PASS,
        "NATed, no route in the test namespace: passed to the stack"
    );
    let p = be16(&out, 34);
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&p),
        "SNAT port {p}"
    );
    (syn, out, ids[0], p)
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// 1. NodePort SYN: DNAT to the backend and SNAT to node:P; only addresses, ports and the two
///    checksums change; both conntrack directions recorded; stats and counters.
#[test]
fn xdp_nodeport_syn_is_dnatted_and_masqueraded() {
    let mut h = Harness::new();
    let (syn, out, id, p) = nodeport_flow(&mut h);
    let input = syn.build();
    assert_frame_eq(&out, &syn.clone().src((NODE, p)).dst(BE1).build());
    verify_checksums(&out);
    let allowed = [
        24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 50, 51,
    ];
    let ch = changed(&input, &out);
    assert!(
        ch.iter().all(|i| allowed.contains(i)),
        "unexpected bytes changed: {ch:?}"
    );
    assert_eq!(
        &out[..14],
        &input[..14],
        "Ethernet header untouched on XDP_PASS"
    );
    assert_eq!(out[22], 64, "TTL untouched on XDP_PASS");

    let fwd = h.ct_get(ct_key(EXT, NODE_PORT, PROTO_TCP));
    assert_eq!(
        fwd,
        Some(ct_entry(BE1, CT_FORWARD | CT_SNAT, 3, id, (NODE, p)))
    );
    let rev = h.ct_get(ct_key(BE1, (NODE, p), PROTO_TCP));
    assert_eq!(
        rev,
        Some(ct_entry(NODE_PORT, CT_REPLY | CT_SNAT, 3, id, EXT))
    );
    assert_eq!(h.conntrack().len(), 2, "exactly two conntrack entries");
    let s = h.stats(3);
    assert_eq!((s.packets, s.bytes), (1, input.len() as u64));
    assert_counters(&h, &[(CNT_SNAT, 1)]);
}

/// 2. The backend's reply (BE1 -> node:P) becomes NodePort -> client, checksums valid.
#[test]
fn xdp_nodeport_reply_is_reverse_nated() {
    let mut h = Harness::new();
    let (_, _, _, p) = nodeport_flow(&mut h);
    let synack = tcp(BE1, (NODE, p), SYN | ACK).tcp_opts(&MSS);
    assert_nat(&h, &synack, &synack.clone().src(NODE_PORT).dst(EXT));
    let data = tcp(BE1, (NODE, p), ACK).payload(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_nat(&h, &data, &data.clone().src(NODE_PORT).dst(EXT));
    assert_eq!(h.stats(3).packets, 3, "replies are counted too");
    assert_eq!(h.conntrack().len(), 2);
    // From the backend to another node port: no flow, untouched.
    let other = if p == SNAT_PORT_MAX { p - 1 } else { p + 1 };
    assert_untouched(&h, &tcp(BE1, (NODE, other), ACK).build());
}

/// 3. Established packets of the flow keep P and the backend, even after a backend is added.
#[test]
fn xdp_nodeport_established_flow_keeps_port_and_backend() {
    let mut h = Harness::new();
    let (_, _, id, p) = nodeport_flow(&mut h);
    let id2 = h.new_backend(BE2, PROTO_TCP);
    h.hash::<SlotKey, Slot>(MAP_SLOTS)
        .insert(SlotKey { svc_id: 3, slot: 1 }, Slot { backend_id: id2 }, 0)
        .unwrap();
    let key = Frontend4Key {
        addr: NODE,
        port: 30080,
        proto: PROTO_TCP,
        pad: 0,
    };
    let fe = Frontend {
        svc_id: 3,
        count: 2,
        flags: FE_SNAT,
        kind: KIND_NODE_PORT,
        pad: 0,
    };
    h.hash::<Frontend4Key, Frontend>(MAP_FRONTENDS)
        .insert(key, fe, 0)
        .unwrap();
    let ack = tcp(EXT, NODE_PORT, ACK).payload(b"GET / HTTP/1.1\r\n\r\n");
    for _ in 0..20 {
        assert_nat(&h, &ack, &ack.clone().src((NODE, p)).dst(BE1));
    }
    // A pure ACK padded to the 60-byte minimum keeps its padding.
    let pure = tcp(EXT, NODE_PORT, ACK);
    let (mut input, mut want) = (pure.build(), pure.clone().src((NODE, p)).dst(BE1).build());
    input.resize(60, 0);
    want.resize(60, 0);
    let (verdict, out) = h.run(&input);
    assert_eq!(verdict, XDP_PASS);
    assert_frame_eq(&out, &want);
    assert_eq!(
        h.ct_get(ct_key(EXT, NODE_PORT, PROTO_TCP))
            .map(|e| (e.backend_id, e.snat_port)),
        Some((id, p))
    );
    assert_eq!(h.conntrack().len(), 2);
    assert_counters(&h, &[(CNT_SNAT, 1)]);
}

/// 4. UDP NodePort: a checksummed datagram and its reply; a zero checksum stays zero (both
///    directions); a rewrite whose checksum computes to zero is sent as 0xffff.
#[test]
fn xdp_udp_nodeport_checksum_semantics() {
    let mut h = Harness::new();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.node_port((NODE, 30053), PROTO_UDP, 4, &[DNS_BE]);
    let q = udp(EXT, (NODE, 30053)).payload(b"hello"); // odd length
    let (verdict, out) = h.run(&q.build());
    assert_eq!(verdict, XDP_PASS);
    let p = be16(&out, 34);
    assert!(
        (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&p),
        "SNAT port {p}"
    );
    assert_frame_eq(&out, &q.clone().src((NODE, p)).dst(DNS_BE).build());
    assert_ne!(verify_checksums(&out), 0);
    let a = udp(DNS_BE, (NODE, p)).payload(b"answer");
    assert_ne!(
        assert_nat(&h, &a, &a.clone().src((NODE, 30053)).dst(EXT)),
        0
    );

    let c0: Addr = (EXT.0, 40002);
    let q0 = udp(c0, (NODE, 30053)).payload(b"hello").no_udp_csum();
    let (verdict, out) = h.run(&q0.build());
    assert_eq!(verdict, XDP_PASS);
    let p0 = be16(&out, 34);
    assert_frame_eq(&out, &q0.clone().src((NODE, p0)).dst(DNS_BE).build());
    assert_eq!(
        verify_checksums(&out),
        0,
        "a zero UDP checksum must stay zero"
    );
    let r0 = udp(DNS_BE, (NODE, p0)).payload(b"answer").no_udp_csum();
    assert_eq!(
        assert_nat(&h, &r0, &r0.clone().src((NODE, 30053)).dst(c0)),
        0,
        "zero checksum, reply path"
    );

    // A one-port SNAT range makes the rewritten datagram known in advance (own backend, so the
    // reply tuple is free): choose the first payload word so its checksum computes to 0.
    h.set_config(NODE, 61000, 61000);
    let be: Addr = ([10, 244, 0, 22], 5353);
    h.node_port((NODE, 30054), PROTO_UDP, 5, &[be]);
    let c1: Addr = (EXT.0, 40003);
    let mut l4 = udp((NODE, 61000), be).payload(&[0, 0, 7, 7]).l4();
    l4[6..8].fill(0);
    let w = (0xffff - fold(pseudo_sum(NODE, be.0, PROTO_UDP, l4.len()) + sum16(&l4))).to_be_bytes();
    let q1 = udp(c1, (NODE, 30054)).payload(&[w[0], w[1], 7, 7]);
    let want = q1.clone().src((NODE, 61000)).dst(be);
    assert_eq!(
        assert_nat(&h, &q1, &want),
        0xffff,
        "computed zero must be sent as 0xffff"
    );
    assert_counters(&h, &[(CNT_SNAT, 3)]);
}

/// 5. Traffic that is no service: a TCP SYN to a pod, ARP, IPv6: XDP_PASS, unchanged.
#[test]
fn xdp_non_service_packets_pass_unchanged() {
    let mut h = Harness::new();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.node_port(NODE_PORT, PROTO_TCP, 3, &[BE1]);
    let syn = tcp(EXT, (BE2.0, 80), SYN).build();
    assert_untouched(&h, &syn);
    assert_untouched(&h, &tcp(EXT, (NODE, 30081), SYN).build()); // node, other port
    let mut arp = syn[..12].to_vec();
    arp.extend([0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend(&syn[6..12]);
    arp.extend(EXT.0);
    arp.extend([0; 6]);
    arp.extend(NODE);
    assert_untouched(&h, &arp);
    let mut v6 = syn[..12].to_vec();
    v6.extend([0x86, 0xdd, 0x60, 0, 0, 0, 0, 20, PROTO_TCP, 64]);
    v6.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    v6.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v6.extend(&syn[34..54]);
    assert_untouched(&h, &v6);
    assert!(h.conntrack().is_empty());
    assert_eq!(h.stats(3).packets, 0);
    assert_counters(&h, &[]);
}

/// 6. Malformed, truncated and fragmented packets to the NodePort: XDP_PASS, unchanged, no
///    conntrack entry. (Unlike the skb test run, XDP runs frames with a partial IPv4 header.)
#[test]
fn xdp_malformed_packets_pass_unchanged() {
    let mut h = Harness::new();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.node_port(NODE_PORT, PROTO_TCP, 3, &[BE1]);
    h.node_port((NODE, 30053), PROTO_UDP, 4, &[DNS_BE]);
    let syn = tcp(EXT, NODE_PORT, SYN).build();
    let dns = udp(EXT, (NODE, 30053)).payload(b"query").build();
    let pad60 = |mut f: Vec<u8>| {
        f.resize(60, 0);
        f
    };
    let ihl15_no_l4 = {
        let mut f = syn[..34].to_vec();
        f.extend([1u8; 40]);
        patch_ip(f, |ip| {
            ip[0] = 0x4f;
            ip[2..4].copy_from_slice(&60u16.to_be_bytes());
        })
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("Ethernet header only", syn[..14].to_vec()),
        ("IPv4 header cut to 10 bytes", syn[..24].to_vec()),
        ("IPv4 header cut to 19 bytes", syn[..33].to_vec()),
        ("IPv4 header only, no TCP", cut_l4(&syn, 0)),
        ("8 bytes of TCP", cut_l4(&syn, 8)),
        ("19 bytes of TCP", cut_l4(&syn, 19)),
        ("8 bytes of TCP + padding to 60", pad60(cut_l4(&syn, 8))),
        ("4 bytes of UDP", cut_l4(&dns, 4)),
        ("4 bytes of UDP + padding to 60", pad60(cut_l4(&dns, 4))),
        ("IHL=3", patch_ip(syn.clone(), |ip| ip[0] = 0x43)),
        ("IHL=0", patch_ip(syn.clone(), |ip| ip[0] = 0x40)),
        (
            "IHL=15, total length 40",
            patch_ip(syn.clone(), |ip| ip[0] = 0x4f),
        ),
        ("IHL=15, header present but no TCP", ihl15_no_l4),
        (
            "total length 19",
            patch_ip(syn.clone(), |ip| {
                ip[2..4].copy_from_slice(&19u16.to_be_bytes())
            }),
        ),
        (
            "IP version 6 in an IPv4 frame",
            patch_ip(syn.clone(), |ip| ip[0] = 0x65),
        ),
        ("TCP, MF set", tcp(EXT, NODE_PORT, SYN).frag(0x2000).build()),
        (
            "TCP, offset 185",
            tcp(EXT, NODE_PORT, SYN).frag(185).build(),
        ),
        (
            "TCP, DF + offset 1",
            tcp(EXT, NODE_PORT, SYN).frag(0x4001).build(),
        ),
        (
            "UDP, MF set",
            udp(EXT, (NODE, 30053)).payload(b"q").frag(0x2000).build(),
        ),
        (
            "UDP, MF + offset",
            udp(EXT, (NODE, 30053)).payload(b"q").frag(0x2001).build(),
        ),
        (
            "other protocol (ICMP)",
            patch_ip(syn.clone(), |ip| ip[9] = 1),
        ),
    ];
    let mut failures = Vec::new();
    for (name, input) in &cases {
        match h.try_run(input) {
            Err(e) => failures.push(format!("{name}: test run failed: {e:?}")),
            Ok((XDP_PASS, out)) if out == *input => {}
            Ok((verdict, out)) => failures.push(format!(
                "{name}: verdict {verdict}, out {} bytes, changed {:?}",
                out.len(),
                (0..out.len().max(input.len()))
                    .filter(|&i| out.get(i) != input.get(i))
                    .collect::<Vec<_>>()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "not passed unchanged:\n{}",
        failures.join("\n")
    );
    assert!(h.conntrack().is_empty(), "conntrack: {:?}", h.conntrack());
    assert_eq!(h.stats(3).packets + h.stats(4).packets, 0);
    assert_counters(&h, &[]);
    // Shorter than an Ethernet header: the kernel refuses the run (EINVAL).
    assert!(h.try_run(&syn[..13]).is_err());
}

/// 7. Reject from XDP: a frontend without backends answers TCP with a 54-byte RST and UDP with
///    a 70-byte ICMP port unreachable, both XDP_TX (the frame is resized with
///    bpf_xdp_adjust_tail: the test run's buffer is a page, so growing works). Resets are never
///    answered; a packet with IPv4 options is dropped (documented limitation).
#[test]
fn xdp_reject_with_rst_and_icmp() {
    let mut h = Harness::new();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.node_port(NODE_PORT, PROTO_TCP, 3, &[]);
    h.node_port((NODE, 30053), PROTO_UDP, 4, &[]);
    let syn = tcp(EXT, NODE_PORT, SYN);
    let (seq, ack) = (0x1122_3344u32, 0x5566_7788u32);
    let mut padded = syn.build();
    padded.resize(60, 0);
    let cases = [
        ("SYN", syn.build(), 0, seq + 1, RST | ACK),
        (
            "SYN with MSS (shrinks)",
            syn.clone().tcp_opts(&MSS).build(),
            0,
            seq + 1,
            RST | ACK,
        ),
        ("SYN padded to 60 bytes", padded, 0, seq + 1, RST | ACK),
        (
            "SYN with 3 bytes of data",
            syn.clone().payload(b"abc").build(),
            0,
            seq + 4,
            RST | ACK,
        ),
        (
            "ACK with 10 bytes of data",
            tcp(EXT, NODE_PORT, ACK).payload(b"0123456789").build(),
            ack,
            0,
            RST,
        ),
    ];
    let mut n = 0;
    for (name, input, seq, ack, flags) in &cases {
        let (verdict, out) = h.run(input);
        assert_eq!(verdict, XDP_TX, "{name}");
        assert_eq!(out.len(), 54, "{name}");
        assert_frame_eq(&out, &rst_for(input, *seq, *ack, *flags));
        verify_checksums(&out);
        n += 1;
    }
    // The RST fields spelled out once.
    let (_, out) = h.run(&syn.build());
    assert_eq!(
        &out[0..12],
        &[0x0a, 0x58, 0x0a, 0xf4, 0, 5, 0x0a, 0x58, 0x0a, 0xf4, 0, 1],
        "MACs swapped"
    );
    assert_eq!(
        &out[14..24],
        &[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, PROTO_TCP]
    );
    assert_eq!((&out[26..30], &out[30..34]), (&NODE[..], &EXT.0[..]));
    assert_eq!((be16(&out, 34), be16(&out, 36)), (30080, EXT.1));
    assert_eq!(
        &out[38..48],
        &[0, 0, 0, 0, 0x11, 0x22, 0x33, 0x45, 0x50, RST | ACK]
    );
    n += 1;

    for p in [&b"query"[..], &[0xab; 100], b""] {
        let input = udp(EXT, (NODE, 30053)).payload(p).build();
        let (verdict, out) = h.run(&input);
        assert_eq!(
            verdict,
            XDP_TX,
            "payload of {} bytes (frame {} -> 70)",
            p.len(),
            input.len()
        );
        assert_eq!(out.len(), 70, "payload of {} bytes", p.len());
        assert_frame_eq(&out, &icmp_for(&input));
        verify_icmp(&out);
        assert_eq!(
            &out[14..24],
            &[0x45, 0, 0, 56, 0, 0, 0x40, 0, 64, IPPROTO_ICMP]
        );
        assert_eq!(&out[34..36], &[3, 3], "type 3 code 3");
        assert_eq!(&out[42..70], &input[14..42], "quoted IPv4 + UDP headers");
        n += 1;
    }
    assert_counters(&h, &[(CNT_REJECT_NO_BACKEND, n)]);

    // Never answer a reset; IPv4 options: dropped.
    let opts = [1, 1, 1, 0];
    for input in [
        tcp(EXT, NODE_PORT, RST).build(),
        tcp(EXT, NODE_PORT, RST | ACK).build(),
        syn.clone().ip_opts(&opts).build(),
        udp(EXT, (NODE, 30053)).ip_opts(&opts).payload(b"q").build(),
    ] {
        let (verdict, out) = h.run(&input);
        assert_eq!(verdict, XDP_DROP);
        assert_frame_eq(&out, &input);
    }
    // An unexposed ClusterIP port is rejected the same way.
    h.add_vip(VIP);
    let syn81 = tcp(POD, (VIP, 81), SYN).build();
    let (verdict, out) = h.run(&syn81);
    assert_eq!(verdict, XDP_TX);
    assert_frame_eq(&out, &rst_for(&syn81, 0, seq + 1, RST | ACK));
    assert_counters(
        &h,
        &[(CNT_REJECT_NO_BACKEND, n + 4), (CNT_REJECT_NO_PORT, 1)],
    );
    assert!(h.conntrack().is_empty());
}

/// 8. ClusterIP (no FE_SNAT): DNAT only, the source is unchanged; the reply gets the VIP back.
#[test]
fn xdp_clusterip_is_dnat_only() {
    let mut h = Harness::new();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = h.add_service((VIP, 80), PROTO_TCP, 1, &[BE1], 0, KIND_CLUSTER_IP);
    let syn = tcp(POD, (VIP, 80), SYN).tcp_opts(&MSS).payload(b"GET /");
    let input = syn.build();
    assert_nat(&h, &syn, &syn.clone().dst(BE1));
    let (_, out) = h.run(&input);
    let allowed = [24, 25, 30, 31, 32, 33, 36, 37, 50, 51];
    let ch = changed(&input, &out);
    assert!(
        ch.iter().all(|i| allowed.contains(i)),
        "unexpected bytes changed: {ch:?}"
    );
    assert_eq!(
        h.ct_get(ct_key(POD, (VIP, 80), PROTO_TCP)),
        Some(ct_entry(BE1, CT_FORWARD, 1, ids[0], ([0; 4], 0)))
    );
    assert_eq!(
        h.ct_get(ct_key(BE1, POD, PROTO_TCP)),
        Some(ct_entry((VIP, 80), CT_REPLY, 1, ids[0], ([0; 4], 0)))
    );
    let synack = tcp(BE1, POD, SYN | ACK).tcp_opts(&MSS);
    assert_nat(&h, &synack, &synack.clone().src((VIP, 80)));
    // A backend on the Service port: only the address changes.
    h.add_service(
        (VIP, 443),
        PROTO_TCP,
        2,
        &[(BE2.0, 443)],
        0,
        KIND_CLUSTER_IP,
    );
    let s = tcp(POD, (VIP, 443), SYN);
    assert_nat(&h, &s, &s.clone().dst((BE2.0, 443)));
    assert_counters(&h, &[]);
}

/// 9. IPv4 options (IHL 6 and 15) to the NodePort: ports read after the options, both NATs
///    applied, checksums valid; the reply too.
#[test]
fn xdp_ipv4_options_to_nodeport() {
    let mut h = Harness::new();
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    let ids = h.node_port(NODE_PORT, PROTO_TCP, 3, &[BE1]);
    h.node_port((NODE, 30053), PROTO_UDP, 4, &[DNS_BE]);
    let mut max_opts = [1u8; 40];
    max_opts[39] = 0;
    let cases = [
        (
            "TCP, IHL=6",
            tcp(EXT, NODE_PORT, SYN)
                .ip_opts(&[1, 1, 1, 0])
                .payload(b"x"),
            BE1,
        ),
        (
            "TCP, IHL=15",
            tcp((EXT.0, 40001), NODE_PORT, SYN).ip_opts(&max_opts),
            BE1,
        ),
        (
            "UDP, IHL=6",
            udp(EXT, (NODE, 30053)).ip_opts(&[1, 1, 1, 0]).payload(b"q"),
            DNS_BE,
        ),
        (
            "UDP, IHL=15",
            udp((EXT.0, 40001), (NODE, 30053)).ip_opts(&max_opts),
            DNS_BE,
        ),
    ];
    for (name, p, be) in cases {
        let (verdict, out) = h.run(&p.build());
        assert_eq!(verdict, XDP_PASS, "{name}");
        let off = 14 + 20 + p.ip_opts.len();
        let sp = be16(&out, off);
        assert!(
            (SNAT_PORT_MIN..=SNAT_PORT_MAX).contains(&sp),
            "{name}: SNAT port {sp}"
        );
        assert_frame_eq(&out, &p.clone().src((NODE, sp)).dst(be).build());
        verify_checksums(&out);
        if name == "TCP, IHL=6" {
            let fwd = h.ct_get(ct_key(EXT, NODE_PORT, PROTO_TCP));
            assert_eq!(
                fwd,
                Some(ct_entry(BE1, CT_FORWARD | CT_SNAT, 3, ids[0], (NODE, sp)))
            );
            let r = tcp(BE1, (NODE, sp), SYN | ACK).ip_opts(&[1, 1, 1, 0]);
            assert_nat(&h, &r, &r.clone().src(NODE_PORT).dst(EXT));
        }
    }
    assert_counters(&h, &[(CNT_SNAT, 4)]);
}

/// 10. fib-lookup forwarding. The test run's ingress device is the veth `up0` of the harness
///     namespace (via `xdp_md.ingress_ifindex`); the pod CIDR is routed via a permanent
///     neighbour on `up0` (XDP_TX: MACs from the FIB, TTL - 1, valid checksums), or via another
///     interface (XDP_PASS, MACs and TTL untouched). No route, TTL 1, a packet over the MTU and
///     a next hop without neighbour entry also pass.
#[test]
fn xdp_forward_back_out_of_ingress_interface() {
    let mut h = Harness::new();
    h.ip(
        "link add up0 address 02:00:00:00:00:01 type veth peer name up0p address 02:00:00:00:00:02",
    );
    h.ip("link add pod0 address 02:00:00:00:00:03 type veth peer name pod0p");
    for dev in ["up0", "up0p", "pod0", "pod0p"] {
        h.ip(&format!("link set {dev} up"));
    }
    h.ip("addr add 192.168.77.1/24 dev up0");
    h.ip("addr add 10.99.0.1/24 dev pod0");
    h.ip("neigh add 192.168.77.254 lladdr 02:00:00:00:00:fe dev up0 nud permanent");
    h.ip("neigh add 10.99.0.2 lladdr 02:00:00:00:00:fd dev pod0 nud permanent");
    h.ns.sysctl(&[("net.ipv4.ip_forward", "1")]).unwrap();
    h.ingress = Some(h.ifindex("up0"));
    h.set_config(NODE, SNAT_PORT_MIN, SNAT_PORT_MAX);
    h.node_port(NODE_PORT, PROTO_TCP, 3, &[BE1]);

    // No route to the backend yet: NATed and passed.
    let syn = tcp(EXT, NODE_PORT, SYN).tcp_opts(&MSS);
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(verdict, XDP_PASS, "no route");
    let p = be16(&out, 34);
    let natted = syn.clone().src((NODE, p)).dst(BE1);
    assert_frame_eq(&out, &natted.build());

    // Route back out of up0: transmitted from XDP.
    h.ip("route add 10.244.0.0/16 via 192.168.77.254 dev up0");
    // What XDP_TX sends: TTL - 1 (header checksum recomputed), MACs from the FIB.
    let tx_frame = |p: &Pkt| {
        let mut f = p.clone().ttl(p.ttl - 1).build();
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xfe]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f
    };
    let (verdict, out) = h.run(&syn.build());
    assert_eq!(verdict, XDP_TX, "route back out of the ingress interface");
    assert_frame_eq(&out, &tx_frame(&natted));
    verify_checksums(&out);
    // Other TTLs, so the incremental TTL checksum update meets other header sums.
    for ttl in [2, 255, 128] {
        let s = syn.clone().ttl(ttl);
        let (verdict, out) = h.run(&s.build());
        assert_eq!(verdict, XDP_TX, "TTL {ttl}");
        assert_frame_eq(&out, &tx_frame(&natted.clone().ttl(ttl)));
        verify_checksums(&out);
    }
    // An IPv4 ID chosen so that the recomputed header checksum after TTL - 1 is +0 (0x0000):
    // the incremental update (as Linux's ip_decrease_ttl) may write -0 (0xffff) instead; both
    // verify, everything else must be exact.
    let mut hdr = natted.clone().ttl(63).build()[14..34].to_vec();
    hdr[4..6].fill(0);
    hdr[10..12].fill(0);
    let id = (0xffff - fold(sum16(&hdr))).to_be_bytes();
    let set_id = |f: Vec<u8>| patch_ip(f, |ip| ip[4..6].copy_from_slice(&id));
    let (verdict, out) = h.run(&set_id(syn.build()));
    assert_eq!(verdict, XDP_TX);
    verify_checksums(&out);
    let mut want = tx_frame(&natted);
    want[14..].copy_from_slice(&set_id(natted.clone().ttl(63).build())[14..]);
    assert_eq!(be16(&want, 24), 0);
    assert!(
        [0, 0xffff].contains(&be16(&out, 24)),
        "header checksum {:#06x}",
        be16(&out, 24)
    );
    want[24..26].copy_from_slice(&out[24..26]);
    assert_frame_eq(&out, &want);
    // TTL 1: left to the stack (time exceeded).
    let s1 = syn.clone().ttl(1);
    assert_nat(&h, &s1, &natted.clone().ttl(1));
    // Larger than up0's MTU (1500): FRAG_NEEDED, left to the stack.
    let big = tcp(EXT, NODE_PORT, ACK).payload(&[0x5a; 1500]);
    assert_nat(&h, &big, &big.clone().src((NODE, p)).dst(BE1));

    // The reply from a backend on another node comes in on up0 and is routed to the client,
    // back out of up0 as well.
    h.ip("route add 192.168.50.0/24 via 192.168.77.254 dev up0");
    let r = tcp(BE1, (NODE, p), SYN | ACK);
    let (verdict, out) = h.run(&r.build());
    // EXT (192.168.77.2) is on up0's own subnet but has no neighbour entry: NO_NEIGH -> pass.
    assert_eq!(verdict, XDP_PASS, "client without neighbour entry");
    assert_frame_eq(&out, &r.clone().src(NODE_PORT).dst(EXT).build());
    h.ip("neigh add 192.168.77.2 lladdr 02:00:00:00:00:ee dev up0 nud permanent");
    let (verdict, out) = h.run(&r.build());
    assert_eq!(verdict, XDP_TX, "reply back out of up0");
    let mut want = tx_frame(&r.clone().src(NODE_PORT).dst(EXT));
    want[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xee]);
    assert_frame_eq(&out, &want);

    // Route through another interface (a local pod network): passed to the stack untouched.
    h.ip("route replace 10.244.0.0/16 via 10.99.0.2 dev pod0");
    assert_nat(&h, &syn, &natted);
    assert_eq!(h.conntrack().len(), 2);
}
