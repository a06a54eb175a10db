#!/usr/bin/env python3
"""A PyTorch CPU reference for ssmkit's training step: Small Mamba's scorer at the same
shapes, timed over forward, backward (all gradients) and an AdamW step.

The model mirrors `src/model/scorer.rs` for the `mamba` variant with history features:
a pointwise MLP over [features, missing flags, history] (24 hidden units), a candidate
encoder over [features, missing, history, memory slot and entity embeddings, content],
turn tokens over [context, query, focal entity, labelled candidates pooled], three
residual Mamba blocks (RMSNorm, in_proj, causal depthwise conv of width 4, x_proj,
dt_proj, the selective scan as mamba-minimal runs it: one step per turn), an RMSNorm, a
query projection of the state before each turn, and the scaled dot product of query and
candidate encodings. The loss is the listwise softmax cross-entropy over the relevant
candidates.

Usage (a venv with torch):  python scripts/torch_train_step.py [--batch 8 --turns 64 --k 40]
Prints turns per second (batch × turns / median step time), as ssmkit's metrics.csv does.
"""

import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

FEATURES, HISTORY, CONTEXT = 24, 8, 6


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Mamba(nn.Module):
    """mamba-minimal's block: selective scan by a Python loop over turns."""

    def __init__(self, d_model, d_state, expand=2, d_conv=4):
        super().__init__()
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
        h = torch.zeros(b, self.e, self.n)
        ys = []
        for i in range(t):
            h = da[:, i] * h + dbx[:, i]
            ys.append((h * cm[:, i].unsqueeze(1)).sum(-1))
        y = torch.stack(ys, dim=1) + x * self.D
        return u + self.out_proj(y * F.silu(z))


class Scorer(nn.Module):
    def __init__(self, d_model=64, d_state=32, layers=3, d_slot=8, content=16, slots=4096, entities=256, hidden=24):
        super().__init__()
        pointwise_in = 2 * FEATURES + HISTORY
        self.h = d_model
        self.memory_emb = nn.Embedding(slots, d_slot)
        self.entity_emb = nn.Embedding(entities + 1, d_slot)
        self.mlp_in = nn.Linear(pointwise_in, hidden)
        self.mlp_out = nn.Linear(hidden, 1)
        self.cand_enc = nn.Linear(pointwise_in + 2 * d_slot + content, d_model)
        self.turn_in = nn.Linear(CONTEXT + content + d_slot + d_model, d_model)
        self.query_proj = nn.Linear(d_model + CONTEXT + content + d_slot, d_model)
        self.blocks = nn.ModuleList(Mamba(d_model, d_state) for _ in range(layers))
        self.norm = RMSNorm(d_model)

    def forward(self, d):
        own = torch.cat([d["features"], d["missing"], d["history"]], -1)
        score = self.mlp_out(F.relu(self.mlp_in(own))).squeeze(-1)
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
    return {
        "features": r(b, t, k, FEATURES),
        "missing": torch.zeros(b, t, k, FEATURES),
        "history": r(b, t, k, HISTORY),
        "slot": torch.randint(0, 4096, (b, t, k), generator=g),
        "entity": torch.randint(0, 256, (b, t, k), generator=g),
        "content": r(b, t, k, 16),
        "focal": torch.randint(0, 256, (b, t, 2), generator=g),
        "context": r(b, t, CONTEXT),
        "query": r(b, t, 16),
        "labels": labels,
        "valid": torch.ones(b, t, k),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--turns", type=int, default=64)
    p.add_argument("--k", type=int, default=40)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = Scorer()
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
        f"pytorch {torch.__version__}, {torch.get_num_threads()} threads: batch {a.batch} x {a.turns} turns, K {a.k}: "
        f"median step {med * 1e3:.1f} ms, {a.batch * a.turns / med:.0f} turns/s"
    )


if __name__ == "__main__":
    main()
