//! The one frame builder, [`Pkt`]: Ethernet (the test MACs) + IPv4 (with options) or IPv6
//! (with extension headers) + TCP, UDP, SCTP or ICMP/ICMPv6 + payload, every checksum filled in
//! from scratch. The family is the type of the addresses ([`Ip`]: `[u8; 4]` or `[u8; 16]`).
use std::fmt::Debug;

use lb_common::{addr4, PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use podlb::types::Family;

use super::checksum::{crc32c, fold, pseudo_header6, pseudo_sum, sum16};
use super::{
    ACK, DST_MAC, IPPROTO_ICMP, IPPROTO_ICMPV6, NH_DEST_OPTS, NH_FRAGMENT, NH_HOP_BY_HOP, SRC_MAC,
    VTF,
};

/// An address of one IP family as frames carry it: `[u8; 4]` (IPv4) or `[u8; 16]` (IPv6).
pub trait Ip: Copy + Debug + PartialEq {
    const FAMILY: Family;
    /// The protocol number of the family's ICMP.
    const ICMP: u8;
    /// The IP header fields only this family has.
    type Fields: Clone + Debug;
    /// Those fields for a packet of `proto`, as the tests send it.
    fn fields(proto: u8) -> Self::Fields;
    /// The sum of the pseudo-header that TCP, UDP (and ICMPv6) checksums cover.
    fn pseudo_sum(src: Self, dst: Self, proto: u8, l4_len: usize) -> u32;
    /// Ethernet + the IP header (and extension headers) of `p`, then `l4`.
    fn frame(p: &Pkt<Self>, l4: &[u8]) -> Vec<u8>;
    /// The address as the datapath's maps hold it (`lb_common::Addr`).
    fn map_addr(self) -> [u8; 16];
}

/// The IPv4 header fields of a [`Pkt`].
#[derive(Clone, Debug)]
pub struct Ipv4Fields {
    pub tos: u8,
    pub id: u16,
    /// Flags + fragment offset (DF alone is not a fragment).
    pub frag: u16,
    /// Options (a multiple of 4 bytes, at most 40).
    pub opts: Vec<u8>,
}

/// The IPv6 header fields of a [`Pkt`].
#[derive(Clone, Debug)]
pub struct Ipv6Fields {
    /// The first 32 bits of the IPv6 header (version, traffic class, flow label).
    pub vtf: u32,
    /// Extension headers before the upper layer: (header type, bytes after the next-header
    /// byte); the next-header bytes are chained by `build`.
    pub ext: Vec<(u8, Vec<u8>)>,
}

impl Ip for [u8; 4] {
    const FAMILY: Family = Family::V4;
    const ICMP: u8 = IPPROTO_ICMP;
    type Fields = Ipv4Fields;

    /// TOS 0, ID 0x1c46 and DF (UDP: no flags); ICMP as Linux sends errors: TOS 0xc0, ID
    /// 0x7a31, no flags.
    fn fields(proto: u8) -> Ipv4Fields {
        let (tos, id, frag) = match proto {
            IPPROTO_ICMP => (0xc0, 0x7a31, 0),
            PROTO_UDP => (0, 0x1c46, 0),
            _ => (0, 0x1c46, 0x4000),
        };
        Ipv4Fields {
            tos,
            id,
            frag,
            opts: vec![],
        }
    }

    fn pseudo_sum(src: Self, dst: Self, proto: u8, l4_len: usize) -> u32 {
        pseudo_sum(src, dst, proto, l4_len)
    }

    fn frame(p: &Pkt<Self>, l4: &[u8]) -> Vec<u8> {
        let ip = &p.ip;
        let hlen = 20 + ip.opts.len();
        let mut f = DST_MAC.to_vec();
        f.extend(SRC_MAC);
        f.extend([0x08, 0x00]);
        f.push(0x40 | (hlen / 4) as u8);
        f.push(ip.tos);
        f.extend(((hlen + l4.len()) as u16).to_be_bytes());
        f.extend(ip.id.to_be_bytes());
        f.extend(ip.frag.to_be_bytes());
        f.extend([p.ttl, p.proto, 0, 0]); // TTL, protocol, checksum
        f.extend(p.src.0);
        f.extend(p.dst.0);
        f.extend(&ip.opts);
        let c = !fold(sum16(&f[14..14 + hlen]));
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f.extend(l4);
        f
    }

    fn map_addr(self) -> [u8; 16] {
        addr4(self)
    }
}

impl Ip for [u8; 16] {
    const FAMILY: Family = Family::V6;
    const ICMP: u8 = IPPROTO_ICMPV6;
    type Fields = Ipv6Fields;

    /// Traffic class and flow label [`VTF`]; ICMPv6: both 0.
    fn fields(proto: u8) -> Ipv6Fields {
        let vtf = match proto {
            IPPROTO_ICMPV6 => 0x6000_0000,
            _ => VTF,
        };
        Ipv6Fields { vtf, ext: vec![] }
    }

    fn pseudo_sum(src: Self, dst: Self, proto: u8, l4_len: usize) -> u32 {
        sum16(&pseudo_header6(&src, &dst, proto, l4_len))
    }

    fn frame(p: &Pkt<Self>, l4: &[u8]) -> Vec<u8> {
        let ext = &p.ip.ext;
        let mut payload = Vec::new();
        for (i, (_, body)) in ext.iter().enumerate() {
            let next = ext.get(i + 1).map(|e| e.0).unwrap_or(p.proto);
            payload.push(next);
            payload.extend(body);
            assert!(payload.len().is_multiple_of(8), "extension header length");
        }
        payload.extend(l4);
        let next = ext.first().map(|e| e.0).unwrap_or(p.proto);
        let mut f = DST_MAC.to_vec();
        f.extend(SRC_MAC);
        f.extend([0x86, 0xdd]);
        f.extend(p.ip.vtf.to_be_bytes());
        f.extend((payload.len() as u16).to_be_bytes());
        f.extend([next, p.ttl]);
        f.extend(p.src.0);
        f.extend(p.dst.0);
        f.extend(payload);
        f
    }

    fn map_addr(self) -> [u8; 16] {
        self
    }
}

/// A test packet of family `A` (IPv4 by default); `build` makes the frame.
#[derive(Clone, Debug)]
pub struct Pkt<A: Ip = [u8; 4]> {
    /// Address and port (ICMP: port 0, unused).
    pub src: (A, u16),
    pub dst: (A, u16),
    /// The upper-layer protocol (TCP, UDP, SCTP, ICMP/ICMPv6).
    pub proto: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// The fields of the family's IP header.
    pub ip: A::Fields,
    pub tcp_flags: u8,
    pub tcp_opts: Vec<u8>,
    /// UDP: send checksum 0 ("no checksum" over IPv4, invalid over IPv6, RFC 8200 section 8.1).
    pub udp_no_csum: bool,
    /// SCTP verification tag.
    pub vtag: u32,
    /// XORed into the SCTP CRC32c after it is computed (0: a correct CRC).
    pub crc_xor: u32,
    /// TCP/UDP payload, SCTP chunks, or the whole ICMP message (its checksum field zero).
    pub payload: Vec<u8>,
    /// Bytes after the IP datagram (Ethernet padding), not counted in its length.
    pub trailer: Vec<u8>,
}

/// A TCP segment with `flags` (seq 0x11223344, ack 0x55667788 with ACK, window 64240).
pub fn tcp<A: Ip>(src: (A, u16), dst: (A, u16), flags: u8) -> Pkt<A> {
    Pkt {
        src,
        dst,
        proto: PROTO_TCP,
        ttl: 64,
        ip: A::fields(PROTO_TCP),
        tcp_flags: flags,
        tcp_opts: vec![],
        udp_no_csum: false,
        vtag: 0,
        crc_xor: 0,
        payload: vec![],
        trailer: vec![],
    }
}

pub fn udp<A: Ip>(src: (A, u16), dst: (A, u16)) -> Pkt<A> {
    Pkt {
        proto: PROTO_UDP,
        ip: A::fields(PROTO_UDP),
        ..tcp(src, dst, 0)
    }
}

/// An SCTP packet with verification tag `vtag` and `chunks`.
pub fn sctp<A: Ip>(src: (A, u16), dst: (A, u16), vtag: u32, chunks: Vec<u8>) -> Pkt<A> {
    Pkt {
        proto: PROTO_SCTP,
        ip: A::fields(PROTO_SCTP),
        vtag,
        payload: chunks,
        ..tcp(src, dst, 0)
    }
}

/// An ICMP (IPv4) or ICMPv6 message from `src` to `dst`: `typ`, `code`, the 4 bytes after the
/// checksum, and `body`; the checksum is computed (ICMPv6: under the pseudo-header).
pub fn icmp<A: Ip>(src: A, dst: A, typ: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Pkt<A> {
    let mut m = vec![typ, code, 0, 0];
    m.extend(rest);
    m.extend(body);
    Pkt {
        proto: A::ICMP,
        ip: A::fields(A::ICMP),
        payload: m,
        ..tcp((src, 0), (dst, 0), 0)
    }
}

impl<A: Ip> Pkt<A> {
    pub fn src(self, src: (A, u16)) -> Self {
        Self { src, ..self }
    }
    pub fn dst(self, dst: (A, u16)) -> Self {
        Self { dst, ..self }
    }
    /// The IPv4 TTL or IPv6 hop limit.
    pub fn ttl(self, ttl: u8) -> Self {
        Self { ttl, ..self }
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
    /// A wrong SCTP CRC32c: the right one XORed with `crc_xor`.
    pub fn corrupt(self, crc_xor: u32) -> Self {
        Self { crc_xor, ..self }
    }
    /// `t` after the IP datagram (Ethernet padding).
    pub fn trailer(self, t: &[u8]) -> Self {
        Self {
            trailer: t.to_vec(),
            ..self
        }
    }

    /// The upper-layer packet with its checksum (TCP, UDP, ICMPv6: under the pseudo-header;
    /// ICMP: plain; SCTP: the CRC32c, stored little-endian).
    pub fn l4(&self) -> Vec<u8> {
        let (src, dst) = (self.src.0, self.dst.0);
        if self.proto == A::ICMP {
            let mut m = self.payload.clone();
            m[2..4].fill(0);
            let pseudo = match A::FAMILY {
                Family::V4 => 0,
                Family::V6 => A::pseudo_sum(src, dst, self.proto, m.len()),
            };
            let c = !fold(pseudo + sum16(&m));
            m[2..4].copy_from_slice(&c.to_be_bytes());
            return m;
        }
        let mut l4 = Vec::new();
        l4.extend(self.src.1.to_be_bytes());
        l4.extend(self.dst.1.to_be_bytes());
        let csum_off = match self.proto {
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
                16
            }
            PROTO_UDP => {
                l4.extend(((8 + self.payload.len()) as u16).to_be_bytes());
                l4.extend([0, 0]);
                6
            }
            PROTO_SCTP => {
                l4.extend(self.vtag.to_be_bytes());
                l4.extend([0; 4]);
                l4.extend(&self.payload);
                let c = crc32c(&l4) ^ self.crc_xor;
                l4[8..12].copy_from_slice(&c.to_le_bytes());
                return l4;
            }
            p => panic!("no builder for protocol {p}"),
        };
        l4.extend(&self.payload);
        let mut c = !fold(A::pseudo_sum(src, dst, self.proto, l4.len()) + sum16(&l4));
        if self.proto == PROTO_UDP && c == 0 {
            c = 0xffff; // RFC 768: a computed zero is sent as all ones
        }
        if self.proto == PROTO_UDP && self.udp_no_csum {
            c = 0;
        }
        l4[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
        l4
    }

    /// The frame: Ethernet, the IP header, `l4()`, then the trailer.
    pub fn build(&self) -> Vec<u8> {
        let mut f = A::frame(self, &self.l4());
        f.extend(&self.trailer);
        f
    }
}

/// An IPv6 [`Pkt`].
pub type Pkt6 = Pkt<[u8; 16]>;

impl Pkt {
    pub fn ip_opts(mut self, o: &[u8]) -> Self {
        assert!(o.len().is_multiple_of(4) && o.len() <= 40);
        self.ip.opts = o.to_vec();
        self
    }
    /// The flags + fragment offset field.
    pub fn frag(mut self, frag: u16) -> Self {
        self.ip.frag = frag;
        self
    }
}

impl Pkt6 {
    /// Adds a hop-by-hop options header (8 bytes: a PadN option of 4 bytes).
    pub fn hop_by_hop(mut self) -> Self {
        self.ip.ext.push((NH_HOP_BY_HOP, vec![0, 1, 4, 0, 0, 0, 0]));
        self
    }
    /// Adds a destination options header (8 bytes: a PadN option of 4 bytes).
    pub fn dest_opts(mut self) -> Self {
        self.ip.ext.push((NH_DEST_OPTS, vec![0, 1, 4, 0, 0, 0, 0]));
        self
    }
    /// Adds a fragment header: `offset` in 8-byte units, the M flag, identification.
    pub fn fragment(mut self, offset: u16, more: bool, id: u32) -> Self {
        let mut h = vec![0];
        h.extend(((offset << 3) | more as u16).to_be_bytes());
        h.extend(id.to_be_bytes());
        self.ip.ext.push((NH_FRAGMENT, h));
        self
    }
}
