//! The packet contexts the shared steps work on: TC (`TcContext`) and XDP (`XdpContext`).
//! Rewrites go through this trait so each hook fixes checksums its own way: TC uses the kernel's
//! checksum helpers (which also handle CHECKSUM_PARTIAL packets from local pods); XDP writes the
//! packet directly and updates the checksums incrementally (RFC 1624).
use aya_ebpf::{
    helpers::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use lb_common::{Addr, PROTO_UDP};

use crate::{addr::v4, consts::IP_CSUM_OFF, csum, packet::Packet};

const BPF_F_PSEUDO_HDR: u64 = 0x10;
const BPF_F_MARK_MANGLED_0: u64 = 0x20;

pub trait Ctx {
    /// Where the packet data starts and ends (the linear part, for TC).
    fn bounds(&self) -> (usize, usize);
    #[inline(always)]
    fn data(&self) -> usize {
        self.bounds().0
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        self.bounds().1
    }
    /// The packet's length (all of it, for TC).
    #[inline(always)]
    fn len(&self) -> u32 {
        let (data, end) = self.bounds();
        (end - data) as u32
    }
    /// Replaces the address at `off` (`old` -> `new`; four bytes of them for IPv4), fixing the
    /// IPv4 checksum and the L4 checksum's pseudo-header.
    fn set_addr(&self, pkt: &Packet, off: usize, old: &Addr, new: &Addr) -> Result<(), i64>;
    /// Replaces the L4 port at `off` (host order values), fixing the L4 checksum.
    fn set_port(&self, pkt: &Packet, off: usize, old: u16, new: u16) -> Result<(), i64>;
    /// Copies `N` bytes at `off` into `buf`, wherever they lie in the packet.
    fn load<const N: usize>(&self, off: usize, buf: &mut [u8; N]) -> Result<(), i64>;
    /// Writes `N` bytes at `off`, no checksum update.
    fn write<const N: usize>(&self, off: usize, v: [u8; N]) -> Result<(), i64>;
    /// Updates the Internet checksum at `off` (no pseudo-header) for `N` (2 or 4) bytes
    /// changing from `old` to `new`.
    fn fix_csum<const N: usize>(&self, off: usize, old: [u8; N], new: [u8; N]) -> Result<(), i64>;
}

/// Word `i` (0..4) of an address as the value the checksum helpers take.
#[inline(always)]
fn word(a: &Addr, i: usize) -> u64 {
    u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]) as u64
}

/// `N` (2 or 4) bytes as the value the checksum helpers take (the bytes in memory order).
#[inline(always)]
fn raw<const N: usize>(b: [u8; N]) -> u64 {
    let mut w = [0u8; 4];
    w[..N.min(4)].copy_from_slice(&b[..N.min(4)]);
    if N == 2 {
        u16::from_ne_bytes([w[0], w[1]]) as u64
    } else {
        u32::from_ne_bytes(w) as u64
    }
}

/// A helper's return code as a result: 0 is success.
#[inline(always)]
fn helper_result(rc: i64) -> Result<(), i64> {
    if rc == 0 {
        Ok(())
    } else {
        Err(rc)
    }
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
    fn bounds(&self) -> (usize, usize) {
        (TcContext::data(self), TcContext::data_end(self))
    }
    #[inline(always)]
    fn len(&self) -> u32 {
        TcContext::len(self)
    }
    #[inline(always)]
    fn set_addr(&self, pkt: &Packet, off: usize, old: &Addr, new: &Addr) -> Result<(), i64> {
        let words = if pkt.v6 { 4 } else { 1 };
        for i in 0..4 {
            if i >= words {
                break;
            }
            let (from, to) = (word(old, i), word(new, i));
            if from == to {
                continue;
            }
            if pkt.inet_csum() {
                self.l4_csum_replace(
                    pkt.csum_off(),
                    from,
                    to,
                    l4_flags(pkt) | BPF_F_PSEUDO_HDR | 4,
                )?;
            }
            if !pkt.v6 {
                self.l3_csum_replace(IP_CSUM_OFF, from, to, 4)?;
            }
        }
        if pkt.v6 {
            self.store(off, new, 0)
        } else {
            self.store(off, &v4(new), 0)
        }
    }
    #[inline(always)]
    fn set_port(&self, pkt: &Packet, off: usize, old: u16, new: u16) -> Result<(), i64> {
        let (from, to) = (old.to_be(), new.to_be());
        if pkt.inet_csum() {
            self.l4_csum_replace(pkt.csum_off(), from as u64, to as u64, l4_flags(pkt) | 2)?;
        }
        self.store(off, &to, 0)
    }
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize, buf: &mut [u8; N]) -> Result<(), i64> {
        let (skb, to) = (self.skb.skb.cast(), buf.as_mut_ptr().cast());
        helper_result(unsafe { bpf_skb_load_bytes(skb, off as u32, to, N as u32) })
    }
    #[inline(always)]
    fn write<const N: usize>(&self, off: usize, v: [u8; N]) -> Result<(), i64> {
        self.store(off, &v, 0)
    }
    #[inline(always)]
    fn fix_csum<const N: usize>(&self, off: usize, old: [u8; N], new: [u8; N]) -> Result<(), i64> {
        self.l3_csum_replace(off, raw(old), raw(new), N as u64)
    }
}

