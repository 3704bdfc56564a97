"""Verify a sealrun DSSE envelope with an independent implementation:
securesystemslib's Envelope.verify. Usage: dsse_verify.py ENVELOPE PUBKEY_PEM KEYID

Prints the statement's predicateType on success; exits 1 if it does not verify.
"""
import json
import sys

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey


def main() -> int:
    envelope_path, pem_path, keyid = sys.argv[1:4]
    with open(envelope_path, encoding="utf-8") as f:
        env = Envelope.from_dict(json.load(f))
    with open(pem_path, "rb") as f:
        pub = load_pem_public_key(f.read())
    key = SSlibKey.from_crypto(pub, keyid=keyid)
    try:
        accepted = env.verify([key], 1)
    except Exception as e:  # VerificationError and friends
        print(f"does not verify: {e}", file=sys.stderr)
        return 1
    assert keyid in accepted
    statement = json.loads(env.payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    print(statement["predicateType"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
