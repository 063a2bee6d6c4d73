//! Unit tests of the configuration: the values (`values`), the two kinds of file (`files`),
//! and the flags, the stacking of layers and the effective configuration (`layers`).
mod files;
mod layers;
mod values;

use super::*;

/// Parses `text` as the file `name`; panics with the error.
fn parse(name: &str, text: &str) -> Parsed {
    parse_file(name, text).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

/// The error of parsing `text` as the file `name`.
fn parse_err(name: &str, text: &str) -> String {
    match parse_file(name, text) {
        Ok(p) => panic!("{name} was accepted: {p:?}"),
        Err(e) => format!("{e:#}"),
    }
}

/// Resolves `layers` with node name "node-a" from the environment.
fn resolved(layers: Vec<Settings>) -> Loaded {
    let (agent, logging) = resolve(layers, Some("node-a".into()), || {
        unreachable!("no hostname needed")
    })
    .unwrap();
    Loaded {
        agent,
        logging,
        warnings: Vec::new(),
    }
}
