#!/usr/bin/env python3
"""The recency slope a run's scores show on a dataset's own turns, by how often the
memory's entity was shown before.

The recency canary probes first showings of memories of the decaying entity, at turns
where that entity was shown at least 16 times before, by editing the memory's age. This
reads the same quantity off the unedited turns: for every first showing of such a memory
no older than 14 days, the run's score minus the mean score of the turn's candidates
without a canary role (a listwise model's scores are fixed up to a constant per turn),
regressed on the memory's age in days. The planted slope comes from the clean relevance
in the same way. The scores come from `ssmkit score`.

    ssmkit score --data D --run R --users 4000 --out scores.parquet
    python3 scripts/recency_by_evidence.py D scores.parquet
"""
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

RECENCY = 2  # canary_role of a memory of the decaying entity
BINS = [(0, 1), (1, 4), (4, 8), (8, 16), (16, None)]
MAX_AGE = 14.0


def main(data, scores_path):
    scores = pq.read_table(scores_path)
    users = pc.unique(scores["user_id"])
    last = pc.max(users).as_py()
    f = pq.ParquetFile(f"{data}/candidates.parquet")
    cols = ["user_id", "turn_index", "cand_index", "memory_id", "entity_id",
            "canary_role", "clean_log_age", "relevance", "label"]
    parts = []
    for i in range(f.num_row_groups):
        t = f.read_row_group(i, columns=cols)
        if pc.min(t["user_id"]).as_py() > last:
            break
        parts.append(t.filter(pc.is_in(t["user_id"], users)))
    cands = pa.concat_tables(parts)
    t = cands.join(scores, ["user_id", "turn_index", "cand_index"], join_type="inner")
    order = pc.sort_indices(t, [("user_id", "ascending"), ("turn_index", "ascending"),
                                ("cand_index", "ascending")])
    t = t.take(order)
    c = {n: t[n].to_numpy() for n in t.column_names}
    n = len(c["score"])
    user, turn = c["user_id"].astype(np.int64), c["turn_index"].astype(np.int64)
    turn_key = user * 1_000_000 + turn
    # Reference candidates: no canary role. Their mean score and log-relevance per turn.
    ref = c["canary_role"] == 0
    log_rel = np.log(np.maximum(c["relevance"].astype(np.float64), 1e-6))
    keys, inv = np.unique(turn_key, return_inverse=True)
    cnt = np.bincount(inv, weights=ref, minlength=len(keys))
    ref_score = np.bincount(inv, weights=np.where(ref, c["score"], 0.0), minlength=len(keys))
    ref_rel = np.bincount(inv, weights=np.where(ref, log_rel, 0.0), minlength=len(keys))
    ok = cnt[inv] > 0
    value = c["score"] - ref_score[inv] / np.maximum(cnt[inv], 1)
    planted = log_rel - ref_rel[inv] / np.maximum(cnt[inv], 1)
    # First showings of each memory, and how often its entity was shown in earlier turns.
    first = np.zeros(n, bool)
    prior = np.zeros(n, np.int64)
    seen_mem, seen_ent = set(), {}
    start = 0
    while start < n:
        end = start
        while end < n and turn_key[end] == turn_key[start]:
            end += 1
        rows = range(start, end)
        for i in rows:
            first[i] = (user[i], int(c["memory_id"][i])) not in seen_mem
            prior[i] = seen_ent.get((user[i], int(c["entity_id"][i])), 0)
        for i in rows:
            seen_mem.add((user[i], int(c["memory_id"][i])))
            e = (user[i], int(c["entity_id"][i]))
            seen_ent[e] = seen_ent.get(e, 0) + 1
        start = end
    age = np.expm1(c["clean_log_age"].astype(np.float64))
    sites = (c["canary_role"] == RECENCY) & first & ok & (age <= MAX_AGE)
    print(f"{int(sites.sum())} first showings of recency memories up to {MAX_AGE:g} days, "
          f"{len(users)} users")
    print("entity shown before | showings | run's slope /day | planted slope /day")
    for lo, hi in BINS:
        s = sites & (prior >= lo) & (True if hi is None else prior < hi)
        if s.sum() < 3:
            continue
        slope = -np.polyfit(age[s], value[s], 1)[0]
        want = -np.polyfit(age[s], planted[s], 1)[0]
        label = f"{lo}+" if hi is None else f"{lo}-{hi - 1}"
        print(f"{label:>19} | {int(s.sum()):8d} | {slope:16.3f} | {want:18.3f}")
    # The probe's sites: the labels against the run's values, by age.
    s = sites & (prior >= BINS[-1][0])
    print(f"\nat {BINS[-1][0]} or more earlier showings: age (days) | showings | label rate | "
          "run's value | planted value")
    for lo, hi in [(0, 1), (1, 3), (3, 7), (7, MAX_AGE + 1e-9)]:
        b = s & (age >= lo) & (age < hi)
        if b.sum():
            print(f"{lo:g}-{min(hi, MAX_AGE):g} | {int(b.sum())} | {c['label'][b].mean():.3f} | "
                  f"{value[b].mean():+.2f} | {planted[b].mean():+.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