impl Ctx for XdpContext {
    #[inline(always)]
    fn bounds(&self) -> (usize, usize) {
        (XdpContext::data(self), XdpContext::data_end(self))
    }
    #[inline(always)]
    fn set_addr(&self, pkt: &Packet, off: usize, old: &Addr, new: &Addr) -> Result<(), i64> {
        if pkt.v6 {
            if pkt.inet_csum() {
                update_csum(self, pkt.csum_off(), old, new, pkt.proto == PROTO_UDP)?;
            }
            *slot::<Addr>(self, off)? = *new;
            return Ok(());
        }
        let (old, new) = (v4(old), v4(new));
        update_csum(self, IP_CSUM_OFF, &old, &new, false)?;
        if pkt.inet_csum() {
            update_csum(self, pkt.csum_off(), &old, &new, pkt.proto == PROTO_UDP)?;
        }
        *slot::<[u8; 4]>(self, off)? = new;
        Ok(())
    }
    #[inline(always)]
    fn set_port(&self, pkt: &Packet, off: usize, old: u16, new: u16) -> Result<(), i64> {
        let (old, new) = (old.to_be_bytes(), new.to_be_bytes());
        if pkt.inet_csum() {
            update_csum(self, pkt.csum_off(), &old, &new, pkt.proto == PROTO_UDP)?;
        }
        *slot::<[u8; 2]>(self, off)? = new;
        Ok(())
    }
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize, buf: &mut [u8; N]) -> Result<(), i64> {
        let to = buf.as_mut_ptr().cast();
        helper_result(unsafe { bpf_xdp_load_bytes(self.ctx, off as u32, to, N as u32) })
    }
    #[inline(always)]
    fn write<const N: usize>(&self, off: usize, v: [u8; N]) -> Result<(), i64> {
        *slot::<[u8; N]>(self, off)? = v;
        Ok(())
    }
    #[inline(always)]
    fn fix_csum<const N: usize>(&self, off: usize, old: [u8; N], new: [u8; N]) -> Result<(), i64> {
        update_csum(self, off, &old, &new, false)
    }
}

/// Returns a pointer to a `T` at `off` if the whole `T` lies inside the packet.
#[inline(always)]
pub fn ptr_at<C: Ctx, T>(ctx: &C, off: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const T)
}

/// A mutable reference to a `T` at `off` in an XDP packet, if it fits. The packet is
/// writable through the (shared) context: that is how XDP rewrites it.
#[inline(always)]
#[allow(clippy::mut_from_ref)]
pub fn slot<T>(ctx: &XdpContext, off: usize) -> Result<&mut T, i64> {
    let start = XdpContext::data(ctx);
    if start + off + size_of::<T>() > XdpContext::data_end(ctx) {
        return Err(-1);
    }
    Ok(unsafe { &mut *((start + off) as *mut T) })
}

/// Updates the checksum at `off` for the bytes `old` becoming `new` (RFC 1624). A zero UDP
/// checksum means "none" and stays zero; a computed zero becomes 0xffff.
#[inline(always)]
fn update_csum<const N: usize>(
    ctx: &XdpContext,
    off: usize,
    old: &[u8; N],
    new: &[u8; N],
    udp: bool,
) -> Result<(), i64> {
    update_csum_at(slot::<[u8; 2]>(ctx, off)?, old, new, udp);
    Ok(())
}

/// `update_csum` on a bounds-checked checksum field, as a BPF-to-BPF call (it runs for every
/// rewritten field). It takes the field's packet pointer, not the context: the compiler would
/// pass packet pointers loaded from the context as scalars, which the verifier refuses.
#[inline(never)]
fn update_csum_at<const N: usize>(c: &mut [u8; 2], old: &[u8; N], new: &[u8; N], udp: bool) {
    if udp && *c == [0, 0] {
        return;
    }
    let out = csum::replace(*c, old, new);
    *c = if udp && out == [0, 0] {
        [0xff, 0xff]
    } else {
        out
    };
}
