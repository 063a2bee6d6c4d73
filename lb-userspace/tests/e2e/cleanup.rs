//! `podlb cleanup-kube-proxy` against real netfilter state, each test in a network namespace of
//! its own.
//!
//! The namespace gets kube-proxy's rules (the bench's generators, `testkit::rules`, for
//! iptables through both backends and for nftables; a small hand-written IPv6 set in the same
//! shape, and an `ip6 kube-proxy` table) on top of rules that are not kube-proxy's: the
//! kubelet's chains (`KUBE-FIREWALL`, `KUBE-KUBELET-CANARY`, `KUBE-IPTABLES-HINT`, and the
//! `KUBE-MARK-DROP` of older kubelets), a user chain, INPUT and POSTROUTING rules, an
//! `inet filter` table and an `inet kube-proxy` table (not a family kube-proxy uses). A second
//! namespace gets only the rules that are not kube-proxy's. After the real `podlb
//! cleanup-kube-proxy` has run in the first, every `iptables-save` (nft and legacy, IPv4 and
//! IPv6) and `nft list ruleset` of the two must be the same. Run with only the init container's
//! capabilities (NET_ADMIN and NET_RAW), it works; without NET_RAW it fails before changing
//! anything.
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};

use testkit::rules::{self, SvcPort};
use testkit::testbed::{require_root, Netns};

/// Five Services of three endpoints each, as kube-proxy would program them.
fn services() -> Vec<SvcPort> {
    (0..5u8)
        .map(|i| SvcPort {
            service: format!("default/svc{i}"),
            port_name: "http".into(),
            vip: Ipv4Addr::new(10, 96, 0, 10 + i),
            port: 80,
            proto: if i % 2 == 0 { "tcp" } else { "udp" },
            endpoints: (0..3u8)
                .map(|e| (Ipv4Addr::new(10, 244, i, 10 + e), 8080))
                .collect(),
        })
        .collect()
}

/// kube-proxy's IPv6 rules, in the shape of its iptables mode (`ip6tables-restore` input).
const KUBE_PROXY_V6: &str = r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-PROXY-CANARY - [0:0]
-A INPUT -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-V6AAAAAAAAAAAAAA - [0:0]
:KUBE-SEP-V6BBBBBBBBBBBBBB - [0:0]
:KUBE-EXT-V6AAAAAAAAAAAAAA - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MASQUERADE --random-fully
-A KUBE-SERVICES -d fd00:96::1/128 -p tcp -m tcp --dport 80 -j KUBE-SVC-V6AAAAAAAAAAAAAA
-A KUBE-EXT-V6AAAAAAAAAAAAAA -j KUBE-MARK-MASQ
-A KUBE-EXT-V6AAAAAAAAAAAAAA -j KUBE-SVC-V6AAAAAAAAAAAAAA
-A KUBE-SVC-V6AAAAAAAAAAAAAA -j KUBE-SEP-V6BBBBBBBBBBBBBB
-A KUBE-SEP-V6BBBBBBBBBBBBBB -p tcp -m tcp -j DNAT --to-destination [fd00:244::5]:8080
COMMIT
*mangle
:KUBE-PROXY-CANARY - [0:0]
COMMIT
"#;

/// kube-proxy's `ip6 kube-proxy` table, in the shape of its nftables mode.
const KUBE_PROXY_NFT6: &str = r#"add table ip6 kube-proxy { comment "rules for kube-proxy" ; }
add chain ip6 kube-proxy services
add chain ip6 kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add map ip6 kube-proxy service-ips { type ipv6_addr . inet_proto . inet_service : verdict ; }
add rule ip6 kube-proxy nat-prerouting jump services
add rule ip6 kube-proxy services ip6 daddr . meta l4proto . th dport vmap @service-ips
"#;

/// Rules that are not kube-proxy's (`iptables-restore --noflush` input for either family;
/// `{net}` is the family's pod network). Every built-in chain kube-proxy's rules use is
/// declared, so that both namespaces have the same ones.
fn others(net: &str) -> String {
    format!(
        r#"*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:USER-CHAIN - [0:0]
-A INPUT -j KUBE-FIREWALL
-A INPUT -p tcp -m tcp --dport 22 -m comment --comment "ssh, an operator's rule" -j ACCEPT
-A FORWARD -j USER-CHAIN
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL -m comment --comment "the kubelet's" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m mark --mark 0x8000/0x8000 -j DROP
-A USER-CHAIN -s {net} -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-MARK-DROP - [0:0]
-A POSTROUTING -s {net} -m comment --comment "a CNI's masquerade" -j MASQUERADE
-A KUBE-MARK-DROP -j MARK --or-mark 0x8000
COMMIT
*mangle
:KUBE-IPTABLES-HINT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
"#
    )
}

