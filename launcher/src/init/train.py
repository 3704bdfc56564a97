"""Train a tiny logistic regression (Python standard library only).

Usage: python3 /code/train.py [CSV]   (default /inputs/points/points.csv)
Reads x1,x2,label rows; writes /out/model.json and /out/metrics.json.
The job's working directory is /out; its inputs are read-only under /inputs.
"""
import csv
import json
import math
import os
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "/inputs/points/points.csv"
with open(path, newline="") as f:
    rows = [(float(r["x1"]), float(r["x2"]), int(r["label"])) for r in csv.DictReader(f)]

w1 = w2 = b = 0.0
epochs = int(os.environ.get("EPOCHS", "200"))


def predict(x1, x2):
    return 1.0 / (1.0 + math.exp(-(w1 * x1 + w2 * x2 + b)))


for _ in range(epochs):
    g1 = g2 = gb = 0.0
    for x1, x2, y in rows:
        err = predict(x1, x2) - y
        g1, g2, gb = g1 + err * x1, g2 + err * x2, gb + err
    w1, w2, b = w1 - g1 / len(rows), w2 - g2 / len(rows), b - gb / len(rows)

accuracy = sum(1 for x1, x2, y in rows if (predict(x1, x2) > 0.5) == (y == 1)) / len(rows)
with open("/out/model.json", "w") as f:
    json.dump({"w1": w1, "w2": w2, "b": b}, f, indent=1)
with open("/out/metrics.json", "w") as f:
    json.dump({"accuracy": accuracy, "epochs": epochs, "rows": len(rows)}, f, indent=1)
print(f"trained on {len(rows)} rows: accuracy {accuracy:.3f}")
