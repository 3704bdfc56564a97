//! Minimal front end for profiling the sandbox without the launcher:
//! `sandbox-run [PROFILE] -- CMD ARGS...`.

use sealrun_sandbox::{ProfileRef, SandboxConfig, SandboxPlan};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args.iter().position(|a| a == "--").unwrap_or(0);
    let mut config = SandboxConfig::new(args[split + 1..].to_vec());
    if split > 0 {
        config.profile = ProfileRef::parse(&args[0]);
    }
    let t = std::time::Instant::now();
    let plan = SandboxPlan::build(config).expect("plan");
    if std::env::var_os("SEALRUN_TIMING").is_some() {
        eprintln!("plan built in {:?}", t.elapsed());
    }
    let outcome = plan.run().expect("run");
    std::process::exit(outcome.exit_status() as i32);
}
