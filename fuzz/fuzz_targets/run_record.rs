#![no_main]
//! Run records as `record`, `chain`, `gate` and `aibom` read them: the fuzzed bytes are the
//! statement, signed with a trusted key, so every check behind the signature is reached.
//! Nothing panics.
use libfuzzer_sys::fuzz_target;
use sealrun_verifier::dsse::{self, IN_TOTO_PAYLOAD_TYPE};
use sealrun_verifier::record::{parse_unverified, verify_record};

fuzz_target!(|data: &[u8]| {
    if data.len() > sealrun_fuzz::MAX_INPUT {
        return;
    }
    let _ = parse_unverified(data);
    let bytes = dsse::sign(IN_TOTO_PAYLOAD_TYPE, data, sealrun_fuzz::key()).to_json();
    let Ok(vr) = verify_record("fuzz", &bytes, sealrun_fuzz::policy(), None) else {
        return;
    };
    let _ = (
        vr.produced(),
        vr.succeeded(),
        vr.unattested(),
        vr.output_summary(),
    );
    let _ = (vr.python_packages(), vr.python_environment(), vr.gpus());
    let _ = (
        vr.outputs_manifest(),
        vr.subjects_digest(),
        vr.code_digest(),
    );
    // The chain of one record, as `chain`, `gate` and `aibom` walk it.
    let dir = sealrun_fuzz::scratch().join("records");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("r.json"), &bytes);
    if let Ok(index) = sealrun_verifier::chain::Index::from_dir(&dir) {
        let _ =
            sealrun_verifier::chain::verify_chain("fuzz", &bytes, &index, sealrun_fuzz::policy());
    }
});
