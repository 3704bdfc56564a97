"""Stage 1, ingest: keep well-formed rows of the signed raw dataset.

Reads /inputs/raw/train/points.csv; writes /out/clean.csv and /out/ingest.json.
"""
import csv
import json

kept = dropped = 0
with open("/inputs/raw/train/points.csv", newline="") as src, open("/out/clean.csv", "w", newline="") as dst:
    out = csv.writer(dst)
    out.writerow(["x1", "x2", "label"])
    for row in csv.DictReader(src):
        try:
            x1, x2, y = float(row["x1"]), float(row["x2"]), int(row["label"])
        except (KeyError, TypeError, ValueError):
            dropped += 1
            continue
        if y not in (0, 1):
            dropped += 1
            continue
        out.writerow([x1, x2, y])
        kept += 1
with open("/out/ingest.json", "w") as f:
    json.dump({"kept": kept, "dropped": dropped}, f)
print(f"ingest: kept {kept} rows, dropped {dropped}")
