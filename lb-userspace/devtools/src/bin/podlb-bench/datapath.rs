//! Section A: the cost of one packet through `podlb_xdp_ext` and `podlb_tc_pod`, measured with
//! BPF_PROG_TEST_RUN, against empty XDP and TC programs loaded in the same run.
//!
//! The programs rewrite packets in place, and a test run with `repeat > 1` feeds each iteration
//! the previous iteration's output, so a DNATed packet would be measured as non-service traffic
//! from the second iteration on. Every measured run therefore has `repeat = 1` and a fresh
//! input, and its verdict and output bytes are checked. With `repeat = 1` the kernel's timer
//! (two `ktime_get_ns` calls around the run) is part of the reported duration; it is measured
//! in the same round as `floor(repeat=1) - floor(repeat=N)` (the empty program timed once, and
//! averaged over N iterations) and subtracted. The raw figures are kept in the JSON, and the
//! non-service path, which does not change the packet, is also timed with `repeat = N` as a
//! check of that correction.
//!
//! Setup per scale: S ClusterIP Services (10.96/12, port 80) with 10 backends each
//! (10.128/9:8080, all distinct), and NodePorts 192.168.77.1:30000+k (with masquerade) for the
//! first min(S, 1000) of them. The maps are resized at load time (`EbpfLoader::set_max_entries`,
//! nothing in lb-common changes) so that 100,000 Services x 10 backends and 1,000,000 conntrack
//! entries fit; the sizes are listed in the report. Each path rotates over 1,000 flows spread
//! over min(S, 1000) Services (new flows: a new client for every run), at every scale, so that
//! larger tables are not hidden behind one hot cache line and the scales differ only in the
//! number of Services.
//!
//! XDP runs in its own network namespace (bpf_fib_lookup resolves in the namespace of the
//! thread doing the test run): the node owns 192.168.77.1 on the veth `up0`, backends and
//! clients are routed via 192.168.77.254 on `up0` (a permanent neighbour), so NATed NodePort
//! packets and their replies leave with `XDP_TX`, as for backends on other nodes.
use std::{
    io,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    time::Instant,
};

