#!/usr/bin/env bash
# Overhead of the sandbox on a CPU training workload (issue #13): numpy matrix products plus a
# scikit-learn fit, timed *inside* the process (so interpreter start and sandbox start-up are not
# counted: what is compared is how fast the same computation runs), bare against
# `sealrun exec --profile python` in the same run. Rounds are interleaved in random order so drift
# and other load hit both alike; the headline is the median of the per-round ratios
# (sandboxed / bare; 1.00 = no overhead), with the ratio of the medians.
#
# Usage: benches/ml-overhead.sh [path/to/sealrun]   (default: the release build)
# Env: ROUNDS (default 10), PYTHON (an interpreter with numpy and scikit-learn; default python3
#      as found on PATH, resolved to its real path so the python profile binds its prefix).
# Needs: numpy, scikit-learn for $PYTHON (pip install numpy scikit-learn). Installs nothing.
set -euo pipefail

cd "$(dirname "$0")/.."
SEALRUN=${1:-target/x86_64-unknown-linux-musl/release/sealrun}
ROUNDS=${ROUNDS:-10}
PYTHON=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null)
PYTHON=${PYTHON_OVERRIDE:-$PYTHON}
if [[ ! -x $SEALRUN ]]; then
    echo "$SEALRUN not found — run: cargo build --release -p sealrun-launcher" >&2
    exit 2
fi
if ! "$PYTHON" -c 'import numpy, sklearn' 2>/dev/null; then
    echo "$PYTHON lacks numpy/scikit-learn — run: $PYTHON -m pip install numpy scikit-learn" >&2
    exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/train.py" <<'PY'
import time
import numpy as np
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
a = rng.normal(size=(1024, 1024)); X = rng.normal(size=(20000, 50)); y = (X[:, 0] > 0).astype(int)
t = time.perf_counter()
for _ in range(20):
    a = a @ a; a /= np.abs(a).max()
LogisticRegression(max_iter=300).fit(X, y)
print(time.perf_counter() - t)
PY
chmod 0644 "$work/train.py"; chmod 0755 "$work"

"$PYTHON" - "$SEALRUN" "$PYTHON" "$work" "$ROUNDS" <<'PY'
import random, statistics, subprocess, sys
sealrun, python, work, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cmds = {
    "bare": [python, f"{work}/train.py"],
    "sealrun": [sealrun, "exec", "--profile", "python", "--memory", "4G",
                "--ro", f"{work}/train.py:/job/train.py", "--", python, "/job/train.py"],
}
t = {k: [] for k in cmds}
ratios = []
for _ in range(rounds):
    order = list(cmds); random.shuffle(order)
    got = {}
    for k in order:
        out = subprocess.run(cmds[k], check=True, capture_output=True, text=True).stdout
        got[k] = float(out.strip().splitlines()[-1])
        t[k].append(got[k])
    ratios.append(got["sealrun"] / got["bare"])
mb, ms = statistics.median(t["bare"]), statistics.median(t["sealrun"])
q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
print(f"compute time, median of {rounds} rounds: bare {mb:.3f} s, sealrun exec --profile python {ms:.3f} s")
print(f"sandboxed/bare: median per-round ratio {statistics.median(ratios):.3f} "
      f"(quartiles {q[0]:.3f}-{q[2]:.3f}); ratio of medians {ms / mb:.3f}")
PY
