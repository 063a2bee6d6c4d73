//! Batched reads of whole maps (`BPF_MAP_LOOKUP_BATCH`), for the resync's read-back and the
//! per-Service counters of /metrics.
use std::os::fd::{AsFd, AsRawFd};

use anyhow::{anyhow, Result};
use aya::maps::MapData;

/// `union bpf_attr` as the `BPF_MAP_*_BATCH` commands read it.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Every entry of a hash or array map (not per-CPU), read with `BPF_MAP_LOOKUP_BATCH`, a few
/// thousand entries per system call instead of one or two calls per entry: the resync reads
/// 300,000 entries at 10,000 Services. A hash map that changes meanwhile may yield a key
/// twice or miss one (the caller dedups; the resync re-checks what the loop wrote).
pub(super) fn dump<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    mut each: impl FnMut(K, V),
) -> Result<()> {
    dump_values(map, 1, |k, v: &[V]| each(k, v[0]))
}

/// [`dump`] for any map: `each` gets a key and its `per_cpu` values (1 for maps that are not
/// per-CPU; the number of possible CPUs for per-CPU ones, whose values must be a multiple of 8
/// bytes long, as the kernel lays them out).
pub(super) fn dump_values<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    per_cpu: usize,
    mut each: impl FnMut(K, &[V]),
) -> Result<()> {
    const CHUNK: usize = 4096;
    assert!(per_cpu == 1 || size_of::<V>().is_multiple_of(8));
    let fd = map.fd().as_fd().as_raw_fd();
    // SAFETY: Pod types are plain data, valid when all zero.
    let (mut keys, mut values): (Vec<K>, Vec<V>) = unsafe {
        (
            vec![std::mem::zeroed(); CHUNK],
            vec![std::mem::zeroed(); CHUNK * per_cpu],
        )
    };
    // The batch position: a key (arrays) or a bucket index (hashes); room for either.
    let (mut at, mut next) = ([0u8; 256], [0u8; 256]);
    for first in std::iter::once(true).chain(std::iter::repeat(false)) {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { at.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: fd as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: the attribute points at buffers of CHUNK keys and CHUNK × per_cpu values and
        // at two position buffers larger than any key, all alive for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (r < 0).then(std::io::Error::last_os_error);
        let n = (attr.count as usize).min(CHUNK);
        for (k, v) in keys[..n].iter().zip(values.chunks(per_cpu)) {
            each(*k, v);
        }
        match err {
            None => at = next,
            // The end of the map.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Some(e) => return Err(anyhow!(e).context("BPF_MAP_LOOKUP_BATCH")),
        }
    }
    Ok(())
}
