//! `podlb cleanup-kube-proxy`: removes the iptables chains and nftables tables that kube-proxy
//! left behind, and nothing else.
//!
//! What is kube-proxy's ([`is_kube_proxy_chain`]): the fixed chains of its iptables mode
//! (`KUBE-SERVICES`, `KUBE-EXTERNAL-SERVICES`, `KUBE-NODEPORTS`, `KUBE-POSTROUTING`,
//! `KUBE-MARK-MASQ`, `KUBE-FORWARD`, `KUBE-PROXY-FIREWALL`, `KUBE-PROXY-CANARY`), the
//! per-Service and per-endpoint chains (`KUBE-SVC-*`, `KUBE-SVL-*`, `KUBE-EXT-*`, `KUBE-FW-*`,
//! `KUBE-SEP-*`, and the older `KUBE-XLB-*`), the iptables part of its IPVS mode
//! (`KUBE-NODE-PORT`, `KUBE-LOAD-BALANCER`, `KUBE-LOOP-BACK`, `KUBE-IPVS-FILTER`,
//! `KUBE-IPVS-OUT-FILTER`, `KUBE-SOURCE-RANGES-FIREWALL`), in every table, for IPv4 and IPv6, and
//! the rules of other chains that jump (`-j`) or go (`-g`) into them; and the nftables tables
//! `ip kube-proxy` and `ip6 kube-proxy` of its nftables mode. Never the kubelet's chains
//! (`KUBE-FIREWALL`, `KUBE-KUBELET-CANARY`, `KUBE-IPTABLES-HINT`, and the `KUBE-MARK-DROP` older
//! kubelets made), nor any other rule.
//!
//! Both iptables backends are cleaned where their tools are installed: iptables-nft
//! (`iptables-nft-save`/`-restore`) and iptables-legacy (`iptables-legacy-save`/`-restore`, only
//! when the kernel has legacy tables loaded); a host with only the plain `iptables-save` uses that.
//! The removal is one `iptables-restore --noflush` per backend and family: the jump rules are
//! deleted, the chains flushed (a chain declared in a `--noflush` input is flushed) and
//! deleted. The parsing and the plan are pure ([`parse_save`], [`plan`], [`restore_input`]).
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// kube-proxy's fixed iptables chains (iptables and IPVS modes).
const FIXED_CHAINS: &[&str] = &[
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
    "KUBE-FORWARD",
    "KUBE-PROXY-FIREWALL",
    "KUBE-PROXY-CANARY",
    // IPVS mode.
    "KUBE-NODE-PORT",
    "KUBE-LOAD-BALANCER",
    "KUBE-LOOP-BACK",
    "KUBE-IPVS-FILTER",
    "KUBE-IPVS-OUT-FILTER",
    "KUBE-SOURCE-RANGES-FIREWALL",
];

/// Prefixes of kube-proxy's per-Service and per-endpoint chains.
const CHAIN_PREFIXES: &[&str] = &[
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-SEP-",
    "KUBE-XLB-",
];

/// The nftables tables of kube-proxy's nftables mode: (family, name).
const NFT_TABLES: &[(&str, &str)] = &[("ip", "kube-proxy"), ("ip6", "kube-proxy")];

/// Whether `chain` is one kube-proxy creates (see the module docs); false for the kubelet's.
pub fn is_kube_proxy_chain(chain: &str) -> bool {
    FIXED_CHAINS.contains(&chain)
        || CHAIN_PREFIXES
            .iter()
            .any(|p| chain.len() > p.len() && chain.starts_with(p))
}

/// One table of an `iptables-save` dump.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SavedTable {
    pub name: String,
    /// Every chain declared (built-in and user-defined), in order.
    pub chains: Vec<String>,
    /// Every rule, as written (`-A CHAIN ...`).
    pub rules: Vec<SavedRule>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct SavedRule {
    pub chain: String,
    /// The whole line, `-A CHAIN ...`.
    pub line: String,
    /// The `-j`/`-g` target, if any.
    pub target: Option<String>,
}

