#!/usr/bin/env python3
"""Checks that a report's verdict can go both ways: its gates.json shows every gate
that judges model quality passed by the oracle and failed by random and a constant
scorer, the dual-error gate and every canary gate failed by a label memorizer, every
canary gate passed by the observable reference (a learner that reads only what a model
reads), no gate INVALID, and a GTS split with at least 30 users with history.

Usage: python3 scripts/check_gates.py REPORT_DIR [--allow-invalid NAME_PREFIX]...
Exits non-zero with one line per problem. A gate named by --allow-invalid may be INVALID
for lack of power on this data (the oracle measured above its threshold but not
significantly so); it is reported, not failed. Every other rule still holds for it.
"""
import json
import sys
from pathlib import Path


CANARY_GATES = ("canaries ", "mean canary detection", "SNR curve")


def main(root, allowed=()):
    v = json.loads((Path(root) / "gates.json").read_text())
    problems = []
    notes = []
    gates = v["gates"]
    ref = v["reference"]
    for i, g in enumerate(gates):
        oracle = ref["oracle"][i]
        underpowered = (
            g["name"].startswith(tuple(allowed))
            and oracle["status"] == "FAIL"
            and oracle["value"] is not None
            and oracle["value"] > g["threshold"]
        )
        if g["status"] == "INVALID" and not underpowered:
            problems.append(f"gate '{g['name']}' is INVALID: {g['note']}")
        if not g["judges_quality"]:
            continue
        if underpowered:
            notes.append(
                f"gate '{g['name']}' is INVALID on this data: the oracle measures "
                f"{oracle['value']:.4f}, above the threshold {g['threshold']}, but not significantly"
            )
        elif oracle["status"] != "PASS":
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
    for n in notes:
        print(f"{root}: note: {n}", file=sys.stderr)
    for p in problems:
        print(f"{root}: {p}", file=sys.stderr)
    if problems:
        return 1
    verdict = ", ".join(f"{g['name']}: {g['status']}" for g in gates)
    print(f"{root}: every gate can go both ways ({v['test_set']}); {verdict}")
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    allowed = []
    while len(args) >= 2 and args[-2] == "--allow-invalid":
        allowed.append(args[-1])
        args = args[:-2]
    if len(args) != 1 or "--allow-invalid" in args:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(args[0], allowed))
