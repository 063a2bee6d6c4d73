//! Packet format constants used by more than one step: EtherTypes, header lengths, field
//! offsets of the outer IPv4 and IPv6 headers, IP protocol numbers the datapath does not share
//! with the agent (those, `PROTO_*`, are in `lb-common`), and TCP flags.

/// Ethernet header length (no VLAN tag).
pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;

/// IPv4 header length without options.
pub const IP_HLEN: usize = 20;
/// Offsets in the frame of the IPv4 checksum and addresses.
pub const IP_CSUM_OFF: usize = ETH_HLEN + 10;
pub const IP_SRC_OFF: usize = ETH_HLEN + 12;
pub const IP_DST_OFF: usize = ETH_HLEN + 16;

/// IPv6 header length (extension headers are not parsed).
pub const IP6_HLEN: usize = 40;
/// Offsets in the frame of the IPv6 addresses.
pub const IP6_SRC_OFF: usize = ETH_HLEN + 8;
pub const IP6_DST_OFF: usize = ETH_HLEN + 24;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// L4 header lengths: TCP without options, UDP, the SCTP common header, and an ICMP or ICMPv6
/// header (type, code, checksum and four bytes of rest).
pub const TCP_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
pub const SCTP_HLEN: usize = 12;
pub const ICMP_HLEN: usize = 8;

/// TCP flags (byte 13 of the TCP header).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
