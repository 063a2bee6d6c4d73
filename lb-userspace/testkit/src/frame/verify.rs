//! Readers and independent verifiers of frames: lengths and header checksums, the TCP, UDP and
//! ICMP/ICMPv6 checksums recomputed from scratch, SCTP's CRC32c, and a byte-exact comparison
//! that shows where two frames differ.
use lb_common::{PROTO_SCTP, PROTO_TCP, PROTO_UDP};
use podlb::types::Family;

use super::checksum::{csum6, fold, pseudo_sum, sctp_crc, sum16};
use super::{IP6, IP6_DST, IP6_NEXT, IP6_PLEN, IP6_SRC, IPPROTO_ICMP, IPPROTO_ICMPV6, L4};

pub fn be16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

pub fn addr16(f: &[u8], off: usize) -> [u8; 16] {
    f[off..off + 16].try_into().unwrap()
}

/// Whether `f` has the IPv6 EtherType.
pub fn is_ipv6(f: &[u8]) -> bool {
    f.len() >= 14 && be16(f, 12) == 0x86dd
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
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

/// Offsets where two equally long frames differ.
pub fn changed(a: &[u8], b: &[u8]) -> Vec<usize> {
    assert_eq!(a.len(), b.len(), "frame length changed");
    (0..a.len()).filter(|&i| a[i] != b[i]).collect()
}

// ---------------------------------------------------------------------------------------------
// IPv4

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

// ---------------------------------------------------------------------------------------------
// IPv6

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

// ---------------------------------------------------------------------------------------------
// SCTP, over either family

/// The SCTP packet inside frame `f` of `family`, delimited by the IP length (so Ethernet
/// padding is left out), after checking the IP header (IPv4: with its checksum and at least a
/// common header; IPv6: no extension headers) and the protocol.
fn sctp_in(f: &[u8], family: Family) -> Result<&[u8], String> {
    let (l4, proto) = match family {
        Family::V4 => {
            let (hlen, tot) = ipv4_lengths(f, 12)?;
            (&f[14 + hlen..14 + tot], f[23])
        }
        Family::V6 => (upper6(f)?, f[IP6_NEXT]),
    };
    if proto != PROTO_SCTP {
        return Err(format!("protocol {proto}, not SCTP"));
    }
    Ok(l4)
}

/// Checks the SCTP CRC32c of `f` (of `family`) from scratch; returns it.
#[track_caller]
fn verify_sctp_in(f: &[u8], family: Family) -> u32 {
    let l4 = sctp_in(f, family).unwrap_or_else(|e| panic!("{e}\nframe: {}", hex(f)));
    let stored = u32::from_le_bytes(l4[8..12].try_into().unwrap());
    let want = sctp_crc(l4);
    assert_eq!(
        stored,
        want,
        "SCTP CRC32c: stored {stored:#010x}, computed {want:#010x} over {} bytes\nframe: {}",
        l4.len(),
        hex(f)
    );
    stored
}

/// The SCTP packet inside the IPv4 frame `f` (see [`ipv4_lengths`]).
pub fn sctp_of(f: &[u8]) -> Result<&[u8], String> {
    sctp_in(f, Family::V4)
}

/// Checks the IPv4 header checksum and the SCTP CRC32c of `f` from scratch; returns the CRC.
#[track_caller]
pub fn verify_sctp(f: &[u8]) -> u32 {
    verify_sctp_in(f, Family::V4)
}

/// Checks the SCTP CRC32c of `f` (IPv6, no extension headers); returns it.
#[track_caller]
pub fn verify_sctp6(f: &[u8]) -> u32 {
    verify_sctp_in(f, Family::V6)
}

/// The CRC32c field of the SCTP packet in the IPv4 frame `f`, as stored.
pub fn crc_field(f: &[u8]) -> u32 {
    let l4 = sctp_of(f).unwrap();
    u32::from_le_bytes(l4[8..12].try_into().unwrap())
}

/// The CRC32c field of the SCTP packet in the IPv6 frame `f`, as stored.
pub fn crc_field6(f: &[u8]) -> u32 {
    u32::from_le_bytes(f[L4 + 8..L4 + 12].try_into().unwrap())
}
