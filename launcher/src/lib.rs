//! The sealrun launcher.