/// nftables that are not kube-proxy's.
const OTHERS_NFT: &str = r#"add table inet filter
add chain inet filter input { type filter hook input priority 0 ; policy accept ; }
add rule inet filter input tcp dport 22 accept comment "an operator's rule"
add table inet kube-proxy
add chain inet kube-proxy services
"#;

fn sh(ns: &Netns, args: &[&str], input: Option<&str>) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name()]).args(args);
    let out = run(cmd, input);
    assert!(
        out.status.success(),
        "{args:?} in {} failed ({}): {}",
        ns.name(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(mut cmd: Command, input: Option<&str>) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// A namespace with the rules that are not kube-proxy's, and, with `kube_proxy`, kube-proxy's
/// (loaded first, as on a node where kube-proxy started before the rest).
fn loaded(role: &str, kube_proxy: bool) -> Netns {
    require_root().unwrap();
    let ns = Netns::new(role).unwrap();
    let svcs = services();
    for backend in ["nft", "legacy"] {
        let v4 = format!("iptables-{backend}-restore");
        let v6 = format!("ip6tables-{backend}-restore");
        if kube_proxy {
            sh(&ns, &[&v4], Some(&rules::iptables(&svcs)));
            sh(&ns, &[&v6], Some(KUBE_PROXY_V6));
        }
        sh(&ns, &[&v4, "--noflush"], Some(&others("10.244.0.0/16")));
        sh(&ns, &[&v6, "--noflush"], Some(&others("fd00:244::/64")));
    }
    sh(&ns, &["nft", "-f", "-"], Some(OTHERS_NFT));
    if kube_proxy {
        sh(&ns, &["nft", "-f", "-"], Some(&rules::nftables(&svcs)));
        sh(&ns, &["nft", "-f", "-"], Some(KUBE_PROXY_NFT6));
    }
    ns
}

/// Every iptables dump (both backends, both families) and the nft ruleset, without comments
/// and counters.
fn snapshot(ns: &Netns) -> String {
    let mut all = String::new();
    for tool in [
        "iptables-nft-save",
        "ip6tables-nft-save",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ] {
        all += &format!("== {tool}\n");
        for line in sh(ns, &[tool], None).lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = match line.rfind(" [") {
                Some(i) if line.starts_with(':') => &line[..i],
                _ => line,
            };
            all += line;
            all.push('\n');
        }
    }
    // Tables in name order: their order is the order they were first written in.
    let ruleset = sh(ns, &["nft", "list", "ruleset"], None);
    let mut tables: Vec<String> = Vec::new();
    for line in ruleset.lines() {
        if line.starts_with("table ") || tables.is_empty() {
            tables.push(String::new());
        }
        let t = tables.last_mut().expect("one pushed");
        *t += line;
        t.push('\n');
    }
    tables.sort();
    all += "== nft list ruleset\n";
    all += &tables.concat();
    all
}

/// Runs the real `podlb cleanup-kube-proxy ARGS` in `ns` (with `path` as PATH if given).
fn cleanup(ns: &Netns, args: &[&str], path: Option<&str>) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name()]);
    if let Some(p) = path {
        cmd.args(["/usr/bin/env", &format!("PATH={p}")]);
    }
    cmd.arg(Path::new(env!("CARGO_BIN_EXE_podlb")))
        .arg("cleanup-kube-proxy")
        .args(args);
    run(cmd, None)
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "podlb cleanup-kube-proxy failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What kube-proxy's inputs hold, counted from the inputs themselves: (jump rules from chains
/// that are not kube-proxy's, chains), over both backends.
fn expected_counts() -> (usize, usize) {
    let v4 = rules::iptables(&services());
    let count = |text: &str| {
        let jumps = text
            .lines()
            .filter(|l| l.starts_with("-A ") && !l.starts_with("-A KUBE-"))
            .count();
        let chains = text.lines().filter(|l| l.starts_with(":KUBE-")).count();
        (jumps, chains)
    };
    let (j4, c4) = count(&v4);
    let (j6, c6) = count(KUBE_PROXY_V6);
    (2 * (j4 + j6), 2 * (c4 + c6))
}