/// Parses `iptables-save` output (comments and counters ignored).
pub fn parse_save(text: &str) -> Result<Vec<SavedTable>> {
    let mut tables = Vec::new();
    let mut cur: Option<SavedTable> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end();
        let at = || format!("iptables-save output, line {}: {line:?}", n + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if cur.is_some() {
                bail!("{}: a table starts before COMMIT", at());
            }
            cur = Some(SavedTable {
                name: name.to_string(),
                ..Default::default()
            });
            continue;
        }
        let Some(t) = cur.as_mut() else {
            bail!("{}: outside a table", at());
        };
        if line == "COMMIT" {
            tables.extend(cur.take());
        } else if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            t.chains.push(name.to_string());
        } else if line.starts_with("-A ") {
            let words = split_words(line).with_context(at)?;
            let chain = words.get(1).cloned().unwrap_or_default();
            let target = words
                .iter()
                .position(|w| matches!(w.as_str(), "-j" | "-g" | "--jump" | "--goto"))
                .and_then(|i| words.get(i + 1).cloned());
            t.rules.push(SavedRule {
                chain,
                line: line.to_string(),
                target,
            });
        } else {
            bail!("{}: not a chain, a rule or COMMIT", at());
        }
    }
    if cur.is_some() {
        bail!("iptables-save output ends inside a table (no COMMIT)");
    }
    Ok(tables)
}

/// Splits a rule line as iptables-restore does: on spaces, `"..."` quoted, `\` escaping.
fn split_words(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut in_word) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                word.extend(chars.next());
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' | '\t' if !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        bail!("unterminated quote");
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// What to remove from one table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TablePlan {
    pub table: String,
    /// Rules of other chains that jump into kube-proxy's chains (`-A ...` lines).
    pub rules: Vec<String>,
    /// kube-proxy's chains, flushed then deleted.
    pub chains: Vec<String>,
}

impl TablePlan {
    fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.chains.is_empty()
    }
}

/// The tables of `tables` that hold something of kube-proxy's, and what to remove there.
pub fn plan(tables: &[SavedTable]) -> Vec<TablePlan> {
    tables
        .iter()
        .map(|t| TablePlan {
            table: t.name.clone(),
            rules: t
                .rules
                .iter()
                .filter(|r| !is_kube_proxy_chain(&r.chain))
                .filter(|r| r.target.as_deref().is_some_and(is_kube_proxy_chain))
                .map(|r| r.line.clone())
                .collect(),
            chains: t
                .chains
                .iter()
                .filter(|c| is_kube_proxy_chain(c))
                .cloned()
                .collect(),
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// The `iptables-restore --noflush` input carrying out `plans`: per table, the jump rules
/// deleted (`-D`), then every chain flushed (declared), then deleted (`-X`).
pub fn restore_input(plans: &[TablePlan]) -> String {
    let mut f = String::new();
    for p in plans {
        let _ = writeln!(f, "*{}", p.table);
        for r in &p.rules {
            let _ = writeln!(f, "-D{}", r.strip_prefix("-A").unwrap_or(r));
        }
        for c in &p.chains {
            let _ = writeln!(f, ":{c} - [0:0]");
        }
        for c in &p.chains {
            let _ = writeln!(f, "-X {c}");
        }
        f += "COMMIT\n";
    }
    f
}

/// kube-proxy's tables among the lines of `nft list tables` (`table FAMILY NAME`).
pub fn kube_proxy_nft_tables(list: &str) -> Vec<(String, String)> {
    list.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("table"), Some(fam), Some(name)) if NFT_TABLES.contains(&(fam, name)) => {
                    Some((fam.to_string(), name.to_string()))
                }
                _ => None,
            }
        })
        .collect()
}

/// One iptables backend and family: its save and restore tools.
struct Tools {
    /// e.g. "iptables-nft IPv4"
    label: String,
    save: PathBuf,
    restore: PathBuf,
    /// Whether the backend takes the xtables lock (`-w`): legacy only.
    legacy: bool,
}

