//! Test frames for BPF_PROG_TEST_RUN, shared by the packet tests (`tests/common/packet.rs`
//! holds their harness) and the bench (`podlb-bench`): the Ethernet + IPv4 + TCP/UDP frame
//! builder, and the independent checksum arithmetic and verifiers.

use lb_common::{PROTO_TCP, PROTO_UDP};

pub const IPPROTO_ICMP: u8 = 1;

/// An IPv4 address and a port.
pub type Addr = ([u8; 4], u16);

pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

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

/// CRC32c (Castagnoli), bitwise: reflected polynomial 0x82F63B78, init !0, final complement.
/// Independent of the datapath's table-driven version.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// CRC32c of an SCTP packet (common header + chunks) with its checksum field taken as zero.
pub fn sctp_crc(l4: &[u8]) -> u32 {
    let mut p = l4.to_vec();
    p[8..12].fill(0);
    crc32c(&p)
}

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
