//! Frames made from other frames: the replies the programs must send for a request (TCP RST,
//! ICMP or ICMPv6 port unreachable), what an ICMP error quotes of a packet, and edits of a
//! valid frame (a patched IP header, a cut L4 part). Each takes the family of the frame it is
//! given (its EtherType).
use lb_common::PROTO_TCP;

use super::checksum::{csum6, fold, pseudo_sum, sum16};
use super::verify::{addr16, is_ipv6};
use super::{IP6, IP6_DST, IP6_SRC, IPPROTO_ICMP, IPPROTO_ICMPV6, L4};

/// The reply the program must send for `req` (IP without options or extension headers):
/// Ethernet addresses swapped, a fresh IP header from the request's destination back to its
/// source (IPv4: ID 0, DF, TTL 64; IPv6: traffic class and flow label 0, hop limit 64), then
/// `l4` with its checksum filled in (TCP and ICMPv6: with the pseudo-header; ICMP: plain).
fn reply_to(req: &[u8], proto: u8, mut l4: Vec<u8>) -> Vec<u8> {
    let off = if proto == PROTO_TCP { 16 } else { 2 };
    l4[off..off + 2].fill(0);
    let mut f = req[6..12].to_vec();
    f.extend(&req[0..6]);
    if is_ipv6(req) {
        let (src, dst) = (addr16(req, IP6_DST), addr16(req, IP6_SRC));
        let c = csum6(&src, &dst, proto, &l4);
        l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
        f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend((l4.len() as u16).to_be_bytes());
        f.extend([proto, 64]);
        f.extend(src);
        f.extend(dst);
    } else {
        let src: [u8; 4] = req[30..34].try_into().unwrap();
        let dst: [u8; 4] = req[26..30].try_into().unwrap();
        f.extend([0x08, 0x00, 0x45, 0]);
        f.extend(((20 + l4.len()) as u16).to_be_bytes());
        f.extend([0, 0, 0x40, 0, 64, proto, 0, 0]);
        f.extend(src);
        f.extend(dst);
        let c = !fold(sum16(&f[14..34]));
        f[24..26].copy_from_slice(&c.to_be_bytes());
        let pseudo = match proto {
            PROTO_TCP => pseudo_sum(src, dst, proto, l4.len()),
            _ => 0,
        };
        let c = !fold(pseudo + sum16(&l4));
        l4[off..off + 2].copy_from_slice(&c.to_be_bytes());
    }
    f.extend(l4);
    f
}

/// Where the L4 header of `f` starts (IPv4 without options, IPv6 without extension headers).
fn l4_start(f: &[u8]) -> usize {
    if is_ipv6(f) {
        L4
    } else {
        34
    }
}

/// The RST answering the TCP frame `req` (54 bytes over IPv4, 74 over IPv6).
pub fn rst_for(req: &[u8], seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let l4 = l4_start(req);
    let mut t = [&req[l4 + 2..l4 + 4], &req[l4..l4 + 2]].concat();
    t.extend(seq.to_be_bytes());
    t.extend(ack.to_be_bytes());
    t.extend([5 << 4, flags, 0, 0, 0, 0, 0, 0]); // data offset, flags, window, csum, urgent
    reply_to(req, PROTO_TCP, t)
}

/// The port unreachable answering the UDP (or SCTP) frame `req`, quoting its IP header and
/// the first 8 bytes of its L4 header: ICMP type 3 code 3 (70 bytes), or ICMPv6 type 1 code 4
/// (110 bytes).
pub fn icmp_for(req: &[u8]) -> Vec<u8> {
    let (proto, mut m) = if is_ipv6(req) {
        (IPPROTO_ICMPV6, vec![1, 4, 0, 0, 0, 0, 0, 0])
    } else {
        (IPPROTO_ICMP, vec![3, 3, 0, 0, 0, 0, 0, 0])
    };
    m.extend(&req[IP6..l4_start(req) + 8]);
    reply_to(req, proto, m)
}

/// What an ICMP error quotes of the frame `f`: its IP header (IPv4 with its options, IPv6
/// without extension headers) and `n` bytes after it.
pub fn quote(f: &[u8], n: usize) -> Vec<u8> {
    let hlen = if is_ipv6(f) {
        40
    } else {
        (f[14] & 0x0f) as usize * 4
    };
    f[IP6..IP6 + hlen + n].to_vec()
}

/// Applies `patch` to the bytes of `f` from the IP header on; an IPv4 header checksum is then
/// recomputed over what is present of the header (IPv6 has none).
pub fn patch(mut f: Vec<u8>, patch: impl FnOnce(&mut [u8])) -> Vec<u8> {
    patch(&mut f[IP6..]);
    if !is_ipv6(&f) {
        let hlen = (((f[14] & 0x0f) as usize) * 4).clamp(12, f.len() - 14);
        f[24..26].fill(0);
        let c = !fold(sum16(&f[14..14 + hlen]));
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
    f
}

/// A valid frame whose L4 part is cut to `n` bytes, the IPv4 total length (and header
/// checksum) or the IPv6 payload length adjusted (no options or extension headers).
pub fn cut_l4(f: &[u8], n: usize) -> Vec<u8> {
    let (at, len) = if is_ipv6(f) { (4, n) } else { (2, 20 + n) };
    patch(f[..l4_start(f) + n].to_vec(), |ip| {
        ip[at..at + 2].copy_from_slice(&(len as u16).to_be_bytes())
    })
}
