//! The packet context the shared steps work on: TC (`TcContext`) today. Rewrites go through
//! this trait so each hook can fix checksums its own way (TC uses the kernel's checksum helpers,
//! which also handle CHECKSUM_PARTIAL packets from local pods).
use aya_ebpf::programs::TcContext;
use lb_common::PROTO_UDP;

use crate::parse::{Packet, IP_CSUM_OFF};

const BPF_F_PSEUDO_HDR: u64 = 0x10;
const BPF_F_MARK_MANGLED_0: u64 = 0x20;

pub trait Ctx {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    fn len(&self) -> u32;
    /// Replaces the IPv4 address at `off` (`old` -> `new`), fixing the IPv4 and L4 checksums.
    fn set_addr(&self, pkt: &Packet, off: usize, old: [u8; 4], new: [u8; 4]) -> Result<(), i64>;
    /// Replaces the L4 port at `off` (host order values), fixing the L4 checksum.
    fn set_port(&self, pkt: &Packet, off: usize, old: u16, new: u16) -> Result<(), i64>;
}

/// UDP may carry a zero ("none") checksum, which must stay zero.
fn l4_flags(pkt: &Packet) -> u64 {
    if pkt.proto == PROTO_UDP {
        BPF_F_MARK_MANGLED_0
    } else {
        0
    }
}

impl Ctx for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    fn len(&self) -> u32 {
        TcContext::len(self)
    }
    #[inline(always)]
    fn set_addr(&self, pkt: &Packet, off: usize, old: [u8; 4], new: [u8; 4]) -> Result<(), i64> {
        let (from, to) = (u32::from_ne_bytes(old) as u64, u32::from_ne_bytes(new) as u64);
        self.l4_csum_replace(pkt.csum_off(), from, to, l4_flags(pkt) | BPF_F_PSEUDO_HDR | 4)?;
        self.l3_csum_replace(IP_CSUM_OFF, from, to, 4)?;
        self.store(off, &new, 0)
    }
    #[inline(always)]
    fn set_port(&self, pkt: &Packet, off: usize, old: u16, new: u16) -> Result<(), i64> {
        let (from, to) = (old.to_be(), new.to_be());
        self.l4_csum_replace(pkt.csum_off(), from as u64, to as u64, l4_flags(pkt) | 2)?;
        self.store(off, &to, 0)
    }
}
