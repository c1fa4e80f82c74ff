"""A user's PyTorch training script, as `just bench` runs it in a `cmd` sweep (#21.3).

An MLP (64 → 256 → 256 → 10) trained with Adam on a fixed random batch of 512 for `steps`
steps. It leaves its thread count to PyTorch, as most scripts do: PyTorch starts one thread per
core unless OMP_NUM_THREADS (or torch.set_num_threads) says otherwise. Usage: bench_torch_cmd.py
[steps]. Prints the threads it used and its seconds as `{out}/metrics.json` when run by ablate.
"""
import json
import os
import sys
import time

import torch

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
torch.manual_seed(int(json.load(open(os.environ["ABLATE_PARAMS"]))["seed"]) if "ABLATE_PARAMS" in os.environ else 0)
model = torch.nn.Sequential(
    torch.nn.Linear(64, 256), torch.nn.ReLU(),
    torch.nn.Linear(256, 256), torch.nn.ReLU(),
    torch.nn.Linear(256, 10),
)
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x, y = torch.randn(512, 64), torch.randint(0, 10, (512,))
t0 = time.perf_counter()
for _ in range(steps):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
result = {"threads": torch.get_num_threads(), "seconds": time.perf_counter() - t0, "loss": loss.item()}
out = os.environ.get("ABLATE_OUT")
if out:
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(result, f)
else:
    print(json.dumps(result))
