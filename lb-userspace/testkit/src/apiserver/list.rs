//! List requests: one page of the objects of a kind, `limit` and `continue` tokens as the API
//! server writes them (base64url JSON), served from a snapshot of the list's resourceVersion.
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};

use super::filter::Filter;
use super::status;
use super::store::{Inner, Kind};

/// The response (status, JSON body) to a list request: one page of `limit` items (all when
/// there is no limit) from the start, or from where a `continue` token left off, as of the
/// resourceVersion of the list's first page.
pub(super) fn list_response(
    inner: &Inner,
    kind: Kind,
    filter: &Filter,
    query: &BTreeMap<String, String>,
) -> (u16, String) {
    let error =
        |code: u16, reason: &str, message: &str| (code, status(code, reason, message).to_string());
    let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
        None | Some(Ok(0)) => usize::MAX,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error(400, "BadRequest", "limit must be a non-negative integer"),
    };
    let counters = &inner.counters;
    let token = query.get("continue").filter(|t| !t.is_empty());
    let (rv, snap, start) = match token {
        Some(token) => {
            if query.get("resourceVersion").is_some_and(|v| !v.is_empty()) {
                return error(
                    400,
                    "BadRequest",
                    "specifying resource version is not allowed when using continue",
                );
            }
            let Some((rv, start)) = decode_continue(token) else {
                return error(
                    400,
                    "BadRequest",
                    &format!("continue key is not valid: {token:?}"),
                );
            };
            let st = inner.lock();
            match st.snapshots.get(&(rv, kind)) {
                Some(snap) if rv >= st.compacted => (rv, snap.clone(), start),
                _ => {
                    drop(st);
                    counters.expired_continues.fetch_add(1, Ordering::SeqCst);
                    return error(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent \
                         list result. You can start a new list without the continue parameter.",
                    );
                }
            }
        }
        None => {
            counters.lists[kind as usize].fetch_add(1, Ordering::SeqCst);
            let st = inner.lock();
            (st.rv, st.snapshot(kind), String::new())
        }
    };
    // etcd reads the keys from `start` on: the one after the previous page's last.
    let from = snap.partition_point(|(k, _)| k.as_str() < start.as_str());
    let mut rest = snap[from..].iter().filter(|(_, o)| filter.matches(o));
    let page: Vec<&(String, Arc<Value>)> = rest.by_ref().take(limit).collect();
    // Without selectors the server knows how many remain; with them it only knows whether.
    let exact = filter.labels.is_empty() && filter.fields.is_empty();
    let remaining = match exact {
        true => rest.count(),
        false => rest.next().is_some() as usize,
    };
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if remaining > 0 {
        let last = &page.last().expect("a page before the remaining items").0;
        meta["continue"] = encode_continue(rv, &format!("{last}\0")).into();
        if exact {
            meta["remainingItemCount"] = remaining.into();
        }
        if token.is_none() {
            inner.lock().keep_snapshot(kind, rv, snap.clone());
        }
    }
    let mut body = format!(
        "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{meta},\"items\":[",
        kind.name(),
        kind.api_version()
    );
    for (i, (_, o)) in page.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&o.to_string());
    }
    body.push_str("]}");
    counters.list_pages[kind as usize].fetch_add(1, Ordering::SeqCst);
    counters.max_page_items[kind as usize].fetch_max(page.len(), Ordering::SeqCst);
    (200, body)
}

/// A continue token as the API server writes it: base64url of
/// `{"v":"meta.k8s.io/v1","rv":RV,"start":KEY}`.
pub(super) fn encode_continue(rv: u64, start: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": start});
    base64url(token.to_string().as_bytes())
}

/// (rv, start key) of a continue token.
pub(super) fn decode_continue(token: &str) -> Option<(u64, String)> {
    let v: Value = serde_json::from_slice(&unbase64url(token)?).ok()?;
    if v["v"] != "meta.k8s.io/v1" {
        return None;
    }
    Some((v["rv"].as_u64()?, v["start"].as_str()?.to_string()))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url (Go's `base64.RawURLEncoding`).
pub(super) fn base64url(data: &[u8]) -> String {
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=c.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

pub(super) fn unbase64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').as_bytes().chunks(4) {
        if c.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, b) in c.iter().enumerate() {
            let v = B64.iter().position(|x| x == b)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..c.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}
