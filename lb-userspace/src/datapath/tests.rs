//! The datapath module's unit tests: link pin names, the layout version record and `reset`,
//! address formats.
use std::{fs, net::Ipv6Addr, path::PathBuf};

use lb_common::{addr4, FAMILY_V4, FAMILY_V6, LAYOUT_VERSION_FILE, PIN_LAYOUT_VERSION};

use super::fmt_addr;
use super::interfaces::usable_interface_address;
use super::pins::{
    check_layout, existing_pins, layout_version, link_pin_name, parse_link_pin, reset,
    write_layout_version, Hook,
};

#[test]
fn link_pin_names_round_trip() {
    for hook in Hook::ALL {
        let name = link_pin_name(hook, "lxc-a@b", 7);
        assert_eq!(parse_link_pin(&name), Some((hook, "lxc-a@b", 7)), "{name}");
    }
    assert_eq!(parse_link_pin("tc:eth0"), None);
    assert_eq!(parse_link_pin("bogus:eth0@1"), None);
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("podlb-dp-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn touch(&self, name: &str) {
        fs::write(self.0.join(name), "").unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn layout_version_is_recorded_checked_and_reset() {
    let d = TempDir::new("layout");
    let root = d.0.as_path();
    // Nothing pinned: nothing to refuse.
    assert_eq!(layout_version(root), None);
    check_layout(root).unwrap();
    // Pins from before versions were recorded (old map names) are refused.
    d.touch("lb4_frontends");
    d.touch("lb_config");
    let e = check_layout(root).unwrap_err().to_string();
    assert!(e.contains("no pin layout version recorded"), "{e}");
    assert!(
        e.contains(&format!("podlb reset --bpf-root {}", root.display())),
        "{e}"
    );
    assert!(
        e.contains(&format!("uses pin layout version {PIN_LAYOUT_VERSION}")),
        "{e}"
    );
    // Another version is refused and named.
    std::os::unix::fs::symlink("2", root.join(LAYOUT_VERSION_FILE)).unwrap();
    assert_eq!(layout_version(root).as_deref(), Some("2"));
    let e = check_layout(root).unwrap_err().to_string();
    assert!(e.contains(r#"pin layout version "2""#), "{e}");
    // The current version is accepted.
    write_layout_version(root).unwrap();
    assert_eq!(layout_version(root), Some(PIN_LAYOUT_VERSION.to_string()));
    check_layout(root).unwrap();
    // reset removes the pins of every layout and the record.
    fs::create_dir(root.join("links")).unwrap();
    d.touch("links/tc:eth0@2");
    d.touch("maps.debug");
    assert_eq!(reset(root).unwrap(), 3);
    assert_eq!(layout_version(root), None);
    assert!(existing_pins(root).is_empty());
    assert!(!root.join("links").exists());
    assert!(root.join("maps.debug").exists(), "not podlb's");
    // A record in a regular file (a root not on a bpffs) reads the same.
    fs::write(root.join(LAYOUT_VERSION_FILE), "3\n").unwrap();
    assert_eq!(layout_version(root).as_deref(), Some("3"));
}

#[test]
fn address_formats() {
    let v6: Ipv6Addr = "fd00::10".parse().unwrap();
    assert_eq!(fmt_addr(&v6.octets(), FAMILY_V6, 80), "[fd00::10]:80");
    assert_eq!(
        fmt_addr(&addr4([10, 96, 0, 1]), FAMILY_V4, 53),
        "10.96.0.1:53"
    );
    assert_eq!(crate::types::Family::name_of(FAMILY_V6), "IPv6");
    assert!(usable_interface_address(&"2001:db8::1".parse().unwrap()));
    assert!(!usable_interface_address(&"fe80::1".parse().unwrap()));
    assert!(!usable_interface_address(&"::1".parse().unwrap()));
    assert!(!usable_interface_address(&"127.0.0.1".parse().unwrap()));
}
