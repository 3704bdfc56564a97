"""Logistic regression by gradient descent, Python standard library only.

Reads /inputs/features/features.csv (x1,x2,label), writes /out/model.json
and /out/metrics.json. Run by `sealrun demo` inside the sandbox.
"""
import csv
import json
import math
import os

rows = []
with open("/inputs/features/features.csv", newline="") as f:
    for r in csv.DictReader(f):
        rows.append((float(r["x1"]), float(r["x2"]), int(r["label"])))

w1 = w2 = b = 0.0
rate = float(os.environ.get("LEARNING_RATE", "0.5"))
epochs = int(os.environ.get("EPOCHS", "300"))


def predict(x1, x2):
    z = w1 * x1 + w2 * x2 + b
    return 1.0 / (1.0 + math.exp(-z))


for epoch in range(epochs):
    g1 = g2 = gb = 0.0
    for x1, x2, y in rows:
        err = predict(x1, x2) - y
        g1 += err * x1
        g2 += err * x2
        gb += err
    n = len(rows)
    w1 -= rate * g1 / n
    w2 -= rate * g2 / n
    b -= rate * gb / n

correct = sum(1 for x1, x2, y in rows if (predict(x1, x2) > 0.5) == (y == 1))
loss = -sum(
    y * math.log(max(predict(x1, x2), 1e-12)) + (1 - y) * math.log(max(1 - predict(x1, x2), 1e-12))
    for x1, x2, y in rows
) / len(rows)
with open("/out/model.json", "w") as f:
    json.dump({"w1": w1, "w2": w2, "b": b}, f, indent=1)
with open("/out/metrics.json", "w") as f:
    json.dump({"accuracy": correct / len(rows), "log_loss": loss, "epochs": epochs, "rows": len(rows)}, f, indent=1)
print(f"trained on {len(rows)} rows: accuracy {correct / len(rows):.3f}, log loss {loss:.4f}")
