//! Addresses (`lb_common::Addr`, 16 bytes; an IPv4 address takes the first four) copied,
//! compared and read from packets as 32-bit words: byte-wise copies of `[u8; 16]` go byte by
//! byte in BPF, and the compiler spills every byte across helper calls.
use lb_common::Addr;

/// Copies an address as four words. Both must be 4-byte aligned, as every `Addr` in a
/// `lb-common` struct (`align(4)`) and in `Packet` is.
#[inline(always)]
pub fn copy_addr(dst: &mut Addr, src: &Addr) {
    unsafe { *(dst as *mut Addr as *mut [u32; 4]) = *(src as *const Addr as *const [u32; 4]) }
}

/// Whether two addresses are equal, compared as four words (no `bcmp` call in BPF). Both must
/// be 4-byte aligned, as for `copy_addr`.
#[inline(always)]
pub fn addr_eq(a: &Addr, b: &Addr) -> bool {
    let (a, b) = (words(a), words(b));
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) == 0
}

/// Whether an (aligned) address is all zeros (unset).
#[inline(always)]
pub fn addr_is_zero(a: &Addr) -> bool {
    let a = words(a);
    a[0] | a[1] | a[2] | a[3] == 0
}

/// An (aligned) address as its four words.
#[inline(always)]
pub fn words(a: &Addr) -> &[u32; 4] {
    unsafe { &*(a as *const Addr as *const [u32; 4]) }
}

/// Whether an (aligned) address lies in the prefix `net`/`mask`, both as words in network
/// order (an IPv4 prefix in the first word, the rest zero; a zero mask matches everything):
/// the address masked word by word equals `net`.
#[inline(always)]
pub fn in_prefix(a: &Addr, net: &[u32; 4], mask: &[u32; 4]) -> bool {
    let a = words(a);
    ((a[0] & mask[0]) ^ net[0])
        | ((a[1] & mask[1]) ^ net[1])
        | ((a[2] & mask[2]) ^ net[2])
        | ((a[3] & mask[3]) ^ net[3])
        == 0
}

/// Sets an (aligned) address: an IPv4 address (first word) or all zeros.
#[inline(always)]
pub fn set_addr4(dst: &mut Addr, v4: [u8; 4]) {
    unsafe { *(dst as *mut Addr as *mut [u32; 4]) = [u32::from_ne_bytes(v4), 0, 0, 0] }
}

/// The first four bytes of an address (an IPv4 address).
#[inline(always)]
pub fn v4(a: &Addr) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

/// Reads the 4-byte word at `off` of a header that has been bounds-checked. Packet data is
/// only 2-byte aligned; BPF (without strict alignment) and the JITs take such loads, and one
/// word load beats four byte loads whose results the compiler spills across helper calls.
#[inline(always)]
fn word_at(base: usize, off: usize) -> u32 {
    unsafe { *((base + off) as *const u32) }
}

/// Copies the address at `off` (4 or 16 bytes, bounds-checked by the caller) into `dst`.
#[inline(always)]
pub fn read_addr(dst: &mut Addr, base: usize, off: usize, v6: bool) {
    let w = unsafe { &mut *(dst as *mut Addr as *mut [u32; 4]) };
    w[0] = word_at(base, off);
    if v6 {
        w[1] = word_at(base, off + 4);
        w[2] = word_at(base, off + 8);
        w[3] = word_at(base, off + 12);
    } else {
        w[1] = 0;
        w[2] = 0;
        w[3] = 0;
    }
}
