//! `sealrun run FILE`: load the spec, plan it, and run it as one job ([`crate::run`]) or as
//! a pipeline of jobs ([`crate::pipeline`]).
//!
//! Guarantees: everything that can be checked before an input is verified is checked here
//! (exit 64, no record), and the run's invocation id is chosen here, once.

use std::collections::BTreeMap;
use std::path::Path;

use crate::run::{new_invocation_id, run_spec, RunError, RunOptions, RunSummary};
use crate::spec::Spec;

/// Run the job or pipeline described by the spec at `spec_path`.
pub fn run_job(spec_path: &Path, opts: &RunOptions) -> Result<RunSummary, RunError> {
    let mut spec = Spec::load(spec_path)?;
    // Everything that can be checked before an input is verified (exit 64, no record).
    let invocation = new_invocation_id();
    crate::plan::prepare(&mut spec, &invocation)?;
    let opts = &RunOptions {
        invocation: Some(invocation),
        ..opts.clone()
    };
    match spec {
        Spec::Job(job) => run_spec(&job, opts, &BTreeMap::new()),
        Spec::Pipeline(p) => crate::pipeline::run_pipeline(&p, opts),
    }
}
