#!/usr/bin/env python3
"""A PyTorch CPU reference for ssmkit's training step: Small Mamba's scorer at the same
shapes, timed over forward, backward (all gradients) and an AdamW step.

The model mirrors `src/model/scorer/` for the `mamba` variant with history features and
the identity-keyed state (`configs/quick.toml`'s model): a pointwise MLP over [features,
missing flags, history, the keyed state's read of the candidate's events] (two hidden
layers of 64 units, ReLU after each; the read as `src/model/keyed.rs` computes it, 4
decaying and 2 oscillating channels, 176 numbers), a candidate encoder over [features, missing, history, memory
slot and entity embeddings, content], turn tokens over [context, query, focal entity,
labelled candidates pooled], three residual Mamba blocks (RMSNorm, in_proj, causal
depthwise conv of width 4, x_proj, dt_proj, the selective scan: in parallel over time,
or one step per turn as mamba-minimal runs it with `--scan loop`), an RMSNorm, a query
projection of the state before each turn, and the scaled dot product of query and
candidate encodings. The loss is the listwise softmax cross-entropy over the relevant
candidates.

Usage (a venv with torch):  python scripts/torch_train_step.py [--batch 8 --turns 64 --k 40]
[--scan parallel|loop]. Checks first that both scans agree (values and gradients), then
prints the parameter count and turns per second (batch × turns / median step time), as
ssmkit's metrics.csv does.
"""

import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

FEATURES, HISTORY, CONTEXT = 24, 8, 6
# The keyed log as a candidate reads it (`crates/format/src/keyed.rs`): a memory's last 8
# events, then its entity's last 16, each 12 numbers (the last its phase in the week).
MEMORY_EVENTS, ENTITY_EVENTS, EVENT_DIM = 8, 16, 12
VALUE_DIM = EVENT_DIM - 1
CYCLE_DAYS = (1.0, 7.0)
CYCLE_MAX_RATE = 0.1


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def scan_loop(da, dbx):
    """h_t = da_t * h_(t-1) + dbx_t from h = 0, one step per turn (mamba-minimal)."""
    h = torch.zeros_like(dbx[:, 0])
    hs = []
    for i in range(dbx.shape[1]):
        h = da[:, i] * h + dbx[:, i]
        hs.append(h)
    return torch.stack(hs, dim=1)


def scan_parallel(da, dbx):
    """The same recurrence in parallel over time (Hillis-Steele): after the step of shift
    s, position t holds the composition of the 2s steps ending at t, so log2(T) whole-
    sequence multiply-adds replace the T steps; autograd differentiates it as it stands."""
    a, b, s, t = da, dbx, 1, dbx.shape[1]
    while s < t:
        b = torch.cat([b[:, :s], a[:, s:] * b[:, :-s] + b[:, s:]], 1)
        a = torch.cat([a[:, :s], a[:, s:] * a[:, :-s]], 1)
        s *= 2
    return b


SCANS = {"loop": scan_loop, "parallel": scan_parallel}


class Mamba(nn.Module):
    """mamba-minimal's block; its selective scan one of `SCANS`."""

    def __init__(self, d_model, d_state, expand, scan, d_conv=4):
        super().__init__()
        self.scan = SCANS[scan]
        e = expand * d_model
        self.e, self.n, self.r = e, d_state, math.ceil(d_model / 16)
        self.norm = RMSNorm(d_model)
        self.in_proj = nn.Linear(d_model, 2 * e, bias=False)
        self.conv1d = nn.Conv1d(e, e, d_conv, groups=e, padding=d_conv - 1)
        self.x_proj = nn.Linear(e, self.r + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.r, e)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1).float()).repeat(e, 1))
        self.D = nn.Parameter(torch.ones(e))
        self.out_proj = nn.Linear(e, d_model, bias=False)

    def forward(self, u):
        b, t, _ = u.shape
        x, z = self.in_proj(self.norm(u)).split(self.e, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :t].transpose(1, 2))
        dt, bm, cm = self.x_proj(x).split([self.r, self.n, self.n], dim=-1)
        delta = F.softplus(self.dt_proj(dt))  # [B, T, E]
        a = -torch.exp(self.A_log)  # [E, N]
        da = torch.exp(delta.unsqueeze(-1) * a)  # [B, T, E, N]
        dbx = delta.unsqueeze(-1) * bm.unsqueeze(2) * x.unsqueeze(-1)
        h = self.scan(da, dbx)  # [B, T, E, N]
        y = (h * cm.unsqueeze(2)).sum(-1) + x * self.D
        return u + self.out_proj(y * F.silu(z))


