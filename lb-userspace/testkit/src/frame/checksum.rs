//! The independent checksum arithmetic: the Internet checksum (RFC 1071) with the IPv4 and
//! IPv6 pseudo-headers, and SCTP's CRC32c (bitwise, unlike the datapath's table).

/// The sum of the big-endian 16-bit words of `data` (an odd last byte padded with zero).
pub fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// `s` folded to 16 bits, carries added back in.
pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The sum of the IPv4 pseudo-header: addresses, protocol, L4 length.
pub fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: usize) -> u32 {
    sum16(&src) + sum16(&dst) + u32::from(proto) + l4_len as u32
}

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
