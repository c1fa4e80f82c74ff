#!/usr/bin/env python3
"""Bring your own script: a softmax classifier on synthetic 8x8 digits, as an ablate `cmd` stage.

Nothing here depends on ablate but five conventions, each optional:
  - the hyperparameters come as flags (`args: flags` in the pipeline: `--lr=0.1 --seed=0 ...`);
    they are also in the JSON file $ABLATE_PARAMS;
  - one JSON line per epoch is appended to $ABLATE_METRICS (`{out}/metrics.jsonl`): ablate shows
    it on the progress line and stores every value with its step;
  - the state after each epoch goes to $ABLATE_CHECKPOINT, and a new attempt (a retry, a rerun
    after Ctrl-C or a crash, a requeued Slurm task, a configuration early stopping lets go on)
    resumes from it;
  - under early stopping (`early_stop:`), $ABLATE_STOP_AT is the step to stop after: the
    checkpoint is saved, then the script exits;
  - outputs go to $ABLATE_OUT (the cache entry); `metrics.json` there adds final metrics.
Python's standard library only, so it runs anywhere; put your PyTorch or JAX loop in its place.
"""
import argparse
import json
import math
import os
import random
from operator import mul

# A 3x5 pixel font: the digits drawn into 8x8 images at a random place, with pixel noise.
FONT = [
    "111101101101111", "010110010010111", "111001111100111", "111001111001111", "101101111001001",
    "111100111001111", "111100111101111", "111001010010010", "111101111101111", "111101111001111",
]


def digits(n, seed, noise):
    rng = random.Random(seed)
    data = []
    for _ in range(n):
        label = rng.randrange(10)
        image = [0.0] * 64
        dx, dy = rng.randrange(2, 4), rng.randrange(1, 3)
        for i, bit in enumerate(FONT[label]):
            if bit == "1":
                image[(dy + i // 3) * 8 + dx + i % 3] = 1.0
        data.append(([min(1.0, max(0.0, p + rng.gauss(0, noise))) for p in image] + [1.0], label))
    return data


def softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    s = sum(e)
    return [v / s for v in e]


def evaluate(w, data):
    loss, right = 0.0, 0
    for x, y in data:
        p = softmax([sum(map(mul, row, x)) for row in w])
        loss -= math.log(max(p[y], 1e-12))
        right += max(range(10), key=p.__getitem__) == y
    return loss / len(data), right / len(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n_train", type=int, default=2000)
    ap.add_argument("--noise", type=float, default=0.2)
    args = ap.parse_args()
    out = os.environ.get("ABLATE_OUT", ".")
    checkpoint = os.environ.get("ABLATE_CHECKPOINT")
    stop_at = os.environ.get("ABLATE_STOP_AT")
    log_path = os.environ.get("ABLATE_METRICS", os.path.join(out, "metrics.jsonl"))

    train = digits(args.n_train, seed=1000 + args.seed, noise=args.noise)
    val = digits(500, seed=999, noise=args.noise)
    rng = random.Random(args.seed)
    w = [[rng.gauss(0, 0.01) for _ in range(65)] for _ in range(10)]
    start = 0
    state = os.path.join(checkpoint, "state.json") if checkpoint else None
    if state and os.path.exists(state):
        with open(state) as f:
            saved = json.load(f)
        w, start = saved["w"], saved["epoch"] + 1
        rng.setstate((saved["rng"][0], tuple(saved["rng"][1]), saved["rng"][2]))
        print(f"resuming after epoch {saved['epoch']}")

    with open(log_path, "a") as log:
        for epoch in range(start, args.epochs):
            # A fresh permutation each epoch, from the RNG alone: a run resumed from the
            # checkpoint sees the batches an uninterrupted one would.
            order = list(range(len(train)))
            rng.shuffle(order)
            total = 0.0
            for b in range(0, len(order), args.batch):
                batch = [train[i] for i in order[b:b + args.batch]]
                grad = [[0.0] * 65 for _ in range(10)]
                for x, y in batch:
                    p = softmax([sum(map(mul, row, x)) for row in w])
                    total -= math.log(max(p[y], 1e-12))
                    p[y] -= 1.0
                    for k in range(10):
                        if p[k] != 0.0:
                            g, pk = grad[k], p[k]
                            grad[k] = [gi + pk * xi for gi, xi in zip(g, x)]
                scale = args.lr / len(batch)
                w = [[wi - scale * gi for wi, gi in zip(row, g)] for row, g in zip(w, grad)]
            val_loss, val_acc = evaluate(w, val)
            line = {"step": epoch, "loss": total / len(train), "val_loss": val_loss, "val_acc": val_acc}
            log.write(json.dumps(line) + "\n")
            log.flush()
            if state:
                tmp = state + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({"epoch": epoch, "w": w, "rng": rng.getstate()}, f)
                os.replace(tmp, state)
            if stop_at is not None and epoch >= int(stop_at):
                return  # early stopping's budget: resumed from the checkpoint if it goes on

    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump({"w": w, "args": vars(args)}, f)
    test_loss, test_acc = evaluate(w, digits(1000, seed=998, noise=args.noise))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump({"test_loss": test_loss, "test_acc": test_acc}, f)


if __name__ == "__main__":
    main()