/// The backends to clean, found on PATH; an error names what is missing.
fn find_tools() -> Result<Vec<Tools>> {
    let mut out = Vec::new();
    let mut any = false;
    for (backend, suffix, legacy) in [
        ("iptables-nft", "-nft", false),
        ("iptables-legacy", "-legacy", true),
    ] {
        if find_on_path(&format!("iptables{suffix}-save")).is_none() {
            continue;
        }
        any = true;
        for (family, bin, proc_names) in [
            ("IPv4", "iptables", "/proc/net/ip_tables_names"),
            ("IPv6", "ip6tables", "/proc/net/ip6_tables_names"),
        ] {
            // Legacy tables exist only once the kernel's x_tables module for the family is in
            // use; without it there is nothing of kube-proxy's there.
            if legacy && !Path::new(proc_names).exists() {
                continue;
            }
            out.push(tools(format!("{backend} {family}"), bin, suffix, legacy)?);
        }
    }
    if !any {
        if find_on_path("iptables-save").is_none() {
            bail!(
                "no iptables tools found: none of iptables-nft-save, iptables-legacy-save or \
                 iptables-save is on PATH ({}); install iptables",
                std::env::var("PATH").unwrap_or_default()
            );
        }
        out.push(tools("iptables IPv4".into(), "iptables", "", false)?);
        out.push(tools("iptables IPv6".into(), "ip6tables", "", false)?);
    }
    Ok(out)
}

