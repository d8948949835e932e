"""Writes a Vega-Lite spec of fine-tuning curves (training MSE per step, log scale) from run
folders' tune/train.csv and the authors' logged curve, for figures in the README; render it to SVG
with `node scripts/vega_export.mjs FOLDER`.

usage: python3 scripts/tune_curves.py OUT.vl.json AUTHORS_TUNE_LOSS.txt LABEL=RUN_DIR [LABEL=RUN_DIR ...]
"""
import csv
import json
import sys


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    out, authors, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
    values = []
    with open(authors) as f:
        for step, line in enumerate(f):
            values.append({"run": "authors' log (their Adam continued)", "step": step, "mse": float(line.split()[0])})
    for item in runs:
        label, folder = item.split("=", 1)
        with open(f"{folder}/tune/train.csv") as f:
            for row in csv.DictReader(f):
                values.append({"run": label, "step": int(row["step"]), "mse": float(row["mse"])})
    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "title": "Fine-tuning: training MSE per step",
        "width": 640,
        "height": 300,
        "data": {"values": values},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": "fine-tuning step"},
            "y": {"field": "mse", "type": "quantitative", "title": "training MSE (log)", "scale": {"type": "log"}},
            "color": {"field": "run", "type": "nominal", "title": None, "legend": {"orient": "bottom", "columns": 1, "labelLimit": 600}},
        },
    }
    with open(out, "w") as f:
        json.dump(spec, f, indent=1)


if __name__ == "__main__":
    main()
