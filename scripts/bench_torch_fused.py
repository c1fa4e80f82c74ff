#!/usr/bin/env python3
"""PyTorch beside ablate's fused sweeps (`just bench --only sweeps`): K residual flows of the
sweep's size (dim 2, hidden 32, N Euler steps of one shared tanh field, 2 classes, batch 100,
Adam), trained three ways on the CPU, each for `SECONDS`:

  loop   K separate models, one after the other (what a sweep tool does by default);
  vmap   one torch.func ensemble: stack_module_state + vmap(grad_and_value(...)), one Adam over
         the stacked parameters (the JAX/functorch way);
  bmm    the members' products batched by hand with baddbmm (HFTA's way).

Usage: bench_torch_fused.py THREADS [K] [SECONDS] [STEPS]. Prints one JSON line per way:
{"way": ..., "members": K, "model_steps_per_s": ...}.
"""
import copy
import json
import sys
import time

import torch
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
K = int(sys.argv[2]) if len(sys.argv) > 2 else 32
SECONDS = float(sys.argv[3]) if len(sys.argv) > 3 else 4.0
N = int(sys.argv[4]) if len(sys.argv) > 4 else 16
torch.set_num_threads(threads)
DIM, HIDDEN, BATCH, CLASSES = 2, 32, 100, 2


class Flow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(DIM, HIDDEN)
        self.fc2 = torch.nn.Linear(HIDDEN, DIM)
        self.head = torch.nn.Linear(DIM, CLASSES)

    def forward(self, x):
        h = 1.0 / N
        for _ in range(N):
            x = x + h * self.fc2(torch.tanh(self.fc1(x)))
        return self.head(x)


torch.manual_seed(0)
models = [Flow() for _ in range(K)]
X = torch.randn(K, BATCH, DIM)
Y = torch.randint(0, CLASSES, (K, BATCH))
loss_fn = torch.nn.functional.cross_entropy

opts = [torch.optim.Adam(m.parameters(), lr=0.01) for m in models]


def loop_step():
    for i, m in enumerate(models):
        opts[i].zero_grad()
        loss_fn(m(X[i]), Y[i]).backward()
        opts[i].step()


params, buffers = stack_module_state(copy.deepcopy(models))
base = copy.deepcopy(models[0]).to("meta")


def member_loss(p, b, x, y):
    return loss_fn(functional_call(base, (p, b), (x,)), y)


ensemble_grad = vmap(grad_and_value(member_loss))
vopt = torch.optim.Adam(list(params.values()), lr=0.01)


def vmap_step():
    grads, _ = ensemble_grad(params, buffers, X, Y)
    for k, v in params.items():
        v.grad = grads[k]
    vopt.step()


def stacked(shape_out, shape_in):
    w = torch.empty(K, shape_in, shape_out).uniform_(-shape_in ** -0.5, shape_in ** -0.5)
    return w.requires_grad_()


W1, b1 = stacked(HIDDEN, DIM), torch.zeros(K, 1, HIDDEN, requires_grad=True)
W2, b2 = stacked(DIM, HIDDEN), torch.zeros(K, 1, DIM, requires_grad=True)
Wo, bo = stacked(CLASSES, DIM), torch.zeros(K, 1, CLASSES, requires_grad=True)
bopt = torch.optim.Adam([W1, b1, W2, b2, Wo, bo], lr=0.01)


def bmm_step():
    x, h = X, 1.0 / N
    for _ in range(N):
        x = x + h * torch.baddbmm(b2, torch.tanh(torch.baddbmm(b1, x, W1)), W2)
    logits = torch.baddbmm(bo, x, Wo)
    # The sum of the members' mean losses: each member's gradient is its own.
    loss = loss_fn(logits.reshape(-1, CLASSES), Y.reshape(-1)) * K
    bopt.zero_grad()
    loss.backward()
    bopt.step()


def rate(step):
    step()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < SECONDS:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


for way, step in [("loop", loop_step), ("vmap", vmap_step), ("bmm", bmm_step)]:
    r = rate(step)
    print(json.dumps({"way": way, "members": K, "threads": threads, "steps": N,
                      "model_steps_per_s": round(r * K, 1)}), flush=True)
