//! HTTP/1.1 on the wire, the one hand-written implementation in the tree: reading a request
//! (its line, headers, a body it skips, and the query string decoded) and writing a response
//! head and body. The agent's health and metrics servers use it, and so does the test kit's API
//! server stand-in, which adds keep-alive and chunked watch streams on top.
use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};

/// A request as the servers route it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The target without its query string.
    pub path: String,
    /// The query parameters, `%XX` and `+` decoded.
    pub query: BTreeMap<String, String>,
    /// `Connection: close`: the connection ends after the response.
    pub close: bool,
}

/// Reads one request; `None` when the connection ended before a whole head arrived. A body
/// (`Content-Length`) is read and dropped: no route here takes one.
pub fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut content_length = 0usize;
    let mut close = false;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            return Ok(None);
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                content_length = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("connection") && v.trim().eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    if content_length > 0 {
        io::copy(
            &mut reader.by_ref().take(content_length as u64),
            &mut io::sink(),
        )?;
    }
    Ok(Some(parse_request_line(&line, close)))
}

/// `GET /path?k=v HTTP/1.1` → method, path and decoded query.
fn parse_request_line(line: &str, close: bool) -> Request {
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/");
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let query = q
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect();
    Request {
        method,
        path: path.to_string(),
        query,
        close,
    }
}

/// URL query decoding: `%XX` and `+`.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The reason phrase of the status codes the servers send.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// How a response's body is framed.
pub enum Body<'a> {
    /// The whole body, with its `Content-Length`; `head_only` sends the head alone (HEAD).
    Full { data: &'a [u8], head_only: bool },
    /// A stream of [`chunk`]s (`Transfer-Encoding: chunked`), written by the caller.
    Chunked,
}

/// Writes a response: the status line, `Content-Type`, the framing headers, `Connection: close`
/// when `close`, and the body when there is one.
pub fn respond(
    conn: &mut impl Write,
    status: u16,
    content_type: &str,
    body: Body<'_>,
    close: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nX-Content-Type-Options: nosniff\r\n",
        reason(status)
    );
    match body {
        Body::Full { data, .. } => head.push_str(&format!("Content-Length: {}\r\n", data.len())),
        Body::Chunked => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    if let Body::Full {
        data,
        head_only: false,
    } = body
    {
        conn.write_all(data)?;
    }
    conn.flush()
}

/// One chunk of a chunked body; an empty one ends the body.
pub fn chunk(conn: &mut impl Write, data: &[u8]) -> io::Result<()> {
    write!(conn, "{:x}\r\n", data.len())?;
    conn.write_all(data)?;
    conn.write_all(b"\r\n")
}
