//! SCTP's checksum is a CRC32c over the whole SCTP packet (no pseudo-header), so address
//! changes leave it alone but a port change needs it recomputed. Done with a byte table over
//! up to `MAX_SCTP_LEN` bytes; a longer packet is not rewritten (the caller drops it). Only
//! SCTP packets pay for it.
use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;

use crate::{ctx::Ctx, packet::Packet};

/// Longest SCTP packet whose CRC is recomputed (a 1500-byte MTU gives at most 1480).
const MAX_SCTP_LEN: usize = 2048;
/// Offset of the checksum in the SCTP common header.
const CSUM_OFF: usize = 8;

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78), one entry per byte value.
static CRC32C_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// State shared with the `bpf_loop` callbacks.
struct Crc<'a, C> {
    ctx: &'a C,
    /// Where the SCTP header starts, and where the callback's reading starts.
    base: usize,
    l4_off: usize,
    crc: u32,
    failed: bool,
}

/// Recomputes and stores the CRC32c of the SCTP packet in `pkt`: 8-byte words, then the tail
/// a byte at a time, each from a small `bpf_loop` callback that the verifier checks once.
#[inline(always)]
pub fn fix_crc<C: Ctx>(ctx: &C, pkt: &Packet) -> Result<(), i64> {
    let len = pkt.l4_len;
    if len > MAX_SCTP_LEN {
        return Err(-1);
    }
    let mut st = Crc {
        ctx,
        base: pkt.l4_off,
        l4_off: pkt.l4_off,
        crc: !0,
        failed: false,
    };
    let words = (len / 8) as u32;
    let data = (&mut st as *mut Crc<C>).cast();
    let rc = unsafe { bpf_loop(words, crc_word::<C> as *const () as *mut _, data, 0) };
    if rc < 0 || st.failed {
        return Err(-1);
    }
    st.l4_off += len & !7;
    let rc = unsafe {
        bpf_loop(
            (len % 8) as u32,
            crc_byte::<C> as *const () as *mut _,
            data,
            0,
        )
    };
    if rc < 0 || st.failed {
        return Err(-1);
    }
    // SCTP carries the CRC in little-endian byte order.
    ctx.write(pkt.l4_off + CSUM_OFF, (!st.crc).to_le_bytes())
}

#[inline(always)]
fn crc_step(crc: u32, b: u8) -> u32 {
    // The index is masked to the table size.
    unsafe { *CRC32C_TABLE.get_unchecked(((crc ^ b as u32) & 0xff) as usize) ^ (crc >> 8) }
}

extern "C" fn crc_word<C: Ctx>(index: u64, data: *mut c_void) -> i64 {
    let st = unsafe { &mut *(data as *mut Crc<C>) };
    let off = (index as usize & 0x3ff) * 8;
    let mut w = [0u8; 8];
    if st.ctx.load(st.l4_off + off, &mut w).is_err() {
        st.failed = true;
        return 1;
    }
    if off == CSUM_OFF {
        // The checksum field itself counts as zero.
        w[0..4].copy_from_slice(&[0; 4]);
    }
    let mut crc = st.crc;
    for b in w {
        crc = crc_step(crc, b);
    }
    st.crc = crc;
    0
}

extern "C" fn crc_byte<C: Ctx>(index: u64, data: *mut c_void) -> i64 {
    let st = unsafe { &mut *(data as *mut Crc<C>) };
    let off = st.l4_off + (index as usize & 7);
    let mut b = [0u8; 1];
    if st.ctx.load(off, &mut b).is_err() {
        st.failed = true;
        return 1;
    }
    // In a packet shorter than 16 bytes the checksum field lies in this tail: it counts as zero.
    let rel = off - st.base;
    if (CSUM_OFF..CSUM_OFF + 4).contains(&rel) {
        b[0] = 0;
    }
    st.crc = crc_step(st.crc, b[0]);
    0
}
