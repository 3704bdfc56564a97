#![no_main]
//! DSSE envelopes and in-toto statements: no panic; an envelope that parses writes back to one
//! that parses to the same envelope (parse ∘ write = identity); a statement is checked after a
//! real signature, so the statement checks are reached.
use libfuzzer_sys::fuzz_target;
use sealrun_verifier::dsse::{self, Envelope, IN_TOTO_PAYLOAD_TYPE};

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::parse(data) {
        let again = Envelope::parse(&env.to_json()).expect("a written envelope parses");
        assert_eq!(again.to_json(), env.to_json());
        let _ = env.verify(IN_TOTO_PAYLOAD_TYPE, |id| sealrun_fuzz::policy().lookup(id));
    }
    let _ = sealrun_verifier::statement::parse::<serde_json::Value>(
        data,
        "https://slsa.dev/provenance/v1",
    );
    let signed = dsse::sign(IN_TOTO_PAYLOAD_TYPE, data, sealrun_fuzz::key());
    let env = Envelope::parse(&signed.to_json()).expect("a signed envelope parses");
    let _ = env.verify(IN_TOTO_PAYLOAD_TYPE, |id| sealrun_fuzz::policy().lookup(id));
});
