//! The HTTPS mode of the stand-in: a CA and a server certificate made at start (rcgen), the
//! rustls server configuration (ring provider), the bearer token the requests must carry, and
//! [`TlsConn`], a server connection over a blocking `TcpStream` that sends every write at once.
use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection};

/// The DNS names an in-cluster client may use for the API server, besides its address.
const DNS_NAMES: &[&str] = &[
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// What an HTTPS stand-in holds: its server configuration, the CA's PEM (what clients trust),
/// and the token a request must present as `Authorization: Bearer TOKEN`.
pub(super) struct Tls {
    pub(super) config: Arc<ServerConfig>,
    pub(super) ca_pem: String,
    pub(super) token: String,
}

impl Tls {
    /// A fresh CA (its name unique, so that another stand-in's CA is an unknown issuer, not a
    /// bad signature), a server certificate it signs for `addr` and [`DNS_NAMES`], and a token.
    pub(super) fn new(addr: Ipv4Addr) -> Result<Tls> {
        let token = new_token();
        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .context("api stand-in: CA certificate parameters")?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("podlb API stand-in CA {token}"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().context("api stand-in: CA key")?;
        let ca = ca_params
            .self_signed(&ca_key)
            .context("api stand-in: self-signing the CA")?;

        let names: Vec<String> = DNS_NAMES.iter().map(|n| n.to_string()).collect();
        let mut params =
            CertificateParams::new(names).context("api stand-in: server certificate names")?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(addr)));
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let key = KeyPair::generate().context("api stand-in: server key")?;
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .context("api stand-in: signing the server certificate")?;

        let chain = vec![cert.der().clone(), CertificateDer::from(ca.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("api stand-in: TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("api stand-in: TLS server certificate")?;
        Ok(Tls {
            config: Arc::new(config),
            ca_pem: ca.pem(),
            token,
        })
    }

    /// Whether the head of a request (`raw`, its lines as read) carries this server's token.
    pub(super) fn authorized(&self, raw: &[u8]) -> bool {
        bearer(raw).is_some_and(|t| t == self.token)
    }
}

/// A token unique to this process and server: not a secret, a value a wrong client lacks.
fn new_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!("standin-{}-{n}-{nanos:x}", std::process::id())
}

/// The token of the `Authorization: Bearer TOKEN` header in a request head.
pub(super) fn bearer(raw: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(raw).ok()?;
    text.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    })
}

/// A TLS server connection over a blocking socket. Unlike `rustls::StreamOwned`, a write never
/// reads: it encrypts and sends at once, so a watch's events leave as they are written and a
/// write never waits on the peer.
pub(super) struct TlsConn {
    conn: ServerConnection,
    sock: TcpStream,
}

impl TlsConn {
    /// Completes the handshake on `sock`.
    pub(super) fn accept(config: Arc<ServerConfig>, mut sock: TcpStream) -> io::Result<TlsConn> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        Ok(TlsConn { conn, sock })
    }

    fn send(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        self.sock.flush()
    }
}

impl Read for TlsConn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        rustls::Stream::new(&mut self.conn, &mut self.sock).read(buf)
    }
}

impl Write for TlsConn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.conn.writer().write(buf)?;
        self.send()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.writer().flush()?;
        self.send()
    }
}

impl Drop for TlsConn {
    fn drop(&mut self) {
        self.conn.send_close_notify();
        let _ = self.send();
    }
}

/// A `BufRead` that keeps a copy of what is consumed through it, so that the headers of a
/// request that `podlb::http::wire::read_request` parsed can be looked at too.
pub(super) struct Recording<R> {
    inner: R,
    pub(super) seen: Vec<u8>,
}

impl<R> Recording<R> {
    pub(super) fn new(inner: R) -> Self {
        Recording {
            inner,
            seen: Vec::new(),
        }
    }

    pub(super) fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: BufRead> Read for Recording<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Recording<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amt: usize) {
        // fill_buf returns the data already buffered (what `amt` counts) without reading.
        if amt > 0 {
            if let Ok(buf) = self.inner.fill_buf() {
                let n = amt.min(buf.len());
                self.seen.extend_from_slice(&buf[..n]);
            }
        }
        self.inner.consume(amt)
    }
}
