#!/usr/bin/env python3
"""Loads an ssmkit dataset with pyarrow and checks it against its manifest.

Usage: python3 scripts/check_dataset.py DATA_DIR

Checks: the manifest matches its own SHA-256; every table opens with pyarrow; row counts
and SHA-256 match the manifest; the candidates table has the 24 feature columns of
FEATURES.md in order (unless the manifest says they are rebuilt when read, see
`ssmkit gen --materialize`), each with its clean_ twin; labels are 0/1, relevance lies in
[0, 1] and canary roles in 0..8; the turns table names the selector entities; every
candidate's turn exists.
Exits non-zero with one line per problem.
"""
import hashlib
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

FEATURES = [
    "log_age", "importance", "log_access", "tod_sin", "tod_cos", "dow_sin", "dow_cos",
    "moy_sin", "moy_cos", "log_session_gap", "is_embedded", "is_superseded",
    "entity_slot", "aspect_slot", "is_constraint", "log_structural_density",
    "is_ka_traversal", "hop_count_norm", "min_edge_confidence", "avg_aspect_weight",
    "community_crossings_norm", "path_feedback_score",
    "log_dependency_strength_product", "focal_distance_norm",
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(root):
    root = Path(root)
    text = (root / "manifest.json").read_text()
    manifest = json.loads(text)
    problems = []
    # The manifest's own digest: SHA-256 of its text with `manifest_sha256` empty.
    seal = manifest.get("manifest_sha256", "")
    field = '"manifest_sha256": "{}"'
    unsealed = text.replace(field.format(seal), field.format(""), 1)
    if not seal or hashlib.sha256(unsealed.encode()).hexdigest() != seal:
        problems.append("manifest.json does not match the SHA-256 it records")
    tables = {}
    for name, info in manifest["files"].items():
        path = root / name
        table = pq.read_table(path)
        tables[name] = table
        if table.num_rows != info["rows"]:
            problems.append(f"{name}: {table.num_rows} rows, manifest says {info['rows']}")
        if sha256(path) != info["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    if manifest["features"] != FEATURES:
        problems.append("manifest feature list differs from FEATURES.md")
    cands = tables["candidates.parquet"]
    cols = cands.column_names
    feat_cols = [c for c in cols if c in FEATURES]
    # A generated world stores the observed (noisy) features only when generated with
    # `ssmkit gen --materialize`; otherwise ssmkit rebuilds them from the clean ones when
    # it reads the dataset, and the manifest says so.
    at_read = (manifest.get("noise") or {}).get("observed_at_read", False)
    if at_read:
        if feat_cols or "mask" in cols:
            problems.append("observed columns stored, but the manifest says they are rebuilt when read")
    elif feat_cols != FEATURES:
        problems.append(f"candidate feature columns out of order: {feat_cols}")
    elif "mask" not in cols:
        problems.append("missing column mask")
    for f in FEATURES:
        if "clean_" + f not in cols:
            problems.append(f"missing column clean_{f}")
    labels = set(cands.column("label").to_pylist())
    if not labels <= {0, 1}:
        problems.append(f"labels outside 0/1: {sorted(labels)}")
    rel = cands.column("relevance").to_pylist()
    if rel and not (min(rel) >= 0.0 and max(rel) <= 1.0):
        problems.append(f"relevance outside [0, 1]: {min(rel)}..{max(rel)}")
    roles = set(cands.column("canary_role").to_pylist())
    if not roles <= set(range(9)):
        problems.append(f"canary_role outside 0..8: {sorted(roles)}")
    turns = tables["turns.parquet"]
    for c in ("selector_z", "selector_w", "selector_p", "selector_t", "cycle_peak"):
        if c not in turns.column_names:
            problems.append(f"turns.parquet lacks column {c}")
    peaks = [p for p in turns.column("cycle_peak").to_pylist() if p != -1.0] if "cycle_peak" in turns.column_names else []
    if peaks and not (min(peaks) >= 0.0 and max(peaks) < 7.0):
        problems.append(f"cycle_peak outside [0, 7) days: {min(peaks)}..{max(peaks)}")
    turn_keys = set(zip(turns.column("user_id").to_pylist(), turns.column("turn_index").to_pylist()))
    cand_keys = set(zip(cands.column("user_id").to_pylist(), cands.column("turn_index").to_pylist()))
    if not cand_keys <= turn_keys:
        problems.append(f"{len(cand_keys - turn_keys)} candidate turns missing from turns.parquet")
    for p in problems:
        print(f"{root}: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"{root}: ok ({turns.num_rows} turns, {cands.num_rows} candidates, "
          f"{len(cols)} candidate columns)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
