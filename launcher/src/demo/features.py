"""Stage 2, features: standardise x1 and x2 (zero mean, unit variance).

Reads /inputs/clean/clean.csv; writes /out/features.csv and /out/scaler.json.
"""
import csv
import json
import math

rows = []
with open("/inputs/clean/clean.csv", newline="") as f:
    for r in csv.DictReader(f):
        rows.append((float(r["x1"]), float(r["x2"]), int(r["label"])))
n = len(rows)
scaler = {}
for i, name in enumerate(["x1", "x2"]):
    mean = sum(r[i] for r in rows) / n
    std = math.sqrt(sum((r[i] - mean) ** 2 for r in rows) / n) or 1.0
    scaler[name] = {"mean": mean, "std": std}
with open("/out/features.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["x1", "x2", "label"])
    for x1, x2, y in rows:
        w.writerow([(x1 - scaler["x1"]["mean"]) / scaler["x1"]["std"], (x2 - scaler["x2"]["mean"]) / scaler["x2"]["std"], y])
with open("/out/scaler.json", "w") as f:
    json.dump(scaler, f, indent=1)
print(f"features: standardised {n} rows")
