#!/usr/bin/env python3
"""Compares the final metrics of two runs of one pipeline (e.g. on the CPU and on a GPU).

Usage: compare_runs.py A/runs.parquet B/runs.parquet [--ablate BIN] [--by-label]

Reads both tables with `ablate table` (no Parquet library needed), pairs instances by key (the
device is never part of a key, so a CPU and a GPU run of the same experiment share them), and
prints, per stage and metric, how many instances both have, the largest and mean absolute
difference of their final values, and the instance with the largest difference. Per-step
metrics (training curves) are left out. Exit 1 if the runs share no instance.

--by-label pairs instances by stage and label (`lm[objective=sc,…]`) instead of key: for two
runs of one pipeline across an op's version bump, which changes the keys of that op's instances
and of everything downstream of them, but not what they compute from.
"""
import collections
import os
import subprocess
import sys


def read(path, ablate):
    out = subprocess.run([ablate, "table", path], check=True, capture_output=True, text=True).stdout
    lines = out.splitlines()
    header, rule = lines[0], lines[1]
    # Columns are the runs of dashes in the rule line.
    spans, start = [], None
    for i, c in enumerate(rule + " "):
        if c == "-" and start is None:
            start = i
        elif c != "-" and start is not None:
            spans.append((start, i))
            start = None
    names = [header[a:b].strip() for a, b in spans]
    rows = []
    for line in lines[2:]:
        # A cell is the text under its column's dashes (right-aligned numbers end there).
        cells = [line[a:b].strip() for a, b in spans]
        rows.append(dict(zip(names, cells)))
    return rows


def finals(rows, by_label=False):
    """(stage, instance, metric) -> (value, label, device) for metrics without a step; the
    instance is its key, or its label with `by_label`."""
    out = {}
    for r in rows:
        if r.get("step") or not r.get("value"):
            continue
        try:
            v = float(r["value"])
        except ValueError:
            continue
        instance = r.get("label", "") if by_label else r["instance"]
        out[(r["stage"], instance, r["metric"])] = (v, r.get("label", ""), r.get("device", ""))
    return out


def main():
    args = sys.argv[1:]
    ablate = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "release", "ablate")
    if "--ablate" in args:
        i = args.index("--ablate")
        ablate = args[i + 1]
        del args[i : i + 2]
    by_label = "--by-label" in args
    if by_label:
        args.remove("--by-label")
    if len(args) != 2:
        sys.exit(__doc__)
    a, b = (finals(read(p, ablate), by_label) for p in args)
    devices = lambda m: sorted({d for _, _, d in m.values()})
    print(f"A: {args[0]} ({', '.join(devices(a))}); B: {args[1]} ({', '.join(devices(b))})")
    shared = sorted(set(a) & set(b))
    if not shared:
        sys.exit("the two runs share no instance (different pipelines, or different keys)")
    by = collections.defaultdict(list)
    for k in shared:
        by[k[0], k[2]].append((abs(a[k][0] - b[k][0]), a[k][0], b[k][0], a[k][1]))
    print(f"{len(shared)} final metrics in both, {len(set(a) - set(b))} only in A, {len(set(b) - set(a))} only in B\n")
    print(f"| stage | metric | n | max abs diff | mean abs diff | worst instance (A → B) |")
    print(f"|---|---|--:|--:|--:|---|")
    for (stage, metric), ds in sorted(by.items()):
        worst = max(ds)
        mean = sum(d for d, *_ in ds) / len(ds)
        print(f"| {stage} | {metric} | {len(ds)} | {worst[0]:.4g} | {mean:.4g} | {worst[3]} ({worst[1]:.4g} → {worst[2]:.4g}) |")


if __name__ == "__main__":
    main()
