//! IPv6 counterpart of `packet.rs` for the BPF_PROG_TEST_RUN packet tests
//! (`ipv6_packet_tests.rs`): the Ethernet + IPv6 (+ extension headers) + TCP/UDP/SCTP frame
//! builder, ICMPv6 frames, the replies the programs must send (TCP RST, ICMPv6 port
//! unreachable), independent checksum arithmetic and verifiers (pseudo-header per RFC 8200
//! section 8.1, CRC32c for SCTP), and the harness helpers for IPv6 frontends, backends,
//! conntrack entries and the IPv6 SNAT address.
//!
//! Nothing here calls into the eBPF code's logic: every checksum is computed from scratch.

use aya::maps::Array;
use lb_common::*;

use super::packet::{crc32c, fold, hex, sctp_crc, sum16, Harness, ACK};

/// An IPv6 address and a port (the IPv6 counterpart of `packet::Addr`).
pub type Addr6 = ([u8; 16], u16);

pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 extension header types.
pub const NH_HOP_BY_HOP: u8 = 0;
pub const NH_ROUTING: u8 = 43;
pub const NH_FRAGMENT: u8 = 44;
pub const NH_DEST_OPTS: u8 = 60;
pub const NH_NONE: u8 = 59;

/// Offsets in an Ethernet frame carrying IPv6 without extension headers.
pub const IP6: usize = 14;
pub const IP6_PLEN: usize = IP6 + 4;
pub const IP6_NEXT: usize = IP6 + 6;
pub const IP6_HOP: usize = IP6 + 7;
pub const IP6_SRC: usize = IP6 + 8;
pub const IP6_DST: usize = IP6 + 24;
pub const L4: usize = IP6 + 40;

/// The MAC addresses every test frame carries: to the node (…:01), from the client (…:05).
pub const DST_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x01];
pub const SRC_MAC: [u8; 6] = [0x0a, 0x58, 0x0a, 0xf4, 0x00, 0x05];
/// Version 6, traffic class 0x28, flow label 0x54321: the programs must leave these alone on
/// NAT (and quote them unchanged).
pub const VTF: u32 = 0x6285_4321;

// ---------------------------------------------------------------------------------------------
// Harness helpers for IPv6 state (family FAMILY_V6 everywhere).

impl Harness {
    /// Adds an IPv6 backend; returns its id.
    pub fn new_backend6(&mut self, (addr, port): Addr6, proto: u8) -> u32 {
        let id = self.next_backend;
        self.next_backend += 1;
        let b = Backend {
            addr,
            port,
            proto,
            family: FAMILY_V6,
        };
        self.set_backend(id, b);
        id
    }

    /// Writes the slots of `svc_id`, then the IPv6 frontend `fe` with its count.
    pub fn write_frontend6(
        &mut self,
        fe: Addr6,
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
            addr: fe.0,
            port: fe.1,
            proto,
            family: FAMILY_V6,
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

    /// Adds IPv6 backends and an IPv6 frontend of `kind` for them; returns the backend ids.
    pub fn add_frontend6(
        &mut self,
        fe: Addr6,
        proto: u8,
        svc_id: u32,
        backends: &[Addr6],
        flags: u16,
        kind: u16,
    ) -> Vec<u32> {
        let ids: Vec<u32> = backends
            .iter()
            .map(|b| self.new_backend6(*b, proto))
            .collect();
        self.write_frontend6(fe, proto, svc_id, &ids, flags, kind);
        ids
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
        };
        m.set(0, cfg, 0).unwrap();
    }

    /// Marks `addr` as an IPv6 ClusterIP (ports it does not expose are rejected).
    pub fn add_vip6(&mut self, addr: [u8; 16]) {
        let key = VipKey {
            addr,
            family: FAMILY_V6,
            pad: [0; 3],
        };
        self.hash::<VipKey, Vip>(MAP_VIPS)
            .insert(key, Vip { flags: 0 }, 0)
            .unwrap();
    }
}

pub fn ct_key6(src: Addr6, dst: Addr6, proto: u8) -> CtKey {
    CtKey {
        saddr: src.0,
        daddr: dst.0,
        sport: src.1,
        dport: dst.1,
        proto,
        family: FAMILY_V6,
        pad: [0; 2],
    }
}

/// An IPv6 conntrack entry; `snat` is `NO_SNAT6` when the flow is not source-NATed.
pub fn ct_entry6(nat: Addr6, flags: u32, svc_id: u32, backend_id: u32, snat: Addr6) -> CtEntry {
    CtEntry {
        nat_addr: nat.0,
        snat_addr: snat.0,
        nat_port: nat.1,
        snat_port: snat.1,
        flags,
        svc_id,
        backend_id,
    }
}

