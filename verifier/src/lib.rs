//! Offline verification for sealrun: digests, manifests, keys, DSSE envelopes,
//! in-toto statements, trust policy, run records and the audit log.
//!
//! This crate is pure Rust with no platform-specific code and no `unsafe`, so an
//! auditor can build and run it on any machine.
#![forbid(unsafe_code)]
