//! Progress bars for long hashing work: shown on a terminal, silent otherwise.
//!
//! Guarantees: nothing is drawn unless stderr is a terminal, so logs and pipes
//! never receive control sequences.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-count progress bar on stderr, or `None` when stderr is not a terminal
/// or `quiet` is set.
pub fn bytes_bar(message: &str, quiet: bool) -> Option<ProgressBar> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb.set_message(message.to_string());
    Some(pb)
}
