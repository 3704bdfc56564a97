//! The sealrun launcher: key generation, signing, the sandboxed `exec`, and
//! (with the job runner) verified, attested training runs.
//!
//! The binary `sealrun` is a thin front end over this library.

pub mod demo;
pub mod exec;
pub mod keyfile;
pub mod sign;
