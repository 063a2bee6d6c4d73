//! Watch requests: a chunked stream of ADDED, MODIFIED, DELETED, BOOKMARK and ERROR events
//! from a resourceVersion on, and 410 Gone after a compaction.
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::filter::Filter;
use super::http::{chunk, start_stream};
use super::status;
use super::store::{ChangeType, Inner, Kind};

/// How long a watch waits for a change before it looks at its connection and deadline again.
const POLL: Duration = Duration::from_millis(100);
/// How often an idle watch with `allowWatchBookmarks` gets a BOOKMARK.
const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

fn event_line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = json!({"type": kind, "object": object})
        .to_string()
        .into_bytes();
    line.push(b'\n');
    line
}

/// Streams one watch. Ok(true): the response ended (timeout, or an ERROR event), the
/// connection may carry another request; Ok(false): it was dropped.
#[allow(clippy::too_many_arguments)]
pub(super) fn serve_watch(
    conn: &mut impl Write,
    inner: &Inner,
    epoch: u64,
    kind: Kind,
    filter: &Filter,
    from: &str,
    timeout: Option<Duration>,
    bookmarks: bool,
) -> io::Result<bool> {
    start_stream(conn)?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut st = inner.lock();
    let expire_epoch = st.expire_epoch;
    // "" and "0": start from now, with the current objects as ADDED events first.
    let (mut cursor, mut lines) = if from.is_empty() || from == "0" {
        let lines = st
            .objects
            .iter()
            .filter(|((k, _, _), o)| *k == kind && filter.matches(o))
            .map(|(_, o)| event_line("ADDED", o))
            .collect();
        (st.rv, lines)
    } else if let Ok(v) = from.parse::<u64>() {
        (v, Vec::new())
    } else {
        drop(st);
        let s = status(400, "BadRequest", &format!("bad resourceVersion {from:?}"));
        chunk(conn, &event_line("ERROR", &s))?;
        chunk(conn, b"")?;
        return Ok(true);
    };
    let mut last_sent = Instant::now();
    loop {
        if cursor < st.compacted || st.expire_epoch != expire_epoch {
            let gone = status(
                410,
                "Expired",
                &format!("too old resource version: {cursor} ({})", st.compacted),
            );
            drop(st);
            inner.counters.gone.fetch_add(1, Ordering::SeqCst);
            for l in &lines {
                chunk(conn, l)?;
            }
            chunk(conn, &event_line("ERROR", &gone))?;
            chunk(conn, b"")?;
            return Ok(true);
        }
        // The history is in resourceVersion order: skip what was sent without a scan.
        let from = st.history.partition_point(|c| c.rv <= cursor);
        for c in st.history[from..].iter().filter(|c| c.kind == kind) {
            let now = filter.matches(&c.new);
            let line = match c.what {
                ChangeType::Added if now => Some(("ADDED", &c.new)),
                ChangeType::Deleted if now => Some(("DELETED", &c.new)),
                ChangeType::Modified => {
                    match (c.old.as_ref().is_some_and(|o| filter.matches(o)), now) {
                        (true, true) => Some(("MODIFIED", &c.new)),
                        (false, true) => Some(("ADDED", &c.new)),
                        (true, false) => Some(("DELETED", &c.new)),
                        (false, false) => None,
                    }
                }
                _ => None,
            };
            if let Some((t, o)) = line {
                lines.push(event_line(t, o));
            }
        }
        cursor = st.rv;
        let now = Instant::now();
        if lines.is_empty() && bookmarks && now - last_sent >= BOOKMARK_EVERY {
            let bm = json!({
                "kind": kind.name(), "apiVersion": kind.api_version(),
                "metadata": {"resourceVersion": cursor.to_string()},
            });
            lines.push(event_line("BOOKMARK", &bm));
        }
        if !lines.is_empty() {
            drop(st);
            for l in lines.drain(..) {
                chunk(conn, &l)?;
            }
            conn.flush()?;
            last_sent = now;
            st = inner.lock();
            continue;
        }
        if deadline.is_some_and(|d| now >= d) {
            drop(st);
            chunk(conn, b"")?;
            return Ok(true);
        }
        if inner.conn_epoch.load(Ordering::SeqCst) != epoch {
            return Ok(false);
        }
        st = inner
            .changed
            .wait_timeout(st, POLL)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if inner.conn_epoch.load(Ordering::SeqCst) != epoch {
            return Ok(false);
        }
    }
}