fn tools(label: String, bin: &str, suffix: &str, legacy: bool) -> Result<Tools> {
    let need = |name: String| {
        find_on_path(&name).with_context(|| {
            format!("{name} is not on PATH, but {label} is to be cleaned; install iptables")
        })
    };
    Ok(Tools {
        save: need(format!("{bin}{suffix}-save"))?,
        restore: need(format!("{bin}{suffix}-restore"))?,
        label,
        legacy,
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs `cmd` (with `input` on stdin) and returns its stdout; a failure names the command and
/// carries its stderr.
fn run(cmd: &mut Command, input: Option<&str>) -> Result<String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .with_context(|| format!("writing to {what}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {what}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("Permission denied") || stderr.contains("not permitted") {
            " (podlb cleanup-kube-proxy needs CAP_NET_ADMIN, and CAP_NET_RAW for iptables-legacy)"
        } else {
            ""
        };
        bail!("{what} failed ({}): {}{hint}", out.status, stderr.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn saved_plan(t: &Tools) -> Result<Vec<TablePlan>> {
    let dump = run(&mut Command::new(&t.save), None)?;
    let tables = parse_save(&dump).with_context(|| format!("reading {}", t.save.display()))?;
    Ok(plan(&tables))
}

/// `podlb cleanup-kube-proxy [--dry-run]`: see the module docs. Prints each rule, chain and
/// table removed (or, with `dry_run`, that would be), then a summary. Run it after kube-proxy
/// is stopped, or kube-proxy writes its rules again.
pub fn cleanup_kube_proxy(dry_run: bool) -> Result<()> {
    // Every tool is found before anything is changed.
    let nft = find_on_path("nft").context(
        "nft is not on PATH; install nftables (needed to find and delete the `ip kube-proxy` and \
         `ip6 kube-proxy` tables)",
    )?;
    let all_tools = find_tools()?;
    let verb = if dry_run { "would remove" } else { "removed" };
    let (mut n_rules, mut n_chains, mut n_tables) = (0, 0, 0);

    // Everything is read before anything is changed: a tool that cannot read (a missing
    // capability) fails the command with nothing removed.
    let listed = run(Command::new(&nft).args(["list", "tables"]), None)?;
    let nft_tables = kube_proxy_nft_tables(&listed);
    let mut plans = Vec::new();
    for t in &all_tools {
        plans.push(saved_plan(t)?);
    }

    for (family, name) in nft_tables {
        if !dry_run {
            run(
                Command::new(&nft).args(["delete", "table", &family, &name]),
                None,
            )?;
        }
        println!("{verb} nftables table {family} {name}");
        n_tables += 1;
    }

    for (t, plans) in all_tools.iter().zip(plans) {
        if plans.is_empty() {
            continue;
        }
        for p in &plans {
            for r in &p.rules {
                println!("{verb} {} {} rule: {r}", t.label, p.table);
            }
            for c in &p.chains {
                println!("{verb} {} {} chain {c}", t.label, p.table);
            }
            n_rules += p.rules.len();
            n_chains += p.chains.len();
        }
        if dry_run {
            continue;
        }
        let mut cmd = Command::new(&t.restore);
        if t.legacy {
            cmd.args(["-w", "5"]);
        }
        cmd.arg("--noflush");
        run(&mut cmd, Some(&restore_input(&plans)))
            .with_context(|| format!("removing kube-proxy's {} rules", t.label))?;
        let left = saved_plan(t)?;
        if !left.is_empty() {
            let names: Vec<String> = left
                .iter()
                .flat_map(|p| p.chains.iter().map(move |c| format!("{} {c}", p.table)))
                .collect();
            bail!(
                "{}: kube-proxy's rules are back right after their removal ({}); is kube-proxy \
                 still running on this node? Stop it first",
                t.label,
                names.join(", ")
            );
        }
    }

    let total = format!(
        "{n_rules} jump rules, {n_chains} chains and {n_tables} nftables tables of kube-proxy's"
    );
    if n_rules + n_chains + n_tables == 0 {
        println!("nothing to remove: no kube-proxy rules found");
    } else if dry_run {
        println!("dry run: would remove {total}; nothing changed");
    } else {
        println!("removed {total}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_kube_proxys_and_not_the_kubelets() {
        for c in [
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-SVC-ABCDEFGHIJKLMNOP",
            "KUBE-SEP-ABCDEFGHIJKLMNOP",
            "KUBE-EXT-X",
            "KUBE-FW-X",
            "KUBE-SVL-X",
            "KUBE-XLB-X",
            "KUBE-PROXY-CANARY",
            "KUBE-PROXY-FIREWALL",
            "KUBE-MARK-MASQ",
            "KUBE-POSTROUTING",
        ] {
            assert!(is_kube_proxy_chain(c), "{c}");
        }
        for c in [
            "KUBE-FIREWALL",
            "KUBE-KUBELET-CANARY",
            "KUBE-IPTABLES-HINT",
            "KUBE-MARK-DROP",
            "KUBE-SVC-",
            "KUBE-SEP",
            "INPUT",
            "MY-KUBE-SERVICES",
            "KUBE-SERVICES-X",
        ] {
            assert!(!is_kube_proxy_chain(c), "{c}");
        }
    }

    const DUMP: &str = r#"# Generated by iptables-save v1.8.9
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-AAAA - [0:0]
:KUBE-MARK-DROP - [0:0]
:USER - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m comment --comment "not a jump: -j KUBE-SERVICES" -j USER
-A USER -g KUBE-SVC-AAAA
-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-AAAA
-A KUBE-SVC-AAAA -j KUBE-MARK-DROP
COMMIT
*filter
:INPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
-A INPUT -j KUBE-FIREWALL
COMMIT
"#;

    #[test]
    fn plan_removes_jumps_and_chains_of_kube_proxy_only() {
        let tables = parse_save(DUMP).unwrap();
        assert_eq!(tables.len(), 2);
        assert_eq!(
            tables[0].rules[1].target.as_deref(),
            Some("USER"),
            "a quoted comment is not a target"
        );
        let p = plan(&tables);
        assert_eq!(
            p,
            vec![TablePlan {
                table: "nat".into(),
                rules: vec![
                    "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".into(),
                    "-A USER -g KUBE-SVC-AAAA".into(),
                ],
                chains: vec!["KUBE-SERVICES".into(), "KUBE-SVC-AAAA".into()],
            }]
        );
        assert_eq!(
            restore_input(&p),
            "*nat\n\
             -D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -D USER -g KUBE-SVC-AAAA\n\
             :KUBE-SERVICES - [0:0]\n\
             :KUBE-SVC-AAAA - [0:0]\n\
             -X KUBE-SERVICES\n\
             -X KUBE-SVC-AAAA\n\
             COMMIT\n"
        );
    }

    #[test]
    fn bad_dumps_are_refused_with_the_line() {
        let e = parse_save("*nat\n:A - [0:0]\n").unwrap_err().to_string();
        assert_eq!(e, "iptables-save output ends inside a table (no COMMIT)");
        let e = parse_save("-A INPUT -j X\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "iptables-save output, line 1: \"-A INPUT -j X\": outside a table"
        );
        let e = format!(
            "{:#}",
            parse_save("*nat\n-A X -m comment --comment \"a\nCOMMIT\n").unwrap_err()
        );
        assert!(e.ends_with("unterminated quote"), "{e}");
    }

    #[test]
    fn nft_tables_of_kube_proxy() {
        let list = "table inet filter\ntable ip kube-proxy\ntable ip nat\ntable ip6 kube-proxy\ntable inet kube-proxy\n";
        assert_eq!(
            kube_proxy_nft_tables(list),
            vec![
                ("ip".to_string(), "kube-proxy".to_string()),
                ("ip6".to_string(), "kube-proxy".to_string())
            ]
        );
    }
}
