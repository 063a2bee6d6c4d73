//! The capabilities the agent needs, checked at start against the effective set
//! (`CapEff` in /proc/self/status), so that a container started without one of them stops at
//! once with an error naming each missing capability and what it is for, instead of failing
//! later in a verifier log or an attach.
//!
//! The set was proven with podman on the test bed (the agent run with each candidate dropped;
//! see deploy/image/README.md): CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON. CAP_SYS_RESOURCE
//! (memlock: the kernel charges BPF memory to the cgroup since 5.11), CAP_SYS_ADMIN and
//! CAP_NET_RAW are not needed. CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, as in the
//! kernel (`bpf_capable`, `perfmon_capable`), so a privileged container passes.
use anyhow::{bail, Context, Result};

/// One capability the agent needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// The name, as `capabilities(7)` spells it.
    pub name: &'static str,
    /// The bit in the capability sets.
    pub bit: u32,
    /// What the agent needs it for.
    pub purpose: &'static str,
    /// Held as well when CAP_SYS_ADMIN is (the kernel's fallback for the BPF capabilities).
    pub sys_admin_covers: bool,
}

const CAP_SYS_ADMIN: u32 = 21;

/// What the agent needs, in the order errors name them.
pub const NEEDED: &[Need] = &[
    Need {
        name: "CAP_BPF",
        bit: 39,
        purpose: "needed to load eBPF programs and create maps",
        sys_admin_covers: true,
    },
    Need {
        name: "CAP_NET_ADMIN",
        bit: 12,
        purpose: "needed to load networking (TC, XDP) programs and attach them to interfaces",
        sys_admin_covers: false,
    },
    Need {
        name: "CAP_PERFMON",
        bit: 38,
        purpose: "needed for the verifier to accept the programs' pointer arithmetic \
                  (without it: \"pointer arithmetic with it prohibited for !root\")",
        sys_admin_covers: true,
    },
];

/// The needs that the effective set `eff` lacks.
pub fn missing(eff: u64) -> Vec<Need> {
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    NEEDED
        .iter()
        .filter(|n| !(has(n.bit) || (n.sys_admin_covers && has(CAP_SYS_ADMIN))))
        .copied()
        .collect()
}

/// The effective set from the text of /proc/PID/status.
pub fn effective(status: &str) -> Result<u64> {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff line in /proc/self/status")?;
    u64::from_str_radix(line.trim(), 16)
        .with_context(|| format!("CapEff {:?} in /proc/self/status is not hex", line.trim()))
}

/// Fails with every missing capability named, given the text of /proc/self/status.
pub fn check(status: &str) -> Result<()> {
    let eff = effective(status)?;
    let lacks = missing(eff);
    if lacks.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = lacks
        .iter()
        .map(|n| format!("missing {}: {}", n.name, n.purpose))
        .collect();
    bail!(
        "the agent lacks capabilities (effective set {eff:#x}): {}. Add {} to the container's \
         securityContext.capabilities.add (or run it privileged)",
        list.join("; "),
        lacks
            .iter()
            .map(|n| n.name.trim_start_matches("CAP_"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// [`check`] on this process.
pub fn require() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")
        .context("reading /proc/self/status for the capability check")?;
    check(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(eff: u64) -> String {
        format!("Name:\tpodlb\nCapInh:\t0000000000000000\nCapEff:\t{eff:016x}\nCapBnd:\t000001ffffffffff\n")
    }

    const ALL: u64 = (1 << 39) | (1 << 12) | (1 << 38);

    #[test]
    fn the_three_pass() {
        check(&status(ALL)).unwrap();
        // root's full set, a privileged container's.
        check(&status(0x1ff_ffff_ffff)).unwrap();
    }

    #[test]
    fn each_missing_one_is_named_with_its_purpose() {
        for n in NEEDED {
            let err = check(&status(ALL & !(1u64 << n.bit)))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("missing {}: {}", n.name, n.purpose)),
                "{err}"
            );
            let others = NEEDED.iter().filter(|o| o.name != n.name);
            for o in others {
                assert!(!err.contains(&format!("missing {}", o.name)), "{err}");
            }
        }
    }

    #[test]
    fn none_names_all_and_the_fix() {
        let err = check(&status(0)).unwrap_err().to_string();
        assert_eq!(
            err,
            "the agent lacks capabilities (effective set 0x0): missing CAP_BPF: needed to load \
             eBPF programs and create maps; missing CAP_NET_ADMIN: needed to load networking \
             (TC, XDP) programs and attach them to interfaces; missing CAP_PERFMON: needed for \
             the verifier to accept the programs' pointer arithmetic (without it: \"pointer \
             arithmetic with it prohibited for !root\"). Add BPF, NET_ADMIN, PERFMON to the \
             container's securityContext.capabilities.add (or run it privileged)"
        );
    }

    #[test]
    fn sys_admin_covers_bpf_and_perfmon_not_net_admin() {
        let sys_admin = 1u64 << CAP_SYS_ADMIN;
        check(&status(sys_admin | (1 << 12))).unwrap();
        let lacks: Vec<&str> = missing(sys_admin).iter().map(|n| n.name).collect();
        assert_eq!(lacks, ["CAP_NET_ADMIN"]);
    }

    #[test]
    fn a_status_without_capeff_or_with_garbage_is_an_error() {
        assert!(effective("Name:\tx\n")
            .unwrap_err()
            .to_string()
            .contains("no CapEff line"));
        assert!(effective("CapEff:\tzz\n")
            .unwrap_err()
            .to_string()
            .contains("not hex"));
    }
}
