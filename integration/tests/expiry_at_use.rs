//! Expiry is judged at the time of use (issue #11, item 24): `sealrun-verify
//! chain` checks a dataset signature's expiry against the consuming run's
//! signed `startedOn`; one that expired after the run still verifies, with a
//! warning, instead of breaking every chain built on it.

use std::time::Duration;

use sealrun_integration::{ok, sealrun, text, verify, RunFixture, RUN_SANDBOX};
use time::format_description::well_known::Rfc3339;

#[test]
fn a_signature_that_expired_after_the_run_warns_but_verifies() {
    let f = RunFixture::new();
    let expires = (time::OffsetDateTime::now_utc() + Duration::from_secs(4))
        .replace_nanosecond(0)
        .unwrap();
    let expires = expires.format(&Rfc3339).unwrap();
    ok(sealrun(
        f.dir(),
        &[
            "sign",
            "data",
            "--key",
            "reg.key",
            "--kind",
            "dataset",
            "--label",
            "classification=internal",
            "--expires",
            &expires,
            "--out",
            "data.sig",
        ],
    ));
    let job = f.job("j", "open('/out/m', 'w').write('m')\n", &[], RUN_SANDBOX);
    ok(f.run(&job));
    let rec = f.record("j").display().to_string();
    let chain = || {
        verify(
            f.dir(),
            &[
                "chain",
                &rec,
                "--records",
                "records",
                "--trust",
                "trust.toml",
            ],
        )
    };
    ok(chain());
    // Wait until the signature has expired.
    while time::OffsetDateTime::now_utc()
        <= time::OffsetDateTime::parse(&expires, &Rfc3339).unwrap()
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1100));
    // A new run (into an empty output folder) is refused ...
    std::fs::remove_dir_all(f.dir().join("j-out")).unwrap();
    let again = f.run(&job);
    assert_eq!(again.status.code(), Some(65), "{}", text(&again));
    // ... but the chain of the run that used it while valid still verifies.
    let out = chain();
    let t = ok(out);
    assert!(
        t.contains(&format!(
            "signature expired at {expires}, after the run used it"
        )) && t.contains("warning"),
        "{t}"
    );
}
