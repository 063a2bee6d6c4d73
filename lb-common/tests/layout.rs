//! The pinned map layout, written down: the size and alignment of every map key and value type
//! in `lb-common`, and the offset and size of each of its fields, for `PIN_LAYOUT_VERSION`.
//!
//! Maps outlive the agent (they are pinned), so a key or value that changes shape makes the old
//! pins unreadable: the agent refuses pins of another layout version, and that only works if
//! every layout change comes with a new `PIN_LAYOUT_VERSION`. These tests make sure it does:
//! - `table()` must describe the types as they are;
//! - `TABLE_VERSION` must be `PIN_LAYOUT_VERSION`;
//! - the fingerprint of the layout must be the one `HISTORY` records for that version, and a
//!   recorded fingerprint never changes: a new layout needs a new version.
use core::mem::{align_of, offset_of, size_of};

use lb_common::*;

/// The layout version `table()` describes.
const TABLE_VERSION: u32 = 5;

/// Every layout version since this test exists, with the fingerprint of its table. Append a
/// line for a new version (the failing test prints its fingerprint); never change a line.
const HISTORY: &[(u32, u64)] = &[(4, 0x7419_b30b_f916_1cae), (5, 0xb2b3_647e_cd62_5d6e)];

/// One line per type: `Type = size / align { field @ offset + size, ... }`, fields in
/// declaration order. Keep the order of the lines: the fingerprint follows it.
fn table() -> Vec<TypeLayout> {
    layouts! {
        FrontendKey = 20 / 4 { addr @ 0 + 16, port @ 16 + 2, proto @ 18 + 1, family @ 19 + 1 }
        Frontend = 16 / 4 { svc_id @ 0 + 4, count @ 4 + 4, flags @ 8 + 2, kind @ 10 + 2, pad @ 12 + 4 }
        VipKey = 20 / 4 { addr @ 0 + 16, family @ 16 + 1, pad @ 17 + 3 }
        Vip = 4 / 4 { flags @ 0 + 4 }
        Config = 64 / 4 { snat_addr @ 0 + 4, snat_port_min @ 4 + 2, snat_port_max @ 6 + 2, snat_addr6 @ 8 + 16, cluster_net @ 24 + 4, cluster_mask @ 28 + 4, cluster_net6 @ 32 + 16, cluster_mask6 @ 48 + 16 }
        SlotKey = 8 / 4 { svc_id @ 0 + 4, slot @ 4 + 4 }
        Slot = 4 / 4 { backend_id @ 0 + 4 }
        Backend = 20 / 4 { addr @ 0 + 16, port @ 16 + 2, proto @ 18 + 1, family @ 19 + 1 }
        CtKey = 40 / 4 { saddr @ 0 + 16, daddr @ 16 + 16, sport @ 32 + 2, dport @ 34 + 2, proto @ 36 + 1, family @ 37 + 1, pad @ 38 + 2 }
        CtEntry = 48 / 4 { nat_addr @ 0 + 16, snat_addr @ 16 + 16, nat_port @ 32 + 2, snat_port @ 34 + 2, flags @ 36 + 4, svc_id @ 40 + 4, backend_id @ 44 + 4 }
        SvcStats = 16 / 8 { packets @ 0 + 8, bytes @ 8 + 8 }
        SvcMeta = 128 / 4 { name_len @ 0 + 4, pad @ 4 + 4, name @ 8 + 120 }
    }
}

/// A type's layout: size, alignment, and `(field, offset, size)` in declaration order.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    size: usize,
    align: usize,
    fields: Vec<(&'static str, usize, usize)>,
}

/// A type's layout as the table says and as the compiler made it.
struct TypeLayout {
    name: &'static str,
    expected: Shape,
    actual: Shape,
}

/// The size of the field `get` returns.
fn field_size<T, F>(_get: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// Builds the table's `TypeLayout`s: the expected shape from the line, the actual one from the
/// type.
macro_rules! layouts {
    ($($t:ident = $size:literal / $align:literal { $($f:ident @ $off:literal + $len:literal),* })*) => {
        vec![$(TypeLayout {
            name: stringify!($t),
            expected: Shape {
                size: $size,
                align: $align,
                fields: vec![$((stringify!($f), $off, $len)),*],
            },
            actual: Shape {
                size: size_of::<$t>(),
                align: align_of::<$t>(),
                fields: vec![$((stringify!($f), offset_of!($t, $f), field_size(|v: &$t| &v.$f))),*],
            },
        }),*]
    };
}
use layouts;

const BUMP: &str = "a pinned map of the old layout cannot be read with the new one: bump \
     lb_common::PIN_LAYOUT_VERSION, update table() and TABLE_VERSION in lb-common/tests/layout.rs, \
     and append the new version with its fingerprint to HISTORY";

/// FNV-1a (64 bits) over the table's numbers (sizes, alignments, offsets, field sizes) in
/// order: names can change without a new version, shapes cannot.
fn fingerprint(table: &[TypeLayout]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut add = |n: usize| {
        for b in (n as u64).to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for t in table {
        add(t.expected.size);
        add(t.expected.align);
        add(t.expected.fields.len());
        for &(_, off, len) in &t.expected.fields {
            add(off);
            add(len);
        }
    }
    h
}

#[test]
fn table_matches_the_types() {
    for t in table() {
        assert_eq!(
            t.actual, t.expected,
            "the layout of {} changed (left: as compiled, right: table()); {BUMP}",
            t.name
        );
    }
}

#[test]
fn table_lists_every_byte() {
    // Every key and value has explicit padding, so its fields fill it: a field missing from
    // the table, or implicit padding, shows here.
    for t in table() {
        let bytes: usize = t.actual.fields.iter().map(|f| f.2).sum();
        assert_eq!(
            bytes, t.actual.size,
            "{}: the fields in table() do not cover the type (a field missing, or implicit padding)",
            t.name
        );
    }
}

#[test]
fn table_describes_the_current_version() {
    assert_eq!(
        PIN_LAYOUT_VERSION, TABLE_VERSION,
        "PIN_LAYOUT_VERSION is {PIN_LAYOUT_VERSION} but table() describes version {TABLE_VERSION}: \
         update table(), TABLE_VERSION and HISTORY in lb-common/tests/layout.rs"
    );
}

#[test]
fn layout_of_a_version_never_changes() {
    let versions: Vec<u32> = HISTORY.iter().map(|h| h.0).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "HISTORY must list each version once, in increasing order: {versions:?}"
    );
    let found = fingerprint(&table());
    match HISTORY.iter().find(|h| h.0 == TABLE_VERSION) {
        Some(&(_, recorded)) => assert_eq!(
            found, recorded,
            "the layout of version {TABLE_VERSION} is recorded with fingerprint {recorded:#018x}, \
             table() now gives {found:#018x}: {BUMP}"
        ),
        None => panic!(
            "HISTORY has no entry for version {TABLE_VERSION}: append ({TABLE_VERSION}, \
             {found:#018x})"
        ),
    }
    assert_eq!(
        HISTORY.last().map(|h| h.0),
        Some(TABLE_VERSION),
        "the last HISTORY entry must be the current version"
    );
}