#[test]
fn cleanup_kube_proxy_removes_exactly_kube_proxys_rules() {
    let node = loaded("cleanup", true);
    let reference = loaded("cleanup-ref", false);
    let before = snapshot(&node);
    assert_ne!(before, snapshot(&reference));
    assert!(before.contains("KUBE-SVC-") && before.contains("table ip kube-proxy"));

    let out = stdout_ok(&cleanup(&node, &[], None));
    let (jumps, chains) = expected_counts();
    assert!(
        out.ends_with(&format!(
            "removed {jumps} jump rules, {chains} chains and 2 nftables tables of kube-proxy's\n"
        )),
        "{out}"
    );
    for line in [
        "removed nftables table ip kube-proxy\n",
        "removed nftables table ip6 kube-proxy\n",
        "removed iptables-legacy IPv6 nat chain KUBE-SEP-V6BBBBBBBBBBBBBB\n",
        "removed iptables-nft IPv4 filter rule: -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    assert_eq!(snapshot(&node), snapshot(&reference));

    // Idempotent: nothing left, nothing removed, success.
    let again = stdout_ok(&cleanup(&node, &[], None));
    assert_eq!(again, "nothing to remove: no kube-proxy rules found\n");
    assert_eq!(snapshot(&node), snapshot(&reference));
}

#[test]
fn cleanup_kube_proxy_dry_run_changes_nothing() {
    let node = loaded("cleanup-dry", true);
    let before = snapshot(&node);
    let out = stdout_ok(&cleanup(&node, &["--dry-run"], None));
    let (jumps, chains) = expected_counts();
    assert!(
        out.ends_with(&format!(
            "dry run: would remove {jumps} jump rules, {chains} chains and 2 nftables tables of \
             kube-proxy's; nothing changed\n"
        )),
        "{out}"
    );
    assert!(
        out.contains("would remove nftables table ip kube-proxy\n"),
        "{out}"
    );
    assert_eq!(snapshot(&node), before);
}

#[test]
fn cleanup_kube_proxy_names_a_missing_tool() {
    require_root().unwrap();
    let ns = Netns::new("cleanup-tools").unwrap();
    let out = cleanup(&ns, &[], Some("/nonexistent"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nft is not on PATH; install nftables"),
        "stderr: {err}"
    );

    // nft there, no iptables tool: the error says which were looked for.
    let dir = std::env::temp_dir().join(format!("podlb-cleanup-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("nft");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/usr/sbin/nft", &link).unwrap();
    let out = cleanup(&ns, &[], Some(dir.to_str().unwrap()));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "no iptables tools found: none of iptables-nft-save, iptables-legacy-save or \
             iptables-save is on PATH"
        ),
        "stderr: {err}"
    );
}

/// Runs the real `podlb cleanup-kube-proxy` in `ns` with only the capabilities `caps`
/// (`setpriv` syntax, e.g. "+net_admin"), as the init container would.
fn cleanup_with_caps(ns: &Netns, caps: &str) -> Output {
    let set = format!("-all,{caps}");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name(), "setpriv"])
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .arg(Path::new(env!("CARGO_BIN_EXE_podlb")))
        .arg("cleanup-kube-proxy");
    run(cmd, None)
}

/// The init container's capabilities (deploy/overlays/replace-kube-proxy): with NET_ADMIN
/// alone iptables-legacy cannot read its tables, and the command fails with nothing removed,
/// saying what it needs; NET_ADMIN and NET_RAW are enough.
#[test]
fn cleanup_kube_proxy_needs_net_admin_and_net_raw() {
    let node = loaded("cleanup-caps", true);
    let reference = loaded("cleanup-caps-ref", false);
    let before = snapshot(&node);

    let out = cleanup_with_caps(&node, "+net_admin");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "succeeded without CAP_NET_RAW: {err}"
    );
    assert!(
        err.contains("iptables-legacy-save\" failed")
            && err.contains(
                "(podlb cleanup-kube-proxy needs CAP_NET_ADMIN, and CAP_NET_RAW for iptables-legacy)"
            ),
        "stderr: {err}"
    );
    assert_eq!(
        snapshot(&node),
        before,
        "something was removed before the failure"
    );

    stdout_ok(&cleanup_with_caps(&node, "+net_admin,+net_raw"));
    assert_eq!(snapshot(&node), snapshot(&reference));
}
