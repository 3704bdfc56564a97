//! `sealrun exec` (placeholder until the sandbox lands).

/// Arguments of `sealrun exec`.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

/// Run the command in the sandbox; returns the exit status to use.
pub fn run(_args: ExecArgs) -> anyhow::Result<u8> {
    anyhow::bail!("sealrun exec is not available in this build")
}
