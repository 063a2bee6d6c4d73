//! Test frames for BPF_PROG_TEST_RUN, for the packet tests and the bench: the one frame builder
//! ([`Pkt`]: Ethernet + IPv4 with options or IPv6 with extension headers, + TCP, UDP, SCTP or
//! ICMP/ICMPv6, with every checksum filled in), the replies the programs must send ([`rst_for`],
//! [`icmp_for`]), SCTP chunks ([`init_chunk`], [`data_chunk`]), and the independent checksum arithmetic ([`sum16`], [`csum6`], [`crc32c`]) and
//! verifiers ([`checksums`], [`checksums6`], [`verify_sctp`]).
//!
//! Nothing here calls into the eBPF code's logic: every checksum is computed from scratch, the
//! IPv6 pseudo-header spelled out as RFC 8200 section 8.1 has it, CRC32c bit by bit.
//!
//! Addresses are `([u8; 4], u16)` ([`Addr`]) or `([u8; 16], u16)` ([`Addr6`]) pairs; the
//! constructors ([`tcp`], [`udp`], [`sctp`], [`icmp`]) take either, and the family of the
//! addresses is the family of the frame.
mod build;
mod checksum;
mod chunks;
mod reply;
mod verify;

pub use build::*;
pub use checksum::*;
pub use chunks::*;
pub use reply::*;
pub use verify::*;

/// An IPv4 address and a port.
pub type Addr = ([u8; 4], u16);
/// An IPv6 address and a port.
pub type Addr6 = ([u8; 16], u16);

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 extension header types.
pub const NH_HOP_BY_HOP: u8 = 0;
pub const NH_ROUTING: u8 = 43;
pub const NH_FRAGMENT: u8 = 44;
pub const NH_DEST_OPTS: u8 = 60;
pub const NH_NONE: u8 = 59;

/// TCP flags.
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

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
