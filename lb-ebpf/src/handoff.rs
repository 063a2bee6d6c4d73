//! XDP and TC both run on external interfaces. A packet the XDP program has already handled
//! (NATed, translated, or found not to be service traffic) carries a mark in its XDP metadata,
//! and the TC program lets it through without repeating the lookups. Packets XDP could not
//! finish (a reject whose frame could not be resized) are not marked.
use aya_ebpf::{
    helpers::bpf_xdp_adjust_meta,
    programs::{TcContext, XdpContext},
    EbpfContext,
};

const MARK: u32 = 0x706f_646c; // "podl"

#[inline(always)]
pub fn mark_done(ctx: &XdpContext) {
    if unsafe { bpf_xdp_adjust_meta(ctx.as_ptr().cast(), -4) } != 0 {
        return; // no metadata room: TC repeats the lookups, which is harmless
    }
    let (meta, data) = (ctx.metadata(), ctx.data());
    if meta + 4 <= data {
        unsafe { *(meta as *mut u32) = MARK };
    }
}

#[inline(always)]
pub fn done_by_xdp(ctx: &TcContext) -> bool {
    let skb = ctx.skb.skb;
    let (meta, data) = unsafe { ((*skb).data_meta as usize, (*skb).data as usize) };
    meta + 4 <= data && unsafe { *(meta as *const u32) } == MARK
}
