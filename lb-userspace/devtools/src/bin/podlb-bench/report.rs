//! Figures, their statistics and ratios, and the two outputs: a Markdown table and JSON.
use std::fmt::Write as _;

use serde_json::{json, Value};

/// One measured figure: one sample per round.
#[derive(Clone, Debug)]
pub struct Figure {
    /// Stable identifier, e.g. `a/xdp/established/1000`.
    pub id: String,
    /// `A`, `B` or `C`.
    pub section: &'static str,
    /// What was measured, e.g. `XDP NodePort established`.
    pub name: String,
    /// Scale column (e.g. `1,000 svc`), may be empty.
    pub scale: String,
    pub unit: &'static str,
    pub samples: Vec<f64>,
    /// Baselines this figure is divided by: (label, id of the baseline figure).
    pub baselines: Vec<(String, String)>,
    /// Free-form details kept in the JSON (raw values, counts, checks).
    pub extra: Value,
}

impl Figure {
    pub fn new(id: impl Into<String>, section: &'static str, name: impl Into<String>) -> Self {
        Figure {
            id: id.into(),
            section,
            name: name.into(),
            scale: String::new(),
            unit: "",
            samples: Vec::new(),
            baselines: Vec::new(),
            extra: Value::Null,
        }
    }
    pub fn scale(mut self, s: impl Into<String>) -> Self {
        self.scale = s.into();
        self
    }
    pub fn unit(mut self, u: &'static str) -> Self {
        self.unit = u;
        self
    }
    pub fn samples(mut self, s: Vec<f64>) -> Self {
        self.samples = s;
        self
    }
    pub fn vs(mut self, label: impl Into<String>, id: impl Into<String>) -> Self {
        self.baselines.push((label.into(), id.into()));
        self
    }
    pub fn extra(mut self, v: Value) -> Self {
        self.extra = v;
        self
    }
    pub fn median(&self) -> f64 {
        median(&self.samples)
    }
    pub fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }
    pub fn max(&self) -> f64 {
        self.samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The `q`-quantile (0..=1) of `v`, nearest rank.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

pub struct Report {
    pub figures: Vec<Figure>,
}

impl Report {
    pub fn get(&self, id: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.id == id)
    }

    /// Median of `f` over the median of each of its baselines.
    pub fn ratios(&self, f: &Figure) -> Vec<(String, f64)> {
        f.baselines
            .iter()
            .filter_map(|(label, id)| {
                self.get(id)
                    .map(|b| (label.clone(), f.median() / b.median()))
            })
            .collect()
    }

    pub fn json(&self, meta: Value) -> Value {
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                let ratios: Vec<Value> = self
                    .ratios(f)
                    .into_iter()
                    .map(|(label, r)| json!({"to": label, "value": r}))
                    .collect();
                json!({
                    "id": f.id,
                    "section": f.section,
                    "name": f.name,
                    "scale": f.scale,
                    "unit": f.unit,
                    "median": f.median(),
                    "min": f.min(),
                    "max": f.max(),
                    "rounds": f.samples.len(),
                    "samples": f.samples,
                    "ratios": ratios,
                    "details": f.extra,
                })
            })
            .collect();
        json!({"meta": meta, "figures": figures})
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for (section, title) in [
            ("A", "A. Datapath cost per packet (BPF_PROG_TEST_RUN)"),
            ("B", "B. End to end, real traffic in the namespace test bed"),
            (
                "C",
                "C. Control plane (kubernetes source via the API stand-in; manifests source)",
            ),
        ] {
            let figs: Vec<&Figure> = self
                .figures
                .iter()
                .filter(|f| f.section == section)
                .collect();
            if figs.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n#### {title}\n");
            match section {
                "B" => self.table_b(&mut out, &figs),
                _ => self.table_plain(&mut out, &figs),
            }
            let note = match section {
                "A" => "ns per packet, timed one run at a time (repeat=1) with the kernel timer's own cost \
                        (floor at repeat=1 minus floor at repeat=N) subtracted; ratios to the empty \
                        program of the same hook. 1,000 flows per path over min(S, 1,000) Services.",
                "B" => "Ratios are podlb ÷ the other plane: above 1 is better for rates and throughput, \
                        below 1 is better for latency.",
                _ => "kubernetes rows: a fresh `podlb agent --kubeconfig` per round against the in-process \
                      API server stand-in (paged lists), endpoint changes through the API spanning 3 resync \
                      intervals per round; \"bench\" latencies are observed in the pinned maps, \"agent's \
                      event-to-map\" is its own histogram. manifests rows: files renamed into the watched \
                      directory. Baselines: the same Services as kube-proxy-shaped rules in a bare \
                      namespace, and the issue 4 targets.",
            };
            let _ = writeln!(out, "\n{note}");
        }
        out
    }

    fn table_plain(&self, out: &mut String, figs: &[&Figure]) {
        let _ = writeln!(out, "| figure | scale | median (min–max) | ratio |");
        let _ = writeln!(out, "|---|---|---|---|");
        for f in figs {
            let ratios = self
                .ratios(f)
                .iter()
                .map(|(l, r)| format!("{} {l}", fmt_ratio(*r)))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                f.name,
                f.scale,
                fmt_value(f),
                if ratios.is_empty() {
                    "—".into()
                } else {
                    ratios
                }
            );
        }
    }

    /// Section B: one row per (metric, scale), planes side by side. Figure ids are
    /// `b/{plane}/{metric}/{scale}`.
    fn table_b(&self, out: &mut String, figs: &[&Figure]) {
        let _ = writeln!(
            out,
            "| metric | services | podlb | iptables | nftables | podlb/iptables | podlb/nftables |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        let mut rows: Vec<(String, String)> = Vec::new();
        for f in figs {
            let parts: Vec<&str> = f.id.split('/').collect();
            let key = (parts[2].to_string(), parts[3].to_string());
            if !rows.contains(&key) {
                rows.push(key);
            }
        }
        for (metric, scale) in rows {
            let cell = |plane: &str| -> (String, Option<&Figure>) {
                match self.get(&format!("b/{plane}/{metric}/{scale}")) {
                    Some(f) => (fmt_value(f), Some(f)),
                    None => ("—".into(), None),
                }
            };
            let (p, pf) = cell("podlb");
            let (i, _) = cell("iptables");
            let (n, _) = cell("nftables");
            let r = |label: &str| {
                pf.and_then(|f| self.ratios(f).into_iter().find(|(l, _)| l == label))
                    .map(|(_, r)| fmt_ratio(r))
                    .unwrap_or_else(|| "—".into())
            };
            let name = pf
                .map(|f| f.name.clone())
                .or_else(|| {
                    figs.iter()
                        .find(|f| f.id.contains(&format!("/{metric}/")))
                        .map(|f| f.name.clone())
                })
                .unwrap_or(metric.clone());
            let sc = figs
                .iter()
                .find(|f| f.id.ends_with(&format!("/{metric}/{scale}")))
                .map(|f| f.scale.clone())
                .unwrap_or(scale.clone());
            let _ = writeln!(
                out,
                "| {name} | {sc} | {p} | {i} | {n} | {} | {} |",
                r("iptables"),
                r("nftables")
            );
        }
    }
}

pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    let s = if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    // Thousands separators for the integer part.
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

fn fmt_value(f: &Figure) -> String {
    format!(
        "{} {} ({}–{})",
        fmt_num(f.median()),
        f.unit,
        fmt_num(f.min()),
        fmt_num(f.max())
    )
}

fn fmt_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}
