"""Check a sealrun run record with independent code: securesystemslib verifies
the DSSE signature, then the in-toto Statement v1 / SLSA Provenance v1 required
fields are checked here. Usage: record_check.py RECORD PUBKEY_PEM KEYID

Prints what it checked on success; exits 1 (with the reason on stderr) if the
envelope does not verify or a required field is missing.
"""
import json
import sys

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey

STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SLSA_V1 = "https://slsa.dev/provenance/v1"


def fail(msg: str) -> int:
    print(f"record_check: {msg}", file=sys.stderr)
    return 1


def main() -> int:
    record_path, pem_path, keyid = sys.argv[1:4]
    with open(record_path, encoding="utf-8") as f:
        env = Envelope.from_dict(json.load(f))
    with open(pem_path, "rb") as f:
        pub = load_pem_public_key(f.read())
    key = SSlibKey.from_crypto(pub, keyid=keyid)
    try:
        accepted = env.verify([key], 1)
    except Exception as e:  # VerificationError and friends
        return fail(f"does not verify: {e}")
    if keyid not in accepted:
        return fail(f"does not verify: {keyid} not among {list(accepted)}")
    if env.payload_type != "application/vnd.in-toto+json":
        return fail(f"payloadType is {env.payload_type!r}")

    st = json.loads(env.payload)
    if st.get("_type") != STATEMENT_V1:
        return fail(f"_type is {st.get('_type')!r}, expected {STATEMENT_V1}")
    if st.get("predicateType") != SLSA_V1:
        return fail(f"predicateType is {st.get('predicateType')!r}, expected {SLSA_V1}")
    subjects = st.get("subject")
    if not isinstance(subjects, list) or not subjects:
        return fail("subject is missing or empty")
    for s in subjects:
        d = s.get("digest", {}).get("sha256", "")
        if not s.get("name") or len(d) != 64:
            return fail(f"subject {s!r} lacks a name or a sha256 digest")

    pred = st.get("predicate") or {}
    bd = pred.get("buildDefinition")
    rd = pred.get("runDetails")
    if not isinstance(bd, dict):
        return fail("predicate.buildDefinition is missing")
    if not isinstance(rd, dict):
        return fail("predicate.runDetails is missing")
    build_type = bd.get("buildType")
    if not isinstance(build_type, str) or not build_type:
        return fail("buildDefinition.buildType is missing or empty")
    if not isinstance(bd.get("externalParameters"), dict):
        return fail("buildDefinition.externalParameters is missing or not an object")
    deps = bd.get("resolvedDependencies", [])
    if not isinstance(deps, list):
        return fail("buildDefinition.resolvedDependencies is not a list")
    for d in deps:
        if not (d.get("uri") or d.get("digest") or d.get("content")):
            return fail(f"resolvedDependency {d!r} has no uri, digest or content")
    builder = rd.get("builder")
    if not isinstance(builder, dict) or not builder.get("id"):
        return fail("runDetails.builder.id is missing or empty")
    meta = rd.get("metadata", {})
    if not isinstance(meta, dict):
        return fail("runDetails.metadata is not an object")

    print(f"OK signature keyid={keyid}")
    print(f"_type {st['_type']}")
    print(f"predicateType {st['predicateType']}")
    print(f"buildType {build_type}")
    print(f"builder.id {builder['id']}")
    print(f"subjects {len(subjects)}, resolvedDependencies {len(deps)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
