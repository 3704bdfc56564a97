#!/usr/bin/env bash
# Seed corpus/<target>/ from the project's fixtures: the shipped sandbox profiles, the TOML
# examples in docs/, and the files of one `sealrun demo` run (specs, trust and gate policies,
# a signed dataset, run records and their statements, the audit log and its checkpoint).
# Needs a built `sealrun` (SEALRUN=path, default: the workspace's debug build); the demo runs
# jobs in the sandbox, so run it as root (as CI does). Without it, only the static seeds are made.
set -euo pipefail
cd "$(dirname "$0")"
root=$(cd .. && pwd)
sealrun=${SEALRUN:-$root/target/x86_64-unknown-linux-musl/debug/sealrun}
for t in fuzz_targets/*.rs; do mkdir -p "corpus/$(basename "$t" .rs)"; done
add() { # add TARGET FILE: copy FILE into the target's corpus under its digest
    local d; d=$(sha256sum "$2" | cut -c1-16)
    cp "$2" "corpus/$1/seed-$d"
}
for f in "$root"/sandbox-profiles/seccomp/*.json; do add seccomp_profile "$f"; done
for f in "$root"/sandbox-profiles/mounts/*.json; do add mount_profile "$f"; done
# ```toml blocks of the docs: job and pipeline specs, policies.
python3 - "$root/docs" corpus <<'PY'
import hashlib, os, re, sys
docs, corpus = sys.argv[1], sys.argv[2]
for name in sorted(os.listdir(docs)):
    text = open(os.path.join(docs, name), encoding="utf-8").read()
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        d = hashlib.sha256(block.encode()).hexdigest()[:16]
        for t in ("job_spec", "trust_policy", "gate_policy"):
            open(os.path.join(corpus, t, "doc-" + d), "w").write(block)
PY
printf 'a/b.txt' > corpus/manifest_path/seed-plain
printf '../x' > corpus/manifest_path/seed-dotdot
printf '{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","verificationMaterial":{},"dsseEnvelope":{"payload":"","payloadType":"application/vnd.in-toto+json","signatures":[]}}' \
    > corpus/model_signing_bundle/seed-shape
if [ ! -x "$sealrun" ]; then
    echo "seed: $sealrun not built: static seeds only" >&2
    exit 0
fi
demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
if ! "$sealrun" demo --dir "$demo/d" >/dev/null 2>&1; then
    echo "seed: sealrun demo failed (not root?): static seeds only" >&2
    exit 0
fi
d=$demo/d
add job_spec "$d/pipeline.toml"
add trust_policy "$d/trust.toml"
add gate_policy "$d/release-gate.toml"
add dsse_envelope "$d/dataset.sig"
add model_signing_bundle "$d/dataset.sig"
for r in "$d"/records/*.json "$d"/records/artifacts/*.json; do
    add dsse_envelope "$r"
    add run_record "$r"
    # The target signs its input as the statement: the statement itself is the best seed.
    python3 -c 'import base64, json, sys; sys.stdout.buffer.write(base64.b64decode(json.load(open(sys.argv[1]))["payload"]))' \
        "$r" > "$demo/st" && add run_record "$demo/st"
    python3 -c 'import base64, json, sys
st = json.loads(base64.b64decode(json.load(open(sys.argv[1]))["payload"]))
for s in st.get("subject", []): print(s["name"])' "$r" | while read -r p; do
        printf '%s' "$p" > "$demo/p" && add manifest_path "$demo/p"
    done
done
{ cat "$d/audit.log"; printf '\377'; cat "$d/audit.log.checkpoint"; } > "$demo/a" && add audit_log "$demo/a"
add audit_log "$d/audit.log"
echo "seed: corpus/ seeded from fixtures and a demo run"
