//! The sealrun sandbox.
