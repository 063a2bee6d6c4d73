//! Internet checksum arithmetic (RFC 1071 sums, RFC 1624 incremental updates), on big-endian
//! 16-bit words given as bytes. Used where the kernel's checksum helpers do not apply: XDP,
//! replies built from scratch, and fields inside a quoted packet.

/// One's-complement sum of 16-bit big-endian words (`bytes` has even length), added to `acc`.
#[inline(always)]
pub fn sum(bytes: &[u8], mut acc: u32) -> u32 {
    let mut i = 0;
    while i + 1 < bytes.len() {
        acc += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    acc
}

/// Folds a sum to 16 bits and complements it: the checksum value.
#[inline(always)]
pub fn fold(mut acc: u32) -> u16 {
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    !(acc as u16)
}

/// The checksum `csum` (as stored) after the bytes `old` became `new` (equal, even lengths):
/// HC' = ~(~HC + ~m + m') (RFC 1624, eq. 3).
#[inline(always)]
pub fn replace(csum: [u8; 2], old: &[u8], new: &[u8]) -> [u8; 2] {
    let mut acc = (!u16::from_be_bytes(csum)) as u32;
    let mut i = 0;
    while i + 1 < old.len() && i + 1 < new.len() {
        acc += (!u16::from_be_bytes([old[i], old[i + 1]])) as u32;
        acc += u16::from_be_bytes([new[i], new[i + 1]]) as u32;
        i += 2;
    }
    fold(acc).to_be_bytes()
}