use anyhow::{ensure, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData},
    programs::{SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use lb_common::*;
use podlb::datapath::EBPF_OBJECT;
use serde_json::json;
use testkit::frame::{checksums, tcp, Addr, ACK, SYN};
use testkit::testbed::Netns;

use crate::report::{median, Figure};

const XDP_TX: u32 = 3;
const XDP_PASS: u32 = 2;
const TC_NEXT: u32 = u32::MAX;

const NODE: [u8; 4] = [192, 168, 77, 1];
/// Most NodePort frontends (and the size of the rotation pool of each path).
const POOL: usize = 1000;
const BACKENDS_PER_SVC: usize = 10;
const NODEPORT_SVC_BASE: u32 = 200_001;

/// Map sizes the bench loads the object with (stock sizes in lb-common are smaller).
pub const MAP_SIZES: [(&str, u32); 6] = [
    (MAP_FRONTENDS, 131_072),
    (MAP_SLOTS, 1_048_576),
    (MAP_BACKENDS, 1_048_576),
    (MAP_CONNTRACK, 1_048_576),
    (MAP_VIPS, 131_072),
    (MAP_SVC_STATS, 262_144),
];

pub struct Opts {
    pub scales: Vec<usize>,
    /// Conntrack entries to add at the largest scale (0: skip that point).
    pub ct_fill: usize,
    pub rounds: usize,
    /// Test runs per path per round.
    pub runs: usize,
    /// `repeat` of the averaged floor runs.
    pub repeat: u32,
}

// ---------------------------------------------------------------------------------------------
// Raw BPF syscalls: test runs on any program fd, and the two empty programs.

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// An empty program: `r0 = ret; exit`, loaded from raw instructions.
fn load_empty(prog_type: u32, ret: i32, name: &str) -> Result<OwnedFd> {
    // mov64 r0, imm (opcode 0xb7); exit (0x95)
    let mut insns = [0u64; 2];
    insns[0] = 0xb7 | ((ret as u32 as u64) << 32);
    insns[1] = 0x95;
    let license = b"GPL\0";
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..name.len()].copy_from_slice(name.as_bytes());
    let fd =
        bpf(BPF_PROG_LOAD, &mut attr).with_context(|| format!("loading empty program {name}"))?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

struct RunOut {
    retval: u32,
    duration: u32,
    /// Output frame (for XDP without the metadata in front of it).
    data: Vec<u8>,
}

/// One opened flow: the ACK that followed its SYN, the run of that ACK, and (for the reply
/// path) the backend's reply with its run.
type OpenedFlow = (Vec<u8>, RunOut, Option<(Vec<u8>, RunOut)>);

/// One BPF_PROG_TEST_RUN. `xdp_ifindex`: an XDP run with an `xdp_md` naming that ingress device.
fn test_run(fd: RawFd, data: &[u8], xdp_ifindex: Option<u32>, repeat: u32) -> io::Result<RunOut> {
    let mut out = vec![0u8; data.len() + 256];
    let md: Vec<u8> = xdp_ifindex
        .map(|i| {
            [0, data.len() as u32, 0, i, 0, 0]
                .iter()
                .flat_map(|w| w.to_ne_bytes())
                .collect()
        })
        .unwrap_or_default();
    let mut md_out = vec![0u8; md.len()];
    let mut attr = TestRunAttr {
        prog_fd: fd as u32,
        data_size_in: data.len() as u32,
        data_size_out: out.len() as u32,
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..Default::default()
    };
    if !md.is_empty() {
        attr.ctx_size_in = md.len() as u32;
        attr.ctx_in = md.as_ptr() as u64;
        attr.ctx_size_out = md_out.len() as u32;
        attr.ctx_out = md_out.as_mut_ptr() as u64;
    }
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    out.truncate(attr.data_size_out as usize);
    if !md.is_empty() {
        let meta = u32::from_ne_bytes(md_out[0..4].try_into().unwrap()) as usize;
        out.drain(..meta.min(out.len()));
    }
    Ok(RunOut {
        retval: attr.retval,
        duration: attr.duration,
        data: out,
    })
}

// ---------------------------------------------------------------------------------------------
// The loaded object, its maps and the XDP namespace.

struct Bed {
    ebpf: Ebpf,
    ns: Netns,
    ifindex: u32,
    tc_fd: RawFd,
    xdp_fd: RawFd,
    tc_floor: OwnedFd,
    xdp_floor: OwnedFd,
    /// Services written so far.
    services: usize,
    /// Unique client counter (new flows never hit conntrack).
    next_client: u32,
}

fn ip4(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}
fn vip(k: usize) -> [u8; 4] {
    ip4(u32::from_be_bytes([10, 96, 0, 0]) + 1 + k as u32)
}
fn backend_id(k: usize, j: usize) -> u32 {
    (k * BACKENDS_PER_SVC + j + 1) as u32
}
fn backend_ip(id: u32) -> [u8; 4] {
    ip4(u32::from_be_bytes([10, 128, 0, 0]) + id)
}
/// The service a backend address belongs to.
fn service_of_backend(ip: [u8; 4]) -> Option<usize> {
    let id = u32::from_be_bytes(ip).checked_sub(u32::from_be_bytes([10, 128, 0, 0]))?;
    (id >= 1).then(|| (id as usize - 1) / BACKENDS_PER_SVC)
}

impl Bed {
    fn new() -> Result<Bed> {
        ensure!(
            !EBPF_OBJECT.is_empty(),
            "built without the eBPF object; run `cargo xtask build`"
        );
        let mut loader = EbpfLoader::new();
        for (name, size) in MAP_SIZES {
            loader.map_max_entries(name, size);
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .context("loading the eBPF object")?;
        let tc: &mut SchedClassifier = ebpf
            .program_mut(PROG_TC_POD)
            .context("tc program")?
            .try_into()?;
        tc.load().context("loading the TC program")?;
        let tc_fd = tc.fd()?.as_fd().as_raw_fd();
        let xdp: &mut Xdp = ebpf
            .program_mut(PROG_XDP_EXT)
            .context("xdp program")?
            .try_into()?;
        xdp.load().context("loading the XDP program")?;
        let xdp_fd = xdp.fd()?.as_fd().as_raw_fd();
        let ns = Netns::new("bench-xdp")?;
        for cmd in [
            "link add up0 address 02:00:00:00:00:01 type veth peer name up0p address 02:00:00:00:00:02",
            "link set up0 up",
            "link set up0p up",
            "addr add 192.168.77.1/24 dev up0",
            "neigh add 192.168.77.254 lladdr 02:00:00:00:00:fe dev up0 nud permanent",
            "route add 10.0.0.0/8 via 192.168.77.254 dev up0",
            "route add 172.16.0.0/12 via 192.168.77.254 dev up0",
        ] {
            let args: Vec<&str> = std::iter::once("ip").chain(cmd.split_whitespace()).collect();
            ns.exec(&args)?;
        }
        ns.sysctl(&[("net.ipv4.ip_forward", "1")])?;
        let ifindex = ns.run_in(|| unsafe { libc::if_nametoindex(c"up0".as_ptr()) });
        ensure!(ifindex != 0, "no up0 in the XDP namespace");
        let mut bed = Bed {
            ebpf,
            ns,
            ifindex,
            tc_fd,
            xdp_fd,
            tc_floor: load_empty(BPF_PROG_TYPE_SCHED_CLS, -1, "bench_tc_empty")?,
            xdp_floor: load_empty(BPF_PROG_TYPE_XDP, XDP_PASS as i32, "bench_xdp_empty")?,
            services: 0,
            next_client: 0,
        };
        let mut cfg: Array<_, Config> = Array::try_from(bed.ebpf.map_mut(MAP_CONFIG).unwrap())?;
        cfg.set(
            0,
            Config {
                snat_addr: NODE,
                snat_port_min: SNAT_PORT_MIN,
                snat_port_max: SNAT_PORT_MAX,
                snat_addr6: [0; 16],
                ..Config::default()
            },
            0,
        )?;
        Ok(bed)
    }

    fn hash<K: aya::Pod, V: aya::Pod>(&mut self, name: &str) -> HashMap<&mut MapData, K, V> {
        HashMap::try_from(self.ebpf.map_mut(name).unwrap()).unwrap()
    }

    /// Writes Services `self.services..n` (backends, slots, frontend, VIP; a NodePort for the
    /// first `POOL`).
    fn grow(&mut self, n: usize) -> Result<()> {
        for k in self.services..n {
            {
                let mut be: Array<_, Backend> =
                    Array::try_from(self.ebpf.map_mut(MAP_BACKENDS).unwrap())?;
                for j in 0..BACKENDS_PER_SVC {
                    let id = backend_id(k, j);
                    let b = Backend {
                        addr: addr4(backend_ip(id)),
                        port: 8080,
                        proto: PROTO_TCP,
                        family: FAMILY_V4,
                    };
                    be.set(id, b, 0)?;
                }
            }
            let mut fes = vec![(
                FrontendKey {
                    addr: addr4(vip(k)),
                    port: 80,
                    proto: PROTO_TCP,
                    family: FAMILY_V4,
                },
                k as u32 + 1,
                0,
                KIND_CLUSTER_IP,
            )];
            if k < POOL {
                fes.push((
                    FrontendKey {
                        addr: addr4(NODE),
                        port: 30000 + k as u16,
                        proto: PROTO_TCP,
                        family: FAMILY_V4,
                    },
                    NODEPORT_SVC_BASE + k as u32,
                    FE_SNAT,
                    KIND_NODE_PORT,
                ));
            }
            for (key, svc_id, flags, kind) in fes {
                let mut slots = self.hash::<SlotKey, Slot>(MAP_SLOTS);
                for j in 0..BACKENDS_PER_SVC {
                    slots.insert(
                        SlotKey {
                            svc_id,
                            slot: j as u32,
                        },
                        Slot {
                            backend_id: backend_id(k, j),
                        },
                        0,
                    )?;
                }
                let fe = Frontend {
                    svc_id,
                    count: BACKENDS_PER_SVC as u32,
                    flags,
                    kind,
                    pad: 0,
                };
                self.hash::<FrontendKey, Frontend>(MAP_FRONTENDS)
                    .insert(key, fe, 0)?;
            }
            let vk = VipKey {
                addr: addr4(vip(k)),
                family: FAMILY_V4,
                pad: [0; 3],
            };
            self.hash::<VipKey, Vip>(MAP_VIPS)
                .insert(vk, Vip { flags: 0 }, 0)?;
        }
        self.services = self.services.max(n);
        Ok(())
    }

    fn conntrack_len(&mut self) -> usize {
        self.hash::<CtKey, CtEntry>(MAP_CONNTRACK).keys().count()
    }

    /// Adds `n` unrelated conntrack entries (forward/reply pairs of other clients).
    fn fill_conntrack(&mut self, n: usize) -> Result<()> {
        let services = self.services;
        let mut ct = self.hash::<CtKey, CtEntry>(MAP_CONNTRACK);
        for i in 0..n / 2 {
            let k = i % services;
            let id = backend_id(k, i % BACKENDS_PER_SVC);
            let client = ip4(u32::from_be_bytes([100, 64, 0, 0]) + (i / 40000) as u32);
            let sport = 20000 + (i % 40000) as u16;
            let fwd = CtKey {
                saddr: addr4(client),
                daddr: addr4(vip(k)),
                sport,
                dport: 80,
                proto: PROTO_TCP,
                family: FAMILY_V4,
                pad: [0; 2],
            };
            let rep = CtKey {
                saddr: addr4(backend_ip(id)),
                daddr: addr4(client),
                sport: 8080,
                dport: sport,
                proto: PROTO_TCP,
                family: FAMILY_V4,
                pad: [0; 2],
            };
            let e = |nat: [u8; 4], port, flags| CtEntry {
                nat_addr: addr4(nat),
                snat_addr: [0; 16],
                nat_port: port,
                snat_port: 0,
                flags,
                svc_id: k as u32 + 1,
                backend_id: id,
            };
            ct.insert(fwd, e(backend_ip(id), 8080, CT_FORWARD), 0)?;
            ct.insert(rep, e(vip(k), 80, CT_REPLY), 0)?;
        }
        Ok(())
    }

    fn client(&mut self, base: [u8; 4]) -> ([u8; 4], u16) {
        let n = self.next_client;
        self.next_client += 1;
        (
            ip4(u32::from_be_bytes(base) + 1 + n / 50000),
            10000 + (n % 50000) as u16,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Paths.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Tc,
    Xdp,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    New,
    Established,
    Reply,
    NonService,
}

impl Path {
    fn id(self) -> &'static str {
        match self {
            Path::New => "new",
            Path::Established => "established",
            Path::Reply => "reply",
            Path::NonService => "non-service",
        }
    }
}

/// One prepared run: the input and the check of its output.
struct Case {
    input: Vec<u8>,
    verdict: u32,
    check: Check,
}

enum Check {
    /// Output bytes exactly these.
    Exact(Vec<u8>),
    /// A new flow of service `k`: destination one of its backends on 8080, checksums valid;
    /// `snat`: the source is the node address.
    NewFlow { k: usize, snat: bool },
}

fn check(case: &Case, out: &RunOut) -> Result<()> {
    ensure!(
        out.retval == case.verdict,
        "verdict {} instead of {}",
        out.retval as i32,
        case.verdict as i32
    );
    match &case.check {
        Check::Exact(want) => ensure!(
            &out.data == want,
            "output bytes differ from the path's expected output"
        ),
        Check::NewFlow { k, snat } => {
            let f = &out.data;
            checksums(f).map_err(|e| anyhow::anyhow!(e))?;
            let dst: [u8; 4] = f[30..34].try_into().unwrap();
            ensure!(
                service_of_backend(dst) == Some(*k),
                "new flow DNATed to {dst:?}, not a backend of service {k}"
            );
            ensure!(u16::from_be_bytes([f[36], f[37]]) == 8080, "backend port");
            if *snat {
                ensure!(f[26..30] == NODE, "not masqueraded to the node address");
            }
        }
    }
    Ok(())
}

fn pool(services: usize) -> Vec<usize> {
    let p = services.min(POOL);
    (0..p).map(|i| i * services / p).collect()
}

/// Swaps the 5-tuple of a frame built by `tcp()`: the reply a backend sends.
fn reply_of(out: &[u8], flags: u8) -> Vec<u8> {
    let src: Addr = (
        out[30..34].try_into().unwrap(),
        u16::from_be_bytes([out[36], out[37]]),
    );
    let dst = (
        out[26..30].try_into().unwrap(),
        u16::from_be_bytes([out[34], out[35]]),
    );
    tcp(src, dst, flags).build()
}

/// Builds the cases of one path (establishing flows where the path needs them).
fn prepare(bed: &mut Bed, hook: Hook, path: Path, runs: usize) -> Result<Vec<Case>> {
    let (fd, ifx, nat_verdict) = match hook {
        Hook::Tc => (bed.tc_fd, None, TC_NEXT),
        Hook::Xdp => (bed.xdp_fd, Some(bed.ifindex), XDP_TX),
    };
    let pass_verdict = match hook {
        Hook::Tc => TC_NEXT,
        Hook::Xdp => XDP_PASS,
    };
    // (frontend address and port of pool entry k, service index)
    let fe = |k: usize| match hook {
        Hook::Tc => ((vip(k), 80u16), k),
        Hook::Xdp => ((NODE, 30000 + k as u16), k),
    };
    let client_base = match hook {
        Hook::Tc => [10, 244, 0, 0],
        Hook::Xdp => [172, 16, 0, 0],
    };
    let services = if hook == Hook::Xdp {
        bed.services.min(POOL)
    } else {
        bed.services
    };
    let pool = pool(services);
    let mut cases = Vec::new();
    match path {
        Path::New => {
            for i in 0..runs {
                let (dst, k) = fe(pool[i % pool.len()]);
                let src = bed.client(client_base);
                cases.push(Case {
                    input: tcp(src, dst, SYN).build(),
                    verdict: nat_verdict,
                    check: Check::NewFlow {
                        k,
                        snat: hook == Hook::Xdp,
                    },
                });
            }
        }
        Path::NonService => {
            // To a pod (TC) or to the node's own SSH port (XDP): looked up, not ours.
            let dst = match hook {
                Hook::Tc => ([10, 244, 3, 3], 8080),
                Hook::Xdp => (NODE, 22),
            };
            let src = bed.client(client_base);
            let input = tcp(src, dst, ACK).build();
            cases.push(Case {
                input: input.clone(),
                verdict: pass_verdict,
                check: Check::Exact(input),
            });
        }
        Path::Established | Path::Reply => {
            // Every flow is opened (SYN, then an ACK that must follow it) and, for the reply
            // path, answered once, all from one thread in the XDP namespace.
            let flows: Vec<_> = (0..POOL)
                .map(|i| {
                    let (dst, k) = fe(pool[i % pool.len()]);
                    (bed.client(client_base), dst, k)
                })
                .collect();
            let want_reply = path == Path::Reply;
            let runs = bed.ns.run_in(|| -> Result<Vec<OpenedFlow>> {
                let mut v = Vec::with_capacity(flows.len());
                for &(src, dst, k) in &flows {
                    let new_flow = |input: Vec<u8>| Case {
                        input,
                        verdict: nat_verdict,
                        check: Check::NewFlow {
                            k,
                            snat: hook == Hook::Xdp,
                        },
                    };
                    let syn = new_flow(tcp(src, dst, SYN).build());
                    let first = test_run(fd, &syn.input, ifx, 1)?;
                    check(&syn, &first)?;
                    let ack = new_flow(tcp(src, dst, ACK).build());
                    let fwd = test_run(fd, &ack.input, ifx, 1)?;
                    check(&ack, &fwd)?;
                    ensure!(
                        first.data[26..38] == fwd.data[26..38],
                        "the ACK did not follow the SYN's flow"
                    );
                    let reply = if want_reply {
                        let reply = reply_of(&fwd.data, SYN | ACK);
                        let r = test_run(fd, &reply, ifx, 1)?;
                        Some((reply, r))
                    } else {
                        None
                    };
                    v.push((ack.input, fwd, reply));
                }
                Ok(v)
            })?;
            for ((src, dst, _), (ack, fwd, reply)) in flows.into_iter().zip(runs) {
                match reply {
                    None => cases.push(Case {
                        input: ack,
                        verdict: nat_verdict,
                        check: Check::Exact(fwd.data),
                    }),
                    Some((reply, r)) => {
                        ensure!(r.retval == nat_verdict, "reply verdict {}", r.retval as i32);
                        checksums(&r.data).map_err(|e| anyhow::anyhow!(e))?;
                        ensure!(
                            r.data[26..30] == dst.0 && r.data[34..36] == dst.1.to_be_bytes(),
                            "reply not from the frontend"
                        );
                        ensure!(
                            r.data[30..34] == src.0 && r.data[36..38] == src.1.to_be_bytes(),
                            "reply not to the client"
                        );
                        cases.push(Case {
                            input: reply,
                            verdict: nat_verdict,
                            check: Check::Exact(r.data),
                        });
                    }
                }
            }
        }
    }
    Ok(cases)
}

/// Runs `runs` test runs over `cases` (cycling), checking each; returns the durations (ns).
fn measure(bed: &Bed, hook: Hook, cases: &[Case], runs: usize) -> Result<Vec<f64>> {
    let (fd, ifx) = match hook {
        Hook::Tc => (bed.tc_fd, None),
        Hook::Xdp => (bed.xdp_fd, Some(bed.ifindex)),
    };
    bed.ns.run_in(|| {
        let mut d = Vec::with_capacity(runs);
        for i in 0..runs {
            let c = &cases[i % cases.len()];
            let out = test_run(fd, &c.input, ifx, 1)?;
            check(c, &out).with_context(|| format!("run {i}"))?;
            d.push(out.duration as f64);
        }
        Ok(d)
    })
}

/// Median duration of `runs` single runs, and the duration averaged over `repeat` iterations,
/// of program `fd` on `frame`, checking the verdict.
fn floor(
    bed: &Bed,
    fd: RawFd,
    ifx: Option<u32>,
    frame: &[u8],
    verdict: u32,
    runs: usize,
    repeat: u32,
) -> Result<(f64, f64)> {
    bed.ns.run_in(|| {
        let mut d = Vec::with_capacity(runs);
        for _ in 0..runs {
            let out = test_run(fd, frame, ifx, 1)?;
            ensure!(
                out.retval == verdict && out.data == frame,
                "floor program changed the packet"
            );
            d.push(out.duration as f64);
        }
        let avg = test_run(fd, frame, ifx, repeat)?;
        ensure!(avg.retval == verdict, "floor verdict");
        Ok((median(&d), avg.duration as f64))
    })
}

fn scale_label(services: usize, ct: usize) -> String {
    let s = format!("{} svc", crate::report::fmt_num(services as f64));
    if ct > 0 {
        format!("{s} + {} CT", crate::report::fmt_num(ct as f64))
    } else {
        s
    }
}

/// Samples of one scale point.
#[derive(Default)]
struct PointSamples {
    /// Per (hook, path): corrected and raw per-round medians.
    samples: Vec<Vec<f64>>,
    raw: Vec<Vec<f64>>,
    /// TC repeat=1, TC repeat=N, XDP repeat=1, XDP repeat=N.
    floors: [Vec<f64>; 4],
    checks: Vec<serde_json::Value>,
}

const PATHS: [Path; 4] = [Path::New, Path::Established, Path::Reply, Path::NonService];

/// One round at one scale point: the floors, then every path of both hooks.
fn round(bed: &mut Bed, opts: &Opts, probe: &[u8], ps: &mut PointSamples) -> Result<()> {
    let (tc1, tcn) = floor(
        bed,
        bed.tc_floor.as_raw_fd(),
        None,
        probe,
        TC_NEXT,
        opts.runs,
        opts.repeat,
    )?;
    let (x1, xn) = floor(
        bed,
        bed.xdp_floor.as_raw_fd(),
        Some(bed.ifindex),
        probe,
        XDP_PASS,
        opts.runs,
        opts.repeat,
    )?;
    for (i, v) in [tc1, tcn, x1, xn].into_iter().enumerate() {
        ps.floors[i].push(v);
    }
    for (h, hook) in [Hook::Tc, Hook::Xdp].into_iter().enumerate() {
        let overhead = if hook == Hook::Tc { tc1 - tcn } else { x1 - xn };
        for (p, path) in PATHS.iter().enumerate() {
            let cases = prepare(bed, hook, *path, opts.runs)?;
            let d = measure(bed, hook, &cases, opts.runs)?;
            let m = median(&d);
            ps.raw[h * PATHS.len() + p].push(m);
            ps.samples[h * PATHS.len() + p].push(m - overhead);
        }
        // The correction's check: the non-service packet is not changed, so it can also be
        // timed with repeat = N.
        let (fd, ifx) = match hook {
            Hook::Tc => (bed.tc_fd, None),
            Hook::Xdp => (bed.xdp_fd, Some(bed.ifindex)),
        };
        let frame = prepare(bed, hook, Path::NonService, 1)?.remove(0).input;
        let avg = bed.ns.run_in(|| test_run(fd, &frame, ifx, opts.repeat))?;
        ps.checks.push(json!({
            "hook": if hook == Hook::Tc { "tc" } else { "xdp" },
            "non_service_repeat_n_ns": avg.duration,
            "non_service_corrected_ns": ps.samples[h * PATHS.len() + 3].last(),
        }));
    }
    Ok(())
}

/// Every scale point has its own loaded object (maps filled once), and the rounds visit the
/// points in turn, so that bursts of load from elsewhere on the machine spread over all points
/// instead of skewing one.
pub fn run(opts: &Opts) -> Result<Vec<Figure>> {
    let t = Instant::now();
    let probe = tcp(([10, 244, 0, 9], 40000), ([10, 244, 3, 3], 8080), ACK).build();
    let mut points: Vec<(usize, usize)> = opts.scales.iter().map(|s| (*s, 0)).collect();
    if opts.ct_fill > 0 {
        points.push((*opts.scales.last().context("no scales")?, opts.ct_fill));
    }
    let mut beds = Vec::new();
    for &(services, ct) in &points {
        let mut bed = Bed::new()?;
        bed.grow(services)?;
        if ct > 0 {
            bed.fill_conntrack(ct)?;
        }
        let present = bed.conntrack_len();
        eprintln!(
            "bench A: {} ready (conntrack {present} entries), {:.1?}",
            scale_label(services, ct),
            t.elapsed()
        );
        let ps = PointSamples {
            samples: vec![Vec::new(); 2 * PATHS.len()],
            raw: vec![Vec::new(); 2 * PATHS.len()],
            ..Default::default()
        };
        beds.push((bed, present, ps));
    }
    for r in 0..opts.rounds {
        for (bed, _, ps) in beds.iter_mut() {
            round(bed, opts, &probe, ps)?;
        }
        eprintln!("bench A: round {r} done, {:.1?}", t.elapsed());
    }
    let mut figs = Vec::new();
    for (&(services, ct), (_, ct_present, ps)) in points.iter().zip(&beds) {
        let label = scale_label(services, ct);
        let scale_id = if ct > 0 {
            format!("{services}+ct{ct}")
        } else {
            services.to_string()
        };
        if figs.is_empty() {
            // The floors of the first point are the baselines (each point measures them
            // again: see the check figures' details).
            figs.push(
                Figure::new("a/tc/floor", "A", "TC empty program (floor)")
                    .unit("ns")
                    .samples(ps.floors[1].clone())
                    .extra(json!({"repeat": opts.repeat, "repeat1_median_ns": ps.floors[0]})),
            );
            figs.push(
                Figure::new("a/xdp/floor", "A", "XDP empty program (floor)")
                    .unit("ns")
                    .samples(ps.floors[3].clone())
                    .extra(json!({"repeat": opts.repeat, "repeat1_median_ns": ps.floors[2]})),
            );
        }
        for (h, (hook, hname)) in [("tc", "TC ClusterIP"), ("xdp", "XDP NodePort")]
            .into_iter()
            .enumerate()
        {
            for (p, path) in PATHS.iter().enumerate() {
                let i = h * PATHS.len() + p;
                figs.push(
                    Figure::new(
                        format!("a/{hook}/{}/{scale_id}", path.id()),
                        "A",
                        format!("{hname} {}", path.id()),
                    )
                    .scale(label.clone())
                    .unit("ns")
                    .samples(ps.samples[i].clone())
                    .vs("floor", format!("a/{hook}/floor"))
                    .extra(json!({
                        "raw_repeat1_median_ns": ps.raw[i],
                        "conntrack_entries_at_start": ct_present,
                        "runs_per_round": opts.runs,
                    })),
                );
            }
        }
        figs.push(
            Figure::new(
                format!("a/check/{scale_id}"),
                "A",
                "check: TC non-service timed with repeat=N",
            )
            .scale(label.clone())
            .unit("ns")
            .samples(
                ps.checks
                    .iter()
                    .filter(|c| c["hook"] == "tc")
                    .filter_map(|c| c["non_service_repeat_n_ns"].as_f64())
                    .collect(),
            )
            .vs("floor", "a/tc/floor")
            .extra(json!({
                "all": ps.checks,
                "floors_this_point_ns": {
                    "tc_repeat1": ps.floors[0], "tc_repeat_n": ps.floors[1],
                    "xdp_repeat1": ps.floors[2], "xdp_repeat_n": ps.floors[3],
                },
            })),
        );
    }
    eprintln!("bench A: done in {:.1?}", t.elapsed());
    Ok(figs)
}
