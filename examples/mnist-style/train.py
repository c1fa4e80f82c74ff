#!/usr/bin/env python3
"""Bring your own script: a softmax classifier on synthetic 8x8 digits, as an ablate `cmd` stage.

It speaks ablate's protocol through the `ablate` module (`import ablate`: standard library only;
ablate puts it on PYTHONPATH for a `cmd` stage, `pip install ablate` installs it):
  - `ablate.params(defaults)`: the hyperparameters ($ABLATE_PARAMS; the defaults on its own);
  - `ablate.log(step=epoch, ...)`: one line per epoch in the metrics log, which ablate shows on
    the progress line and stores with its step;
  - `ablate.checkpoint_dir()`: the state after each epoch goes there, and a new attempt (a retry,
    a rerun after Ctrl-C or a crash, a requeued Slurm task, a configuration early stopping lets
    go on) resumes from it;
  - `ablate.should_stop(epoch)`: under early stopping (`early_stop:`), the epoch to stop after:
    the checkpoint is saved, then the script exits;
  - `ablate.out_dir()` and `ablate.final(...)`: outputs and final metrics.
Run on its own (`python3 train.py`) it trains with the defaults, checkpoints to a temporary
directory and prints its metrics on stderr. Python's standard library only, so it runs anywhere;
put your PyTorch or JAX loop in its place.
"""
import json
import math
import os
import random
from operator import mul

import ablate

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
    p = ablate.params({"lr": 0.1, "batch": 32, "epochs": 10, "seed": 0, "n_train": 2000, "noise": 0.2})
    lr, batch_size, epochs, seed = float(p["lr"]), int(p["batch"]), int(p["epochs"]), int(p["seed"])

    train = digits(int(p["n_train"]), seed=1000 + seed, noise=p["noise"])
    val = digits(500, seed=999, noise=p["noise"])
    rng = random.Random(seed)
    w = [[rng.gauss(0, 0.01) for _ in range(65)] for _ in range(10)]
    start = 0
    state = os.path.join(ablate.checkpoint_dir(), "state.json")
    if os.path.exists(state):
        with open(state) as f:
            saved = json.load(f)
        w, start = saved["w"], saved["epoch"] + 1
        rng.setstate((saved["rng"][0], tuple(saved["rng"][1]), saved["rng"][2]))
        print(f"resuming after epoch {saved['epoch']}")

    for epoch in range(start, epochs):
        # A fresh permutation each epoch, from the RNG alone: a run resumed from the
        # checkpoint sees the batches an uninterrupted one would.
        order = list(range(len(train)))
        rng.shuffle(order)
        total = 0.0
        for b in range(0, len(order), batch_size):
            batch = [train[i] for i in order[b:b + batch_size]]
            grad = [[0.0] * 65 for _ in range(10)]
            for x, y in batch:
                q = softmax([sum(map(mul, row, x)) for row in w])
                total -= math.log(max(q[y], 1e-12))
                q[y] -= 1.0
                for k in range(10):
                    if q[k] != 0.0:
                        g, qk = grad[k], q[k]
                        grad[k] = [gi + qk * xi for gi, xi in zip(g, x)]
            scale = lr / len(batch)
            w = [[wi - scale * gi for wi, gi in zip(row, g)] for row, g in zip(w, grad)]
        val_loss, val_acc = evaluate(w, val)
        # The epoch as the step, so a resumed run's lines continue its curve.
        ablate.log(step=epoch, loss=total / len(train), val_loss=val_loss, val_acc=val_acc)
        tmp = state + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"epoch": epoch, "w": w, "rng": rng.getstate()}, f)
        os.replace(tmp, state)
        if ablate.should_stop(epoch):
            return  # early stopping's budget: resumed from the checkpoint if it goes on

    with open(ablate.out_dir() / "model.json", "w") as f:
        json.dump({"w": w, "params": p}, f)
    test_loss, test_acc = evaluate(w, digits(1000, seed=998, noise=p["noise"]))
    ablate.final(test_loss=test_loss, test_acc=test_acc)


if __name__ == "__main__":
    main()
