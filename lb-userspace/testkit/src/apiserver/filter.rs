//! The `labelSelector` and `fieldSelector` of a request, parsed, and whether an object
//! matches them.
use std::collections::BTreeMap;

use serde_json::Value;

/// The label and field selectors of a request.
pub(super) struct Filter {
    pub(super) namespace: Option<String>,
    pub(super) labels: Vec<LabelTerm>,
    pub(super) fields: Vec<(String, bool, String)>,
}

pub(super) enum LabelTerm {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
}

impl Filter {
    pub(super) fn parse(
        query: &BTreeMap<String, String>,
        namespace: Option<String>,
    ) -> Result<Filter, String> {
        let mut labels = Vec::new();
        for term in query
            .get("labelSelector")
            .map_or("", String::as_str)
            .split(',')
        {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            labels.push(if let Some((k, v)) = term.split_once("!=") {
                LabelTerm::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                LabelTerm::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = term.strip_prefix('!') {
                LabelTerm::NotExists(k.trim().into())
            } else if term.contains(' ') || term.contains('(') {
                return Err(format!("unsupported label selector term {term:?}"));
            } else {
                LabelTerm::Exists(term.into())
            });
        }
        let mut fields = Vec::new();
        for term in query
            .get("fieldSelector")
            .map_or("", String::as_str)
            .split(',')
        {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            let (k, eq, v) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, true, v)
            } else {
                return Err(format!("invalid field selector {term:?}"));
            };
            if !matches!(k, "metadata.name" | "metadata.namespace") {
                return Err(format!("field label not supported: {k}"));
            }
            fields.push((k.to_string(), eq, v.to_string()));
        }
        Ok(Filter {
            namespace,
            labels,
            fields,
        })
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        if let Some(ns) = &self.namespace {
            if meta["namespace"].as_str() != Some(ns) {
                return false;
            }
        }
        let label = |k: &str| meta["labels"][k].as_str();
        let labels_ok = self.labels.iter().all(|t| match t {
            LabelTerm::Exists(k) => label(k).is_some(),
            LabelTerm::NotExists(k) => label(k).is_none(),
            LabelTerm::Equals(k, v) => label(k) == Some(v),
            LabelTerm::NotEquals(k, v) => label(k) != Some(v),
        });
        let fields_ok = self.fields.iter().all(|(k, eq, v)| {
            let actual = meta[k.trim_start_matches("metadata.")]
                .as_str()
                .unwrap_or("");
            (actual == v) == *eq
        });
        labels_ok && fields_ok
    }
}
