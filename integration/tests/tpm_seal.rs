//! Sealing to the TPM and the launcher's measurement (#15, the API #16 builds on), against a
//! real swtpm: a secret sealed with `SealPolicy::launcher` unseals under this launcher's
//! measurement, and not once PCR 23 moves on, not for another launcher build, not on another
//! TPM; and `sealrun tpm enroll` never takes over a foreign key at its AK handle.

use sealrun_integration::swtpm::Swtpm;
use sealrun_launcher::tpm::measure::{self, EventLog};
use sealrun_launcher::tpm::{seal, unseal, SealPolicy, SealedBlob, Tcti, Tpm, TpmError};

fn open(s: &Swtpm) -> Tpm {
    Tpm::open_at(&Tcti::parse(&s.tcti()).unwrap()).expect("open swtpm")
}

#[test]
fn sealed_identity_unseals_only_under_the_launcher_measurement() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let launcher = measure::launcher_digest().unwrap();
    let secret = [7u8; 32];
    let blob = seal(&mut tpm, &secret, &SealPolicy::launcher(&launcher)).unwrap();
    // The blob is plain data: it survives a JSON round trip.
    let blob: SealedBlob = serde_json::from_str(&serde_json::to_string(&blob).unwrap()).unwrap();

    let mut log = EventLog::lock(&sw.state_dir()).unwrap();
    log.measure_launcher(&mut tpm, &launcher, "test").unwrap();
    assert_eq!(&unseal(&mut tpm, &blob).unwrap()[..], &secret);
    // Unsealing twice in the same state is deterministic.
    assert_eq!(&unseal(&mut tpm, &blob).unwrap()[..], &secret);

    // A run extends PCR 23 further (trust policy, plan): the secret no longer unseals.
    log.extend(&mut tpm, "plan", &[9u8; 32], "test").unwrap();
    match unseal(&mut tpm, &blob) {
        Err(TpmError::PolicyMismatch { .. }) => {}
        other => panic!("unsealed after PCR 23 changed: {other:?}"),
    }
    drop(log);

    // The launcher's own helper re-measures (reset, launcher) under the lock and unseals.
    let got = measure::unseal_under_launcher(&mut tpm, &blob, &sw.state_dir(), "test").unwrap();
    assert_eq!(&got[..], &secret);
    let log = EventLog::lock(&sw.state_dir()).unwrap();
    let events = log.since_last_reset();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].what, "launcher");
    assert_eq!(
        events[1].digest.as_deref(),
        Some(hex::encode(launcher).as_str())
    );
}

#[test]
fn another_launcher_build_or_another_tpm_cannot_unseal() {
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let launcher = measure::launcher_digest().unwrap();
    let blob = seal(&mut tpm, b"identity", &SealPolicy::launcher(&launcher)).unwrap();

    // A different launcher binary measures a different digest.
    let mut log = EventLog::lock(&sw.state_dir()).unwrap();
    log.measure_launcher(&mut tpm, &[0x42; 32], "other-build")
        .unwrap();
    let e = unseal(&mut tpm, &blob).unwrap_err();
    assert!(matches!(e, TpmError::PolicyMismatch { .. }), "{e}");
    assert!(e.to_string().contains("TPM_RC_POLICY_FAIL"), "{e}");
    drop(log);

    // Another TPM (another owner seed) cannot even load the blob.
    let other = Swtpm::start();
    let mut tpm2 = open(&other);
    let mut log2 = EventLog::lock(&other.state_dir()).unwrap();
    log2.measure_launcher(&mut tpm2, &launcher, "t").unwrap();
    let e = unseal(&mut tpm2, &blob).unwrap_err();
    assert!(
        matches!(
            e,
            TpmError::Command {
                command: "Load",
                ..
            }
        ),
        "another TPM loaded the blob: {e:?}"
    );

    // Boot PCRs can be added to the policy; a secret bound to them unseals while they hold.
    let mut log = EventLog::lock(&sw.state_dir()).unwrap();
    log.measure_launcher(&mut tpm, &launcher, "t").unwrap();
    let p = SealPolicy::launcher(&launcher)
        .with_current(&mut tpm, &[0, 1, 2, 3, 4, 5, 6, 7])
        .unwrap();
    assert_eq!(p.pcrs.len(), 9);
    let blob = seal(&mut tpm, b"x", &p).unwrap();
    assert_eq!(&unseal(&mut tpm, &blob).unwrap()[..], b"x");
}

#[test]
fn the_policy_digest_is_what_the_tpm_computes() {
    // A trial session's TPM2_PolicyPCR with the expected PCR digest gives the same policy as
    // SealPolicy::digest computes in software.
    let sw = Swtpm::start();
    let mut tpm = open(&sw);
    let p = SealPolicy::launcher(&[0x11; 32]);
    let v = hex::decode(&p.pcrs[0].sha256).unwrap();
    let pcr_digest = <sha2::Sha256 as sha2::Digest>::digest(&v);
    let s = tpm.start_policy_session(true).unwrap();
    tpm.policy_pcr(s, &[23], &pcr_digest).unwrap();
    let d = tpm.policy_get_digest(s).unwrap();
    tpm.flush(s);
    assert_eq!(d, p.digest().unwrap().to_vec());
}

#[test]
fn enroll_never_takes_over_a_foreign_key_at_the_ak_handle() {
    // Someone else's storage key made persistent at sealrun's AK handle (with tpm2-tools).
    let sw = Swtpm::start();
    let dir = tempfile::tempdir().unwrap();
    let made = sw.tpm2(
        dir.path(),
        "createprimary",
        &["-C", "o", "-G", "ecc", "-c", "p.ctx"],
    );
    assert!(
        made.status.success(),
        "{}",
        sealrun_integration::text(&made)
    );
    let ev = sw.tpm2(
        dir.path(),
        "evictcontrol",
        &["-C", "o", "-c", "p.ctx", "0x81010023"],
    );
    assert!(ev.status.success(), "{}", sealrun_integration::text(&ev));
    sw.tpm2(dir.path(), "flushcontext", &["-t"]);
    let out = sealrun_integration::run(
        sw.env(
            std::process::Command::new(sealrun_integration::bin("sealrun"))
                .current_dir(dir.path())
                .args(["tpm", "enroll", "--out", "ak.pub"]),
        ),
    );
    let t = sealrun_integration::text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("not a restricted signing key"), "{t}");
    assert!(!dir.path().join("ak.pub").exists());
}