class KeyedState(nn.Module):
    """`src/model/keyed.rs`: per event source, decaying and oscillating kernel channels
    over the events (a selective step per event), the memory's summed over √L, the
    entity's averaged over its events."""

    def __init__(self, modes=4, cycles=2):
        super().__init__()
        self.modes, self.cycles = modes, cycles
        # `initial_rates`: log-spaced from 1/50 to 2 a day; the oscillating modes at 0.05.
        lo, hi = math.log(0.02), math.log(2.0)
        rates = [math.exp(lo + i / (modes - 1) * (hi - lo)) for i in range(modes)]
        rates += [0.05] * (2 * cycles)
        # Read width: per source, every channel times every value.
        self.dim = 2 * (modes + 2 * cycles) * VALUE_DIM
        self.log_rate = nn.Parameter(torch.log(torch.tensor([rates, rates])))
        omega = [2 * math.pi / CYCLE_DAYS[j] for j in range(cycles)]
        self.omega = nn.Parameter(torch.tensor([omega, omega]), requires_grad=False)
        self.select = nn.Linear(VALUE_DIM, 2)

    def forward(self, events, days):
        parts = []
        for source, sl in ((0, slice(0, MEMORY_EVENTS)), (1, slice(MEMORY_EVENTS, MEMORY_EVENTS + ENTITY_EVENTS))):
            ev, d = events[..., sl, :], days[..., sl].unsqueeze(-1)  # [B, T, K, L, E], [.., L, 1]
            values = ev[..., :VALUE_DIM]
            step = F.softplus(values @ self.select.weight[source] + self.select.bias[source])
            rate = self.log_rate[source].exp() * step.unsqueeze(-1)  # [B, T, K, L, C]
            rate = torch.cat([rate[..., : self.modes], rate[..., self.modes :].clamp_max(CYCLE_MAX_RATE)], -1)
            envelope = torch.exp(-d * rate)
            phase = ev[..., VALUE_DIM:] * self.omega[source]  # [B, T, K, L, cycles]
            ones = torch.ones_like(envelope[..., : self.modes])
            kernel = envelope * torch.cat([ones, phase.cos(), phase.sin()], -1)
            r = kernel.transpose(-1, -2) @ values  # [B, T, K, C, V]
            if source == 0:
                r = r / math.sqrt(ev.shape[-2])
            else:
                r = r / ev[..., :1].sum(-2, keepdim=True).clamp_min(1)  # [B, T, K, 1, 1]
            parts.append(r.flatten(-2))
        return torch.cat(parts, -1)


class Scorer(nn.Module):
    def __init__(self, d_model=64, d_state=32, layers=3, d_slot=8, content=16, slots=512, entities=256, hidden=64,
                 expand=1, scan="parallel"):
        super().__init__()
        own = 2 * FEATURES + HISTORY
        self.keyed = KeyedState()
        pointwise_in = own + self.keyed.dim
        self.h = d_model
        self.memory_emb = nn.Embedding(slots, d_slot)
        self.entity_emb = nn.Embedding(entities + 1, d_slot)
        self.mlp_in = nn.Linear(pointwise_in, hidden)
        self.mlp_mid = nn.Linear(hidden, hidden)
        self.mlp_out = nn.Linear(hidden, 1)
        self.cand_enc = nn.Linear(own + 2 * d_slot + content, d_model)
        self.turn_in = nn.Linear(CONTEXT + content + d_slot + d_model, d_model)
        self.query_proj = nn.Linear(d_model + CONTEXT + content + d_slot, d_model)
        self.blocks = nn.ModuleList(Mamba(d_model, d_state, expand, scan) for _ in range(layers))
        self.norm = RMSNorm(d_model)

    def forward(self, d):
        own = torch.cat([d["features"], d["missing"], d["history"]], -1)
        read = self.keyed(d["events"], d["days"])
        h = F.relu(self.mlp_in(torch.cat([own, read], -1)))
        score = self.mlp_out(F.relu(self.mlp_mid(h))).squeeze(-1)
        cand = self.cand_enc(torch.cat([own, self.memory_emb(d["slot"]), self.entity_emb(d["entity"]), d["content"]], -1))
        focal = self.entity_emb(d["focal"]).mean(2)
        labels = d["labels"] * d["valid"]
        pooled = (cand * labels.unsqueeze(-1)).sum(2) / labels.sum(2, keepdim=True).clamp_min(1)
        x = self.turn_in(torch.cat([d["context"], d["query"], focal, pooled], -1))
        for block in self.blocks:
            x = block(x)
        out = self.norm(x)
        before = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], 1)
        q = self.query_proj(torch.cat([before, d["context"], d["query"], focal], -1))
        score = score + (cand * q.unsqueeze(2)).sum(-1) / math.sqrt(self.h)
        return score + (d["valid"] - 1) * 1e9


