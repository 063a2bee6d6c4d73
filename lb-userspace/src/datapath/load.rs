//! Loading the programs and maps, or adopting them when they are already pinned.
use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    programs::{Program, SchedClassifier, Xdp},
    EbpfLoader,
};
use aya_obj::programs::XdpAttachType;
use lb_common::{ALL_MAPS, PIN_LAYOUT_VERSION, PROG_TC_EGRESS, PROG_TC_POD, PROG_XDP_EXT};

use super::pins::{check_layout, ensure_bpffs, layout_version, write_layout_version};
use super::{Datapath, EBPF_OBJECT};

impl Datapath {
    /// Loads the programs and maps, or adopts them when they are already pinned under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        if EBPF_OBJECT.is_empty() {
            bail!("this podlb binary was built without its eBPF object; build it with `cargo xtask build`");
        }
        ensure_bpffs(root)?;
        // Recorded before any map is created, so that a crash cannot leave unrecorded pins.
        check_layout(root)?;
        if layout_version(root) != Some(PIN_LAYOUT_VERSION.to_string()) {
            write_layout_version(root)?;
        }
        fs::create_dir_all(root.join("links"))?;
        let (tc_pin, xdp_pin) = (root.join(PROG_TC_POD), root.join(PROG_XDP_EXT));
        let egress_pin = root.join(PROG_TC_EGRESS);
        let adopted = tc_pin.exists() && xdp_pin.exists() && egress_pin.exists();
        // Maps: opened from their pins when present, otherwise created and pinned.
        let mut loader = EbpfLoader::new();
        let pins: Vec<(&str, PathBuf)> = ALL_MAPS.iter().map(|m| (*m, root.join(m))).collect();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the eBPF object")?;
        if !adopted {
            for (name, pin) in [
                (PROG_TC_POD, &tc_pin),
                (PROG_TC_EGRESS, &egress_pin),
                (PROG_XDP_EXT, &xdp_pin),
            ] {
                let _ = fs::remove_file(pin);
                let prog = ebpf
                    .program_mut(name)
                    .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
                match prog {
                    Program::SchedClassifier(p) => p.load(),
                    Program::Xdp(p) => p.load(),
                    _ => bail!("program {name} has an unexpected type"),
                }
                .with_context(|| format!("loading {name} (verifier)"))?;
                prog.pin(pin).with_context(|| format!("pinning {name}"))?;
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            tc: SchedClassifier::from_pin(&tc_pin).context("opening the pinned TC program")?,
            tc_egress: SchedClassifier::from_pin(&egress_pin)
                .context("opening the pinned TC egress program")?,
            xdp: Xdp::from_pin(&xdp_pin, XdpAttachType::Interface)
                .context("opening the pinned XDP program")?,
            adopted,
        })
    }
}