pub const NO_SNAT6: Addr6 = ([0; 16], 0);

// ---------------------------------------------------------------------------------------------
// Independent checksum arithmetic.

/// The IPv6 pseudo-header of RFC 8200 section 8.1, spelled out byte by byte: source address,
/// destination address, upper-layer packet length (32 bits), three zero bytes, next header.
pub fn pseudo_header6(src: &[u8; 16], dst: &[u8; 16], next: u8, upper_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend(src);
    p.extend(dst);
    p.extend((upper_len as u32).to_be_bytes());
    p.extend([0, 0, 0, next]);
    p
}

/// `!fold(sum)` of the IPv6 pseudo-header and `upper` (RFC 1071): with the checksum field
/// zeroed, the checksum to store; with the field filled in, 0 exactly when it verifies.
pub fn csum6(src: &[u8; 16], dst: &[u8; 16], next: u8, upper: &[u8]) -> u16 {
    let mut all = pseudo_header6(src, dst, next, upper.len());
    all.extend(upper);
    !fold(sum16(&all))
}

// ---------------------------------------------------------------------------------------------
// Frame builder: Ethernet + IPv6 (+ extension headers) + TCP/UDP/SCTP + payload.

#[derive(Clone, Debug)]
pub struct Pkt6 {
    pub src: Addr6,
    pub dst: Addr6,
    /// The upper-layer protocol (TCP, UDP, SCTP).
    pub proto: u8,
    pub hop: u8,
    /// The first 32 bits of the IPv6 header (version, traffic class, flow label).
    pub vtf: u32,
    /// Extension headers before the upper layer: (header type, bytes after the next-header
    /// byte); the next-header bytes are chained by `build`.
    pub ext: Vec<(u8, Vec<u8>)>,
    pub tcp_flags: u8,
    pub tcp_opts: Vec<u8>,
    /// UDP: send checksum 0 (invalid over IPv6, RFC 8200 section 8.1).
    pub udp_no_csum: bool,
    /// SCTP verification tag.
    pub vtag: u32,
    /// TCP/UDP payload, or SCTP chunks.
    pub payload: Vec<u8>,
}

pub fn tcp6(src: Addr6, dst: Addr6, flags: u8) -> Pkt6 {
    Pkt6 {
        src,
        dst,
        proto: PROTO_TCP,
        hop: 64,
        vtf: VTF,
        ext: vec![],
        tcp_flags: flags,
        tcp_opts: vec![],
        udp_no_csum: false,
        vtag: 0,
        payload: vec![],
    }
}

pub fn udp6(src: Addr6, dst: Addr6) -> Pkt6 {
    Pkt6 {
        proto: PROTO_UDP,
        ..tcp6(src, dst, 0)
    }
}

/// An SCTP packet with verification tag `vtag` and `chunks`.
pub fn sctp6(src: Addr6, dst: Addr6, vtag: u32, chunks: Vec<u8>) -> Pkt6 {
    Pkt6 {
        proto: PROTO_SCTP,
        vtag,
        payload: chunks,
        ..tcp6(src, dst, 0)
    }
}

