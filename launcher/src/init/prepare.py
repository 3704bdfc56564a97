"""Stage 1 of pipeline.toml: keep the well-formed rows of the signed dataset.

Reads /inputs/points/points.csv; writes /out/clean.csv.
"""
import csv

kept = 0
with open("/inputs/points/points.csv", newline="") as src, open("/out/clean.csv", "w", newline="") as dst:
    out = csv.writer(dst)
    out.writerow(["x1", "x2", "label"])
    for row in csv.DictReader(src):
        try:
            x1, x2, y = float(row["x1"]), float(row["x2"]), int(row["label"])
        except (KeyError, TypeError, ValueError):
            continue
        out.writerow([x1, x2, y])
        kept += 1
print(f"prepare: kept {kept} rows")
