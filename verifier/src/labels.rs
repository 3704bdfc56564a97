//! Label propagation: what is derived from labelled data inherits its labels.
//!
//! Guarantees: `classification` of a derived artifact is the highest of its
//! inputs' (public < internal < confidential < restricted; an unknown value
//! ranks above all of them, so it is never silently lowered); an input without
//! a `classification` label ranks above every level too, so a derived artifact
//! of any unlabelled input carries no `classification` (unlabelled: no ceiling
//! and no `admit` list accepts it), never the level of its labelled inputs;
//! `pii` is `true`
//! if any input has `pii=true`, unless the stage is declared to remove PII; a
//! label only some inputs carry, or carried with different values, is dropped
//! (except the two above), so nothing is vouched for that was not. A stage may
//! declare that it removes `pii` (or drops a free-form label), never that it
//! lowers `classification`.

use std::collections::BTreeMap;

/// The label that orders data by sensitivity ([`CLASSIFICATION_ORDER`]).
pub const CLASSIFICATION: &str = "classification";

/// Classification levels, lowest first.
pub const CLASSIFICATION_ORDER: [&str; 4] = ["public", "internal", "confidential", "restricted"];

/// The rank of a known classification level (`public` = 0), `None` if unknown.
pub fn classification_rank(v: &str) -> Option<usize> {
    CLASSIFICATION_ORDER.iter().position(|c| *c == v)
}

fn rank(v: &str) -> usize {
    classification_rank(v).unwrap_or(CLASSIFICATION_ORDER.len())
}

/// Propagate the labels of `inputs` to what a stage derives from them.
/// `declassify` lists label keys the stage is declared to remove (e.g. `pii`).
pub fn propagate(
    inputs: &[BTreeMap<String, String>],
    declassify: &[String],
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if inputs.is_empty() {
        return out;
    }
    // Unlabelled outranks every level: one unlabelled input leaves the output
    // unlabelled (never the level of the labelled ones).
    let levels: Option<Vec<&String>> = inputs.iter().map(|l| l.get(CLASSIFICATION)).collect();
    if let Some(c) = levels.and_then(|v| v.into_iter().max_by_key(|v| rank(v))) {
        out.insert("classification".to_string(), c.clone());
    }
    if inputs
        .iter()
        .any(|l| l.get("pii").map(String::as_str) == Some("true"))
    {
        out.insert("pii".to_string(), "true".to_string());
    } else if inputs
        .iter()
        .all(|l| l.get("pii").map(String::as_str) == Some("false"))
    {
        out.insert("pii".to_string(), "false".to_string());
    }
    let first = &inputs[0];
    for (k, v) in first {
        if k == "classification" || k == "pii" {
            continue;
        }
        if inputs.iter().all(|l| l.get(k) == Some(v)) {
            out.insert(k.clone(), v.clone());
        }
    }
    for k in declassify {
        match k.as_str() {
            "pii" => {
                out.insert("pii".to_string(), "false".to_string());
            }
            // A classification can never be lowered by a stage's own declaration.
            "classification" => {}
            _ => {
                out.remove(k);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn highest_classification_and_sticky_pii() {
        let out = propagate(
            &[
                l(&[("classification", "internal"), ("pii", "true")]),
                l(&[("classification", "public"), ("pii", "false")]),
            ],
            &[],
        );
        assert_eq!(out, l(&[("classification", "internal"), ("pii", "true")]));
    }

    #[test]
    fn declared_removal_and_unknown_ranks_highest() {
        let out = propagate(
            &[
                l(&[("classification", "top-secret"), ("pii", "true")]),
                l(&[("classification", "restricted")]),
            ],
            &["pii".into()],
        );
        assert_eq!(
            out,
            l(&[("classification", "top-secret"), ("pii", "false")])
        );
    }

    #[test]
    fn an_unlabelled_input_outranks_every_level() {
        let out = propagate(
            &[l(&[("classification", "public")]), l(&[("pii", "false")])],
            &[],
        );
        assert_eq!(out.get("classification"), None, "{out:?}");
        let out = propagate(
            &[l(&[("classification", "restricted")]), l(&[])],
            &["classification".into()],
        );
        assert_eq!(out.get("classification"), None, "{out:?}");
    }
}
