//! in-toto Statement v1: the signed payload of every sealrun envelope.
//!
//! Guarantees: a statement is accepted only with `_type` exactly
//! `https://in-toto.io/Statement/v1`, at least one subject, and every subject
//! digest a well-formed hex value; the predicate is left to its own module.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::dsse::{parse_json, DsseError};

/// The statement type URI.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// A subject: a name and its digests by algorithm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

/// An in-toto Statement v1 with a typed predicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement<P> {
    #[serde(rename = "_type")]
    pub type_: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: P,
}

impl<P: Serialize> Statement<P> {
    /// A statement over `subject` with `predicate`.
    pub fn new(subject: Vec<Subject>, predicate_type: &str, predicate: P) -> Self {
        Statement {
            type_: STATEMENT_TYPE.to_string(),
            subject,
            predicate_type: predicate_type.to_string(),
            predicate,
        }
    }

    /// Canonical bytes to sign (compact JSON, fields in declaration order).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("statement serializes")
    }
}

/// Parse a statement's envelope-independent shape, then its predicate as `P`,
/// checking `_type` and `predicateType` before the predicate is decoded.
pub fn parse<P: for<'de> Deserialize<'de>>(
    payload: &[u8],
    predicate_type: &str,
) -> Result<Statement<P>, DsseError> {
    let raw: Statement<Box<serde_json::value::RawValue>> =
        parse_json(payload).map_err(|e| prefix(e, "payload"))?;
    if raw.type_ != STATEMENT_TYPE {
        return Err(DsseError::Malformed {
            json_path: "payload$._type".into(),
            reason: format!("expected {STATEMENT_TYPE:?}, found {:?}", raw.type_),
        });
    }
    if raw.predicate_type != predicate_type {
        return Err(DsseError::Malformed {
            json_path: "payload$.predicateType".into(),
            reason: format!(
                "expected {predicate_type:?}, found {:?}",
                raw.predicate_type
            ),
        });
    }
    if raw.subject.is_empty() {
        return Err(DsseError::Malformed {
            json_path: "payload$.subject".into(),
            reason: "no subjects".into(),
        });
    }
    for (i, s) in raw.subject.iter().enumerate() {
        for (alg, d) in &s.digest {
            if d.is_empty() || hex::decode(d).is_err() {
                return Err(DsseError::Malformed {
                    json_path: format!("payload$.subject[{i}].digest.{alg}"),
                    reason: "not a hex digest".into(),
                });
            }
        }
    }
    let predicate: P = parse_json(raw.predicate.get().as_bytes()).map_err(|e| match e {
        DsseError::Malformed { json_path, reason } => DsseError::Malformed {
            json_path: format!("payload$.predicate{}", json_path.trim_start_matches('$')),
            reason,
        },
        e => e,
    })?;
    Ok(Statement {
        type_: raw.type_,
        subject: raw.subject,
        predicate_type: raw.predicate_type,
        predicate,
    })
}

fn prefix(e: DsseError, what: &str) -> DsseError {
    match e {
        DsseError::Malformed { json_path, reason } => DsseError::Malformed {
            json_path: format!("{what}{json_path}"),
            reason,
        },
        e => e,
    }
}
