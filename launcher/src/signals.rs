//! Passing the launcher's signals on to the sandbox: the one way `sealrun run` and
//! `sealrun exec` do it.
//!
//! Guarantees: the signals are caught from before the sandbox starts ([`Forwarder::catch`]),
//! so one that comes while it starts is held and passed on once the command runs, never the
//! launcher's death (which would leave a run without its record); the first one reaches the
//! sandbox init as itself (the init forwards it to the command: Ctrl-C is SIGINT, so Python
//! raises KeyboardInterrupt); a second one, of any caught kind, kills the whole tree
//! (SIGKILL); what came is noted in the record's [`Interrupt`] form.

use sealrun_sandbox::{Outcome, SandboxError, SandboxHandle};
use sealrun_verifier::record::Interrupt;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The signals a run passes on.
pub const RUN_SIGNALS: &[i32] = &[libc::SIGTERM, libc::SIGINT];
/// The signals `sealrun exec` passes on (a terminal's hang-up and quit too).
pub const EXEC_SIGNALS: &[i32] = &[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// Caught signals, waiting to be passed on.
pub struct Forwarder {
    streams: Vec<(i32, Signal)>,
}

fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        _ => "signal",
    }
}

impl Forwarder {
    /// Catch `signals` from now on (inside a tokio runtime).
    pub fn catch(signals: &[i32]) -> std::io::Result<Forwarder> {
        let streams = signals
            .iter()
            .map(|&s| Ok((s, signal(SignalKind::from_raw(s))?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Forwarder { streams })
    }

    /// The next caught signal.
    async fn next(&mut self) -> i32 {
        let waits = self.streams.iter_mut().map(|(sig, s)| {
            let sig = *sig;
            Box::pin(async move {
                s.recv().await;
                sig
            })
        });
        futures_select_all(waits).await
    }

    /// Wait for the sandbox to end, passing each caught signal on to it (see the module's
    /// guarantees); `interrupt` says what came and whether the tree was killed.
    pub async fn wait(
        &mut self,
        handle: SandboxHandle,
        interrupt: &mut Interrupt,
    ) -> Result<Result<Outcome, SandboxError>, tokio::task::JoinError> {
        let pid = handle.pid();
        let mut waiter = tokio::task::spawn_blocking(move || handle.wait());
        loop {
            let got = tokio::select! {
                r = &mut waiter => return r,
                got = self.next() => got,
            };
            let sig = if interrupt.signals.is_empty() {
                got
            } else {
                libc::SIGKILL
            };
            interrupt.signals.push(name(got).to_string());
            interrupt.killed |= sig == libc::SIGKILL;
            // SAFETY: signalling the sandbox init, our child, which is not reaped until
            // `waiter` completes (and this loop returns on that).
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// The first of `futures` to finish.
async fn futures_select_all<F: std::future::Future<Output = i32> + Unpin>(
    futures: impl Iterator<Item = F>,
) -> i32 {
    let mut futures: Vec<F> = futures.collect();
    std::future::poll_fn(move |cx| {
        for f in futures.iter_mut() {
            if let std::task::Poll::Ready(v) = std::future::Future::poll(std::pin::Pin::new(f), cx)
            {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}
