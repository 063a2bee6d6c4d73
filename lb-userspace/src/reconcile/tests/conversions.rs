//! Tests of the conversions between the mirror's types and the map entries, and of the SNAT
//! config.

use lb_common::{SNAT_PORT_MAX, SNAT_PORT_MIN};

use super::{fe, fe6};
use crate::model::DesiredState;
use crate::reconcile::{
    config_for, frontend_key, frontend_socket_addr, vip_ip, vip_key, BackendKey,
};
use crate::types::Proto;

#[test]
fn map_conversions_round_trip() {
    for ip in ["10.244.0.5", "fd00:244::5"] {
        let b = BackendKey {
            ip: ip.parse().unwrap(),
            port: 8080,
            proto: 6,
        };
        assert_eq!(BackendKey::from_map(&b.to_map()), b);
        let v = vip_key(b.ip);
        assert_eq!(vip_ip(&v), b.ip);
    }
    let k = frontend_key(&fe6("fd00::10", 80, Proto::Udp));
    assert_eq!(k.family, lb_common::FAMILY_V6);
    assert_eq!(frontend_socket_addr(&k).to_string(), "[fd00::10]:80");
    let k = frontend_key(&fe([10, 96, 0, 10], 80, Proto::Tcp));
    assert_eq!(k.addr[..4], [10, 96, 0, 10]);
    assert_eq!(k.addr[4..], [0; 12]);
    assert_eq!(k.family, lb_common::FAMILY_V4);
    assert_eq!(frontend_socket_addr(&k).to_string(), "10.96.0.10:80");
}

#[test]
fn snat_config_per_family() {
    let mut d = DesiredState::default();
    let c = config_for(&d);
    assert_eq!((c.snat_addr, c.snat_addr6), ([0; 4], [0; 16]));
    assert_eq!(
        (c.snat_port_min, c.snat_port_max),
        (SNAT_PORT_MIN, SNAT_PORT_MAX)
    );
    d.node_addresses = vec![
        "fd00::5".parse().unwrap(),
        "192.168.0.5".parse().unwrap(),
        "fd00::6".parse().unwrap(),
        "192.168.0.6".parse().unwrap(),
    ];
    let c = config_for(&d);
    assert_eq!(c.snat_addr, [192, 168, 0, 5]);
    assert_eq!(
        c.snat_addr6,
        "fd00::5".parse::<std::net::Ipv6Addr>().unwrap().octets()
    );
    d.node_addresses = vec!["fd00::5".parse().unwrap()];
    assert_eq!(config_for(&d).snat_addr, [0; 4]);
}
