//! The values: listen addresses, durations, CIDRs, NodePort addresses, globs, log formats.
use std::time::Duration;

use crate::config::values::*;
use crate::types::NodePortAddresses;

#[test]
fn listen_addresses_with_and_without_port() {
    let a = |s: &str| listen_addr(s, 10256).map(|a| a.map(|a| a.to_string()));
    assert_eq!(a("0.0.0.0:10256"), Ok(Some("0.0.0.0:10256".into())));
    assert_eq!(a("127.0.0.1:9000"), Ok(Some("127.0.0.1:9000".into())));
    assert_eq!(a("10.0.0.1"), Ok(Some("10.0.0.1:10256".into())));
    assert_eq!(a("::"), Ok(Some("[::]:10256".into())));
    assert_eq!(a("[fd00::1]"), Ok(Some("[fd00::1]:10256".into())));
    assert_eq!(a("[fd00::1]:99"), Ok(Some("[fd00::1]:99".into())));
    assert_eq!(a("off"), Ok(None));
    assert_eq!(
        a("localhost:80"),
        Err("\"localhost:80\" is not an address (want IP, IP:PORT or off)".into())
    );
    assert_eq!(
        a("1.2.3.4:99999"),
        Err("\"1.2.3.4:99999\" is not an address (want IP, IP:PORT or off)".into())
    );
    assert_eq!(listen_addr_string(None), "off");
}

#[test]
fn durations_in_units_or_seconds() {
    let d = |s: &str| resync_interval(s);
    assert_eq!(d("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(d("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(d("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(d("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(d("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(d("10"), Ok(Duration::from_secs(10)));
    assert_eq!(d("0.25"), Ok(Duration::from_millis(250)));
    assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
    let bad = |s: &str| format!("{s:?} is not a duration (want e.g. 10s, 500ms, 2m, or seconds)");
    for s in ["", "ten", "10x", "s", "10s5", "-1s", "1e400"] {
        assert_eq!(d(s), Err(bad(s)), "{s}");
    }
    assert_eq!(
        d("50ms"),
        Err("\"50ms\" is too short (at least 100ms)".into())
    );
    assert_eq!(d("0"), Err("\"0\" is too short (at least 100ms)".into()));
    assert_eq!(d("-1"), Err(bad("-1")));
}

#[test]
fn durations_written_back_read_the_same() {
    for (d, s) in [
        (Duration::from_secs(10), "10s"),
        (Duration::from_millis(500), "500ms"),
        (Duration::from_millis(1500), "1500ms"),
        (Duration::from_secs(120), "2m"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(7200), "2h"),
        (Duration::from_secs(3661), "1h1m1s"),
        (Duration::from_nanos(100_000_001), "100000001ns"),
    ] {
        assert_eq!(duration_string(d), s);
        assert_eq!(resync_interval(s), Ok(d), "{s}");
    }
}

#[test]
fn cluster_cidrs_at_most_one_per_family() {
    let c = |s: &str| cluster_cidrs(s).map(|v| cluster_cidrs_string(&v));
    assert_eq!(c(""), Ok("".into()));
    assert_eq!(c("10.244.0.0/16"), Ok("10.244.0.0/16".into()));
    assert_eq!(
        c("10.244.0.0/16, fd00:10:244::/56"),
        Ok("10.244.0.0/16,fd00:10:244::/56".into())
    );
    assert_eq!(
        c("10.244.0.0/16,10.245.0.0/16"),
        Err("two IPv4 CIDRs (10.244.0.0/16 and 10.245.0.0/16); at most one per family".into())
    );
    assert_eq!(
        c("fd00::/64,fd01::/64"),
        Err("two IPv6 CIDRs (fd00::/64 and fd01::/64); at most one per family".into())
    );
    assert_eq!(
        c("10.244.0.0/33"),
        Err("\"10.244.0.0/33\": the prefix length must be 0 to 32".into())
    );
    assert_eq!(
        c("10.244.0/16"),
        Err("\"10.244.0/16\" is not a CIDR (want ADDR/PREFIX)".into())
    );
}

#[test]
fn nodeport_addresses_default_primary_or_cidrs() {
    let n = |l: &[&str]| nodeport_addresses(l);
    assert_eq!(n(&[]), Ok(NodePortAddresses::Default));
    assert_eq!(n(&[""]), Ok(NodePortAddresses::Default));
    assert_eq!(n(&["primary"]), Ok(NodePortAddresses::Primary));
    let cidrs = n(&["192.168.77.0/24", "fd00:77::/64", "192.168.77.0/24"]).unwrap();
    assert_eq!(
        nodeport_addresses_list(&cidrs),
        ["192.168.77.0/24", "fd00:77::/64"]
    );
    assert_eq!(
        n(&["primary", "10.0.0.0/8"]),
        Err("\"primary\" cannot be combined with CIDRs".into())
    );
    assert_eq!(
        n(&["10.0.0.0/8", "nope"]),
        Err("\"nope\" is not a CIDR (want ADDR/PREFIX)".into())
    );
    for v in [
        NodePortAddresses::Default,
        NodePortAddresses::Primary,
        cidrs,
    ] {
        assert_eq!(
            n(&nodeport_addresses_list(&v)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()),
            Ok(v)
        );
    }
}

#[test]
fn globs_formats_interfaces_and_verbosity() {
    assert!(glob("veth*").is_ok());
    assert_eq!(
        glob("veth[").unwrap_err(),
        "bad glob \"veth[\": Pattern syntax error near position 4: invalid range pattern"
    );
    assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
    assert_eq!(LogFormat::parse("text"), Ok(LogFormat::Text));
    assert_eq!(
        LogFormat::parse("xml"),
        Err("unknown log format \"xml\" (want text or json)".into())
    );
    assert_eq!(interface_name("eth0"), Ok(()));
    assert_eq!(
        interface_name("a-very-long-interface"),
        Err("\"a-very-long-interface\" is not an interface name".into())
    );
    assert_eq!(verbosity_filter(0), "info");
    assert_eq!(verbosity_filter(2), "info");
    assert_eq!(verbosity_filter(3), "info,podlb=debug");
    assert_eq!(verbosity_filter(4), "info,podlb=debug");
    assert_eq!(verbosity_filter(5), "debug,podlb=trace");
    assert_eq!(verbosity_filter(10), "debug,podlb=trace");
}
