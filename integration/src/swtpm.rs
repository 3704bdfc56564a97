//! A real software TPM for tests: each [`Swtpm`] is its own `swtpm socket --tpm2` process,
//! with its own state folder, on free loopback ports, killed (and its folder removed) when the
//! value is dropped. Point `sealrun` at it with [`Swtpm::env`] (`SEALRUN_TCTI` and
//! `SEALRUN_TPM_STATE`), and tpm2-tools with [`Swtpm::tpm2`].

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running swtpm.
pub struct Swtpm {
    child: Child,
    /// The TPM command port (the control port is the next one).
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Whether swtpm is installed (tests that need it are `#[ignore]`d by their callers otherwise
/// and fail loudly when run).
pub fn installed() -> bool {
    Command::new("swtpm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Two consecutive free loopback ports (P, P+1), as far as a bind can tell.
fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let p = l.local_addr().expect("local addr").port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free loopback ports");
}

impl Swtpm {
    /// Start a fresh TPM (manufactured on first start, already `TPM2_Startup(CLEAR)`ed) and
    /// wait until its command port answers.
    pub fn start() -> Swtpm {
        assert!(
            installed(),
            "swtpm is not installed (Debian: apt-get install swtpm swtpm-tools)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        for _attempt in 0..5 {
            let port = free_port_pair();
            let state = dir.path().join("state");
            std::fs::create_dir_all(&state).expect("mkdir state");
            let child = Command::new("swtpm")
                .arg("socket")
                .arg("--tpm2")
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--tpmstate")
                .arg(format!("dir={}", state.display()))
                .args(["--flags", "not-need-init,startup-clear"])
                .arg("--log")
                .arg(format!("file={}", dir.path().join("swtpm.log").display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn swtpm");
            let mut child = child;
            if wait_ready(&mut child, port) {
                return Swtpm { child, port, dir };
            }
            // Lost the port to someone else: try another pair.
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "swtpm did not start ({})",
            dir.path().join("swtpm.log").display()
        );
    }

    /// `swtpm:host=127.0.0.1,port=P` (tss2 TCTI syntax, as `SEALRUN_TCTI` takes it).
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The folder for sealrun's PCR 23 event log of this TPM (`SEALRUN_TPM_STATE`).
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("sealrun-tpm")
    }

    /// Point `cmd` at this TPM.
    pub fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env("SEALRUN_TCTI", self.tcti())
            .env("SEALRUN_TPM_STATE", self.state_dir())
    }

    /// Run a tpm2-tools command (`tpm2_NAME ARGS`) against this TPM, in `dir`.
    pub fn tpm2(&self, dir: &Path, name: &str, args: &[&str]) -> Output {
        Command::new(format!("tpm2_{name}"))
            .args(args)
            .current_dir(dir)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()
            .unwrap_or_else(|e| panic!("cannot run tpm2_{name} (Debian: tpm2-tools): {e}"))
    }
}

fn wait_ready(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
