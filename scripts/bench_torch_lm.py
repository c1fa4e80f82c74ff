"""PyTorch reference for `examples/lm_bench.rs`: the same `train.lm` transformers, trained the same way.

Byte vocabulary (362), d_model 128, 2 layers, 4 heads, d_ff 512, batch 32; tied embeddings, learned
positions, pre-LN blocks (LayerNorm eps 1e-5), GELU (tanh approximation), attention written out
with additive -inf masks (causal decoder self-attention; encoder and cross-attention over the
valid encoder tokens), a final LayerNorm, logits = h·tok_embᵀ. AdamW (β 0.9/0.98, ε 1e-8, weight
decay 0.01 on weight matrices and embeddings only), global gradient-norm clipping at 1.0, linear
warm-up over 100 steps. f32 on the CPU with a fixed thread count, or on a GPU (`cuda`).

Decoder: rows of 128 tokens, every position weighted. Encdec: 64 encoder + 64 decoder tokens.
Usage: bench_torch_lm.py [threads] [seconds] [decoder|encdec|both] [cpu|cuda]
Prints one JSON line per architecture, with the keys lm_bench prints.
"""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
which = sys.argv[3] if len(sys.argv) > 3 else "both"
device = torch.device(sys.argv[4] if len(sys.argv) > 4 else "cpu")
torch.set_num_threads(threads)
torch.set_default_device(device)
torch.manual_seed(0)

VOCAB, D, LAYERS, HEADS, FF, SEQ, ROWS = 362, 128, 2, 4, 512, 128, 32
WARMUP_STEPS = 2


class Attention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (torch.nn.Linear(D, D) for _ in range(4))

    def forward(self, h, src, mask):
        b, t, _ = h.shape
        s = src.shape[1]
        hd = D // HEADS
        q = self.q(h).view(b, t, HEADS, hd).transpose(1, 2)
        k = self.k(src).view(b, s, HEADS, hd).transpose(1, 2)
        v = self.v(src).view(b, s, HEADS, hd).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + mask
        ctx = torch.softmax(scores, dim=-1) @ v
        return self.o(ctx.transpose(1, 2).reshape(b, t, D))


class Block(torch.nn.Module):
    def __init__(self, cross):
        super().__init__()
        self.ln1, self.attn = torch.nn.LayerNorm(D), Attention()
        self.cross = (torch.nn.LayerNorm(D), Attention()) if cross else None
        if cross:
            self.lnx, self.xattn = self.cross
        self.ln2 = torch.nn.LayerNorm(D)
        self.ff1, self.ff2 = torch.nn.Linear(D, FF), torch.nn.Linear(FF, D)

    def forward(self, x, mask, enc=None, enc_mask=None):
        h = self.ln1(x)
        x = x + self.attn(h, h, mask)
        if self.cross is not None:
            x = x + self.xattn(self.lnx(x), enc, enc_mask)
        return x + self.ff2(F.gelu(self.ff1(self.ln2(x)), approximate="tanh"))


class Stack(torch.nn.Module):
    def __init__(self, cross):
        super().__init__()
        self.blocks = torch.nn.ModuleList(Block(cross) for _ in range(LAYERS))
        self.ln_f = torch.nn.LayerNorm(D)

    def forward(self, x, mask, enc=None, enc_mask=None):
        for b in self.blocks:
            x = b(x, mask, enc, enc_mask)
        return self.ln_f(x)


class Lm(torch.nn.Module):
    def __init__(self, encdec):
        super().__init__()
        self.tok_emb = torch.nn.Parameter(torch.randn(VOCAB, D) * 0.02)
        self.pos_emb = torch.nn.Parameter(torch.randn(SEQ, D) * 0.02)
        self.encoder = Stack(False) if encdec else None
        self.decoder = Stack(encdec)

    def embed(self, tokens):
        return self.tok_emb[tokens] + self.pos_emb[: tokens.shape[1]]

    def forward(self, tokens, enc_tokens=None, enc_lens=None):
        t = tokens.shape[1]
        causal = torch.full((t, t), float("-inf")).triu(1)
        enc, enc_mask = None, None
        if self.encoder is not None:
            s = enc_tokens.shape[1]
            valid = torch.arange(s)[None, :] < enc_lens[:, None]
            enc_mask = torch.zeros(valid.shape).masked_fill(~valid, float("-inf"))[:, None, None, :]
            enc = self.encoder(self.embed(enc_tokens), enc_mask)
        h = self.decoder(self.embed(tokens), causal, enc, enc_mask)
        return h @ self.tok_emb.t()


def run(arch):
    encdec = arch == "encdec"
    model = Lm(encdec)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    rest = [p for n, p in model.named_parameters() if p.dim() != 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
        lr=1e-3,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    g = torch.Generator().manual_seed(0)

    def noise(shape):
        # Drawn on the CPU (the generator's device), then moved: the same tokens on any device.
        return torch.randint(0, 256, shape, generator=g, device="cpu").to(device)

    if encdec:
        s, t = SEQ // 2, SEQ // 2
        enc_tokens = noise((ROWS, s))
        enc_lens = torch.full((ROWS,), s)
        targets = noise((ROWS, t))
        tokens = torch.cat([torch.full((ROWS, 1), 257), targets[:, :-1]], dim=1)
    else:
        s = 0
        tokens = noise((ROWS, SEQ))
        targets = torch.cat([tokens[:, 1:], torch.zeros(ROWS, 1, dtype=torch.long)], dim=1)
        enc_tokens, enc_lens = None, None

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(tokens, enc_tokens, enc_lens)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        return loss.item()

    for _ in range(WARMUP_STEPS):
        step()
    n, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while True:
        loss = step()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            break
    sps = n / elapsed
    cpu_ms = (time.process_time() - cpu_start) * 1e3 / n
    tokens_per_step = ROWS * (tokens.shape[1] + s)
    print(
        json.dumps(
            {
                "impl": "torch",
                "arch": arch,
                "threads": threads,
                "steps": n,
                "seconds": round(elapsed, 2),
                "steps_per_s": round(sps, 3),
                "tokens_per_s": round(sps * tokens_per_step),
                "batch": ROWS,
                "tokens_per_step": tokens_per_step,
                "d_model": D,
                "layers": LAYERS,
                "heads": HEADS,
                "d_ff": FF,
                "vocab": VOCAB,
                "last_loss": round(loss, 4),
                "cpu_ms_per_step": round(cpu_ms, 1),
                "torch": torch.__version__,
                "device": str(device),
            }
        ),
        flush=True,
    )


for arch in ("decoder", "encdec") if which == "both" else (which,):
    run(arch)