impl Pkt6 {
    pub fn src(self, src: Addr6) -> Self {
        Self { src, ..self }
    }
    pub fn dst(self, dst: Addr6) -> Self {
        Self { dst, ..self }
    }
    pub fn hop(self, hop: u8) -> Self {
        Self { hop, ..self }
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
    pub fn no_udp_csum(self) -> Self {
        Self {
            udp_no_csum: true,
            ..self
        }
    }
    /// Adds a hop-by-hop options header (8 bytes: a PadN option of 4 bytes).
    pub fn hop_by_hop(mut self) -> Self {
        self.ext.push((NH_HOP_BY_HOP, vec![0, 1, 4, 0, 0, 0, 0]));
        self
    }
    /// Adds a destination options header (8 bytes: a PadN option of 4 bytes).
    pub fn dest_opts(mut self) -> Self {
        self.ext.push((NH_DEST_OPTS, vec![0, 1, 4, 0, 0, 0, 0]));
        self
    }
    /// Adds a fragment header: `offset` in 8-byte units, the M flag, identification.
    pub fn fragment(mut self, offset: u16, more: bool, id: u32) -> Self {
        let mut h = vec![0];
        h.extend(((offset << 3) | more as u16).to_be_bytes());
        h.extend(id.to_be_bytes());
        self.ext.push((NH_FRAGMENT, h));
        self
    }

    /// The upper-layer packet with its checksum (TCP/UDP: under the pseudo-header; SCTP: the
    /// CRC32c).
    pub fn l4(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend(self.src.1.to_be_bytes());
        l4.extend(self.dst.1.to_be_bytes());
        match self.proto {
            PROTO_TCP => {
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
                l4.extend(&self.payload);
                let c = csum6(&self.src.0, &self.dst.0, PROTO_TCP, &l4);
                l4[16..18].copy_from_slice(&c.to_be_bytes());
            }
            PROTO_UDP => {
                l4.extend(((8 + self.payload.len()) as u16).to_be_bytes());
                l4.extend([0, 0]);
                l4.extend(&self.payload);
                let mut c = csum6(&self.src.0, &self.dst.0, PROTO_UDP, &l4);
                if c == 0 {
                    c = 0xffff; // a computed zero is sent as all ones
                }
                if self.udp_no_csum {
                    c = 0;
                }
                l4[6..8].copy_from_slice(&c.to_be_bytes());
            }
            PROTO_SCTP => {
                l4.extend(self.vtag.to_be_bytes());
                l4.extend([0; 4]);
                l4.extend(&self.payload);
                let c = crc32c(&l4);
                l4[8..12].copy_from_slice(&c.to_le_bytes());
            }
            p => panic!("no builder for protocol {p}"),
        }
        l4
    }

    /// The extension headers, chained, ending with the upper-layer protocol; and the first
    /// next-header value for the IPv6 header.
    fn ext_bytes(&self) -> (u8, Vec<u8>) {
        let mut out = Vec::new();
        for (i, (_, body)) in self.ext.iter().enumerate() {
            let next = self.ext.get(i + 1).map(|e| e.0).unwrap_or(self.proto);
            out.push(next);
            out.extend(body);
            assert!(out.len().is_multiple_of(8), "extension header length");
        }
        (self.ext.first().map(|e| e.0).unwrap_or(self.proto), out)
    }

    pub fn build(&self) -> Vec<u8> {
        let (next, mut payload) = self.ext_bytes();
        payload.extend(self.l4());
        frame6(self.vtf, self.hop, next, &self.src.0, &self.dst.0, &payload)
    }
}

/// Ethernet (the test MACs) + an IPv6 header + `payload` (its length is the payload length).
pub fn frame6(
    vtf: u32,
    hop: u8,
    next: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
    payload: &[u8],
) -> Vec<u8> {
    let mut f = DST_MAC.to_vec();
    f.extend(SRC_MAC);
    f.extend([0x86, 0xdd]);
    f.extend(vtf.to_be_bytes());
    f.extend((payload.len() as u16).to_be_bytes());
    f.extend([next, hop]);
    f.extend(src);
    f.extend(dst);
    f.extend(payload);
    f
}

/// An ICMPv6 message from `src` to `dst` (hop limit 64): `typ`, `code`, the 4 bytes after the
/// checksum, and `body`, with its checksum computed under the pseudo-header.
pub fn icmp6_frame(
    src: [u8; 16],
    dst: [u8; 16],
    typ: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut m = vec![typ, code, 0, 0];
    m.extend(rest);
    m.extend(body);
    let c = csum6(&src, &dst, IPPROTO_ICMPV6, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    frame6(0x6000_0000, 64, IPPROTO_ICMPV6, &src, &dst, &m)
}

/// Applies `patch` to the bytes of frame `f` from the IPv6 header on (no checksum to fix).
pub fn patch6(mut f: Vec<u8>, patch: impl FnOnce(&mut [u8])) -> Vec<u8> {
    patch(&mut f[IP6..]);
    f
}

/// A frame whose upper-layer part is cut to `n` bytes, the payload length adjusted (no
/// extension headers).
pub fn cut_l4_6(f: &[u8], n: usize) -> Vec<u8> {
    patch6(f[..L4 + n].to_vec(), |ip| {
        ip[4..6].copy_from_slice(&(n as u16).to_be_bytes())
    })
}

// ---------------------------------------------------------------------------------------------
// Readers and verifiers.

pub fn addr16(f: &[u8], off: usize) -> [u8; 16] {
    f[off..off + 16].try_into().unwrap()
}

/// The upper-layer packet of `f` (no extension headers), delimited by the payload length,
/// after checking the EtherType, the version and the lengths.
pub fn upper6(f: &[u8]) -> Result<&[u8], String> {
    if f.len() < L4 || f[12..14] != [0x86, 0xdd] {
        return Err("not an IPv6 frame".into());
    }
    if f[IP6] >> 4 != 6 {
        return Err(format!("IP version {}", f[IP6] >> 4));
    }
    let plen = u16::from_be_bytes([f[IP6_PLEN], f[IP6_PLEN + 1]]) as usize;
    if L4 + plen > f.len() {
        return Err(format!(
            "payload length {plen} beyond the frame ({} bytes)",
            f.len()
        ));
    }
    Ok(&f[L4..L4 + plen])
}

/// Recomputes the TCP/UDP/ICMPv6 checksum of `f` from scratch (pseudo-header with the frame's
/// addresses; Ethernet padding ignored). Returns the checksum field. A UDP checksum of zero is
/// an error: it is mandatory over IPv6.
pub fn checksums6(f: &[u8]) -> Result<u16, String> {
    let l4 = upper6(f)?;
    let next = f[IP6_NEXT];
    let field = match next {
        PROTO_TCP if l4.len() >= 20 => u16::from_be_bytes([l4[16], l4[17]]),
        PROTO_UDP if l4.len() >= 8 && u16::from_be_bytes([l4[4], l4[5]]) as usize == l4.len() => {
            u16::from_be_bytes([l4[6], l4[7]])
        }
        IPPROTO_ICMPV6 if l4.len() >= 8 => u16::from_be_bytes([l4[2], l4[3]]),
        _ => {
            return Err(format!(
                "not a complete TCP/UDP/ICMPv6 packet (next {next})"
            ))
        }
    };
    if next == PROTO_UDP && field == 0 {
        return Err("UDP checksum 0 over IPv6".into());
    }
    let (src, dst) = (addr16(f, IP6_SRC), addr16(f, IP6_DST));
    if csum6(&src, &dst, next, l4) != 0 {
        return Err(format!("bad checksum {field:#06x} (next header {next})"));
    }
    Ok(field)
}

#[track_caller]
pub fn verify6(f: &[u8]) -> u16 {
    checksums6(f).unwrap_or_else(|e| panic!("{e}\nframe: {}", hex(f)))
}

/// Checks the SCTP CRC32c of `f` (IPv6, no extension headers); returns it.
#[track_caller]
pub fn verify_sctp6(f: &[u8]) -> u32 {
    let l4 = upper6(f).unwrap_or_else(|e| panic!("{e}\nframe: {}", hex(f)));
    assert_eq!(f[IP6_NEXT], PROTO_SCTP, "next header");
    let stored = u32::from_le_bytes(l4[8..12].try_into().unwrap());
    let want = sctp_crc(l4);
    assert_eq!(
        stored,
        want,
        "SCTP CRC32c: stored {stored:#010x}, computed {want:#010x}\nframe: {}",
        hex(f)
    );
    stored
}

/// The CRC32c field of the SCTP packet in `f`, as stored.
pub fn crc_field6(f: &[u8]) -> u32 {
    u32::from_le_bytes(f[L4 + 8..L4 + 12].try_into().unwrap())
}

// ---------------------------------------------------------------------------------------------
// The replies the programs build.

/// The reply to `req` (IPv6 without extension headers): Ethernet addresses swapped, a fresh
/// IPv6 header (traffic class and flow label 0, hop limit 64) from the request's destination
/// back to its source, then `l4` with its checksum (at `csum_off`) computed under the
/// pseudo-header.
pub fn reply6_to(req: &[u8], next: u8, mut l4: Vec<u8>, csum_off: usize) -> Vec<u8> {
    let src = addr16(req, IP6_DST);
    let dst = addr16(req, IP6_SRC);
    l4[csum_off..csum_off + 2].fill(0);
    let c = csum6(&src, &dst, next, &l4);
    l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
    let mut f = req[6..12].to_vec();
    f.extend(&req[0..6]);
    f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend((l4.len() as u16).to_be_bytes());
    f.extend([next, 64]);
    f.extend(src);
    f.extend(dst);
    f.extend(l4);
    f
}

/// The 74-byte RST answering the TCP frame `req`.
pub fn rst6_for(req: &[u8], seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let mut t = [&req[L4 + 2..L4 + 4], &req[L4..L4 + 2]].concat();
    t.extend(seq.to_be_bytes());
    t.extend(ack.to_be_bytes());
    t.extend([5 << 4, flags, 0, 0, 0, 0, 0, 0]); // data offset, flags, window, csum, urgent
    reply6_to(req, PROTO_TCP, t, 16)
}

/// The 110-byte ICMPv6 port unreachable (type 1, code 4) answering the UDP (or SCTP) frame
/// `req`: the original IPv6 header and the first 8 bytes of the L4 header.
pub fn icmp6_for(req: &[u8]) -> Vec<u8> {
    let mut m = vec![1, 4, 0, 0, 0, 0, 0, 0];
    m.extend(&req[IP6..L4 + 8]);
    reply6_to(req, IPPROTO_ICMPV6, m, 2)
}

/// What an ICMPv6 error quotes of the frame `f`: its IPv6 header and `n` bytes after it.
pub fn quote6(f: &[u8], n: usize) -> Vec<u8> {
    f[IP6..L4 + n].to_vec()
}
