#!/usr/bin/env python3
"""Checks that a report's verdict can go both ways: its gates.json shows every gate
that judges model quality passed by the oracle and failed by random and a constant
scorer, the dual-error gate and every canary gate failed by a label memorizer, every
canary gate passed by the observable reference (a learner that reads only what a model
reads), no gate INVALID, and a GTS split with at least 30 users with history.

Usage: python3 scripts/check_gates.py REPORT_DIR
Exits non-zero with one line per problem.
"""
import json
import sys
from pathlib import Path


CANARY_GATES = ("canaries ", "mean canary detection", "SNR curve")


def main(root):
    v = json.loads((Path(root) / "gates.json").read_text())
    problems = []
    gates = v["gates"]
    ref = v["reference"]
    for i, g in enumerate(gates):
        if g["status"] == "INVALID":
            problems.append(f"gate '{g['name']}' is INVALID: {g['note']}")
        if not g["judges_quality"]:
            continue
        oracle = ref["oracle"][i]
        if oracle["status"] != "PASS":
            problems.append(f"the oracle does not pass '{g['name']}' ({oracle['status']})")
        for name in ("random", "constant"):
            if ref[name][i]["status"] == "PASS":
                problems.append(f"{name} passes '{g['name']}'")
        canary_gate = g["name"].startswith(CANARY_GATES)
        if (g["name"].startswith("dual error") or canary_gate) and ref["memorizer"][i]["status"] == "PASS":
            problems.append(f"the label memorizer passes '{g['name']}'")
        if canary_gate and ref["observable"][i]["status"] != "PASS":
            problems.append(
                f"the observable reference does not pass '{g['name']}' ({ref['observable'][i]['status']}): "
                "the data cannot teach it to a learner"
            )
    warm = v["test_set"]["warm_users"]
    if warm < 30:
        problems.append(f"the GTS split has {warm} users with history (30 needed)")
    for p in problems:
        print(f"{root}: {p}", file=sys.stderr)
    if problems:
        return 1
    verdict = ", ".join(f"{g['name']}: {g['status']}" for g in gates)
    print(f"{root}: every gate can go both ways ({v['test_set']}); {verdict}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