def listwise_loss(scores, labels, valid):
    labels = labels * valid
    n = labels.sum(-1, keepdim=True)
    counted = (n.squeeze(-1) > 0).float()
    per_turn = -(labels / n.clamp_min(1) * F.log_softmax(scores, -1)).sum(-1)
    return (per_turn * counted).sum() / counted.sum().clamp_min(1)


def batch(b, t, k, g):
    r = lambda *s: torch.randn(*s, generator=g)
    labels = (torch.rand(b, t, k, generator=g) < 0.05).float()
    # Three in four places hold an event: a first number 1, its phase in [0, 7) days.
    events = r(b, t, k, MEMORY_EVENTS + ENTITY_EVENTS, EVENT_DIM)
    shown = (torch.rand(b, t, k, MEMORY_EVENTS + ENTITY_EVENTS, 1, generator=g) < 0.75).float()
    events = torch.cat([torch.ones_like(shown), events[..., 1:VALUE_DIM], 7 * events[..., VALUE_DIM:].sigmoid()], -1) * shown
    return {
        "events": events,
        "days": 30 * torch.rand(b, t, k, MEMORY_EVENTS + ENTITY_EVENTS, generator=g),
        "features": r(b, t, k, FEATURES),
        "missing": torch.zeros(b, t, k, FEATURES),
        "history": r(b, t, k, HISTORY),
        "slot": torch.randint(0, 512, (b, t, k), generator=g),
        "entity": torch.randint(0, 256, (b, t, k), generator=g),
        "content": r(b, t, k, 16),
        "focal": torch.randint(0, 256, (b, t, 2), generator=g),
        "context": r(b, t, CONTEXT),
        "query": r(b, t, 16),
        "labels": labels,
        "valid": torch.ones(b, t, k),
    }


def check_scans():
    """The parallel scan against the loop, values and gradients, on random decays."""
    g = torch.Generator().manual_seed(1)
    da = torch.rand(2, 37, 3, 4, generator=g).requires_grad_()
    dbx = torch.randn(2, 37, 3, 4, generator=g).requires_grad_()
    w = torch.randn(2, 37, 3, 4, generator=g)
    out = []
    for scan in (scan_loop, scan_parallel):
        h = scan(da, dbx)
        grads = torch.autograd.grad((h * w).sum(), (da, dbx))
        out.append((h, *grads))
    for x, y in zip(*out):
        if not torch.allclose(x, y, atol=1e-5, rtol=1e-4):
            raise SystemExit(f"the parallel scan differs from the loop by {(x - y).abs().max():.2e}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--turns", type=int, default=64)
    p.add_argument("--k", type=int, default=40)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--scan", choices=sorted(SCANS), default="parallel",
                   help="the selective scan: per-turn loop or parallel over time")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    check_scans()
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = Scorer(scan=a.scan)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    times = []
    for step in range(a.steps + 3):
        d = batch(a.batch, a.turns, a.k, g)
        start = time.perf_counter()
        loss = listwise_loss(model(d), d["labels"], d["valid"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= 3:
            times.append(time.perf_counter() - start)
    med = statistics.median(times)
    print(
        f"pytorch {torch.__version__}, {torch.get_num_threads()} threads, {a.scan} scan, {params:,} parameters: "
        f"batch {a.batch} x {a.turns} turns, K {a.k}: "
        f"median step {med * 1e3:.1f} ms, {a.batch * a.turns / med:.0f} turns/s"
    )


if __name__ == "__main__":
    main()
