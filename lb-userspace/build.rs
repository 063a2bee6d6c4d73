//! Embeds the eBPF object built by `cargo xtask build` (TOOLCHAIN.md explains why it is not
//! built here). Without it the crate still builds, so the pure logic can be unit-tested, but the
//! datapath refuses to load with a message saying how to build it.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=PODLB_EBPF_OBJ");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let obj = env::var_os("PODLB_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/ebpf/bpfel-unknown-none/release/lb-ebpf"));
    println!("cargo:rerun-if-changed={}", obj.display());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("podlb.bpf.o");
    match fs::read(&obj) {
        Ok(bytes) => fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo:warning=eBPF object {} not found; run `cargo xtask build`",
                obj.display()
            );
            fs::write(&out, []).unwrap();
        }
    }
}
