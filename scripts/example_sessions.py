#!/usr/bin/env python3
"""Writes a small stream of timestamped sessions in the JSONL that `ssmkit gen --import`
and `[tstr] real` read: 30 users, a turn about every 21 hours over eight weeks, 20
candidates a turn. On weekends the two memories flagged `is_constraint` are relevant
(p 0.9), on weekdays the one with importance 1; the rest 0.03. The features carry the
turn's time of day and day of the week. Deterministic for a given --seed.

    python3 scripts/example_sessions.py examples/sessions.jsonl [--seed 1]
"""

import argparse
import json
import os
import math
import random

START = 1_767_571_200  # Monday 2026-01-05 00:00 UTC


def turn(rng, user, t):
    ts = START + t * 75_600 + rng.randrange(3_600) + user * 60
    day = ts // 86_400
    weekday = (day + 3) % 7  # 0 = Monday (1970-01-01 was a Thursday)
    weekend = weekday >= 5
    hour = (ts % 86_400) / 3_600
    ids = [0, 1, 2]
    while len(ids) < 20:
        m = rng.randrange(3, 80)
        if m not in ids:
            ids.append(m)
    rng.shuffle(ids)
    features, labels = [], []
    for m in ids:
        x = [round(rng.random(), 3) for _ in range(17)]
        x[1] = 1.0 if m == 2 else round(rng.random() / 2, 3)
        x[3] = round(math.sin(2 * math.pi * hour / 24), 4)
        x[4] = round(math.cos(2 * math.pi * hour / 24), 4)
        x[5] = round(math.sin(2 * math.pi * weekday / 7), 4)
        x[6] = round(math.cos(2 * math.pi * weekday / 7), 4)
        x[14] = 1.0 if m < 2 else 0.0
        on = m < 2 if weekend else m == 2
        labels.append(1.0 if rng.random() < (0.9 if on else 0.03) else 0.0)
        features.append(x)
    return {
        "user_id": f"u{user}",
        "session_id": day,
        "timestamp": ts,
        "memory_ids": ids,
        "features": features,
        "labels": labels,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        for user in range(30):
            for t in range(64):
                f.write(json.dumps(turn(rng, user, t)) + "\n")


if __name__ == "__main__":
    main()
