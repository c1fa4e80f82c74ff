"""PyTorch reference for `just bench`: the same MLP-ResNet flow as ablate's train.flow benchmark.

Linear lift 2→32, 10 residual steps x ← x + h·(W2·tanh(W1·x + b1) + b2) with h = 1/10 and
hidden 64 (one field shared by all steps, or one per step), linear head 32→2, softmax
cross-entropy, Adam, batch 256, f32 on the CPU with a fixed thread count, or on a GPU.
Usage: bench_torch.py [threads] [seconds] [cpu|cuda]. Prints one JSON line per weight mode:
{"weights": ..., "steps_per_s": ..., "threads": ..., "device": ...}.
"""
import json
import sys
import time

import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
device = torch.device(sys.argv[3] if len(sys.argv) > 3 else "cpu")
torch.set_num_threads(threads)
torch.set_default_device(device)


def sync():
    """Waits for queued GPU work, so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize()

torch.manual_seed(0)


class Flow(torch.nn.Module):
    def __init__(self, shared, steps=10, dim=32, hidden=64):
        super().__init__()
        self.lift = torch.nn.Linear(2, dim)
        n = 1 if shared else steps
        self.w1 = torch.nn.ModuleList(torch.nn.Linear(dim, hidden) for _ in range(n))
        self.w2 = torch.nn.ModuleList(torch.nn.Linear(hidden, dim) for _ in range(n))
        self.head = torch.nn.Linear(dim, 2)
        self.steps, self.shared, self.h = steps, shared, 1.0 / steps

    def forward(self, x):
        x = self.lift(x)
        for k in range(self.steps):
            i = 0 if self.shared else k
            x = x + self.h * self.w2[i](torch.tanh(self.w1[i](x)))
        return self.head(x)


for weights in ("shared", "unshared"):
    model = Flow(weights == "shared")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(256, 2)
    y = (x[:, 0] * x[:, 1] > 0).long()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(50):
        step()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
        if n % 50 == 0:
            sync()
    sync()
    rate = n / (time.perf_counter() - t0)
    print(json.dumps({"weights": weights, "steps_per_s": round(rate, 1), "threads": threads,
                      "device": str(device)}), flush=True)
