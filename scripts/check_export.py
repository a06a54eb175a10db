#!/usr/bin/env python3
"""Loads ssmkit exports with the safetensors package and numpy and checks them.

Usage: python3 scripts/check_export.py F32_FILE QUANT_FILE [QUANT_FILE ...]

F32_FILE is the f32 export of a run, each QUANT_FILE an int8 or ternary export of the
same run. Checks: every file opens with safetensors; __metadata__ has the format
version, a parseable model config, the feature layout and the quantization scheme; the
recorded tensors_sha256 matches the tensor bytes; the Mamba tensor names of the reference
checkpoint are there with the expected dtypes and shapes; each quantized projection or
embedding, dequantized with its per-output-channel scale (rows of a projection, columns
of an embedding; F16), is within one quantization step of the f32 weight.
Exits non-zero with one line per problem.
"""
import hashlib
import json
import struct
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

FORMAT = "ssmkit-export-v1"
LAYOUT = "ssmkit-layout-v2"
# The numbers each keyed event is read as (docs/reference.md, "Keyed state").
KEYED_EVENTS = [
    "shown", "relevant", "focal_match", "relevant_focal_match", "same_memory",
    "relevant_same_memory", "entity_was_focal", "log_age", "relevant_log_age", "age_match",
    "relevant_age_match", "week_apart",
]
# What the keyed state sums of each event (all but its phase, week_apart), and the fastest
# an oscillating mode's envelope decays (per day).
KEYED_VALUES = KEYED_EVENTS[:-1]
CYCLE_MAX_RATE = 0.1
DTYPE = {"F32": "F32", "F16": "F16", "I8": "I8", "U8": "U8"}


def header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        head = json.loads(f.read(n))
        data = f.read()
    return head, data


def digest(head, data):
    """The SHA-256 the exporter records: name, dtype and shape as Rust's Debug prints
    them, then the bytes, for every tensor in name order."""
    h = hashlib.sha256()
    for name in sorted(k for k in head if k != "__metadata__"):
        t = head[name]
        start, end = t["data_offsets"]
        h.update(name.encode())
        h.update(f"{t['dtype']}[{', '.join(str(d) for d in t['shape'])}]".encode())
        h.update(data[start:end])
    return h.hexdigest()


def metadata_digest(meta):
    """The SHA-256 the exporter records over the other metadata entries: `key=value`
    lines in key order."""
    h = hashlib.sha256()
    for key in sorted(k for k in meta if k != "metadata_sha256"):
        h.update(f"{key}={meta[key]}\n".encode())
    return h.hexdigest()


def check_file(path, problems):
    head, data = header(path)
    meta = head.get("__metadata__") or {}
    for key in ["format_version", "model_config", "feature_layout", "quantization", "tensors_sha256", "metadata_sha256"]:
        if key not in meta:
            problems.append(f"{path}: __metadata__ lacks {key}")
            return None, None, None
    if meta["format_version"] != FORMAT:
        problems.append(f"{path}: format_version {meta['format_version']}")
    cfg = json.loads(meta["model_config"])
    layout = json.loads(meta["feature_layout"])
    quant = json.loads(meta["quantization"])
    if layout.get("version") != LAYOUT or len(layout.get("features", [])) != 24:
        problems.append(f"{path}: feature layout {layout.get('version')} with {len(layout.get('features', []))} features")
    reads_events = cfg.get("keyed_modes", 0) + cfg.get("keyed_cycles", 0) > 0 or cfg["variant"] == "attn"
    if reads_events and layout.get("keyed_events") != KEYED_EVENTS:
        problems.append(f"{path}: keyed events {layout.get('keyed_events')}, expected {KEYED_EVENTS}")
    keyed_state = cfg["variant"] != "attn" and cfg.get("keyed_modes", 0) + cfg.get("keyed_cycles", 0) > 0
    if keyed_state:
        kr = layout.get("keyed_read") or {}
        if kr.get("values") != KEYED_VALUES or abs(kr.get("cycle_max_rate", -1) - CYCLE_MAX_RATE) > 1e-6:
            problems.append(f"{path}: keyed read {kr}, expected values {KEYED_VALUES} and cycle_max_rate {CYCLE_MAX_RATE}")
    if digest(head, data) != meta["tensors_sha256"]:
        problems.append(f"{path}: tensors_sha256 does not match the tensor bytes")
    if metadata_digest(meta) != meta["metadata_sha256"]:
        problems.append(f"{path}: metadata_sha256 does not match the metadata")
    tensors = load_file(path)
    with safe_open(path, framework="numpy") as f:
        if set(f.keys()) != set(tensors):
            problems.append(f"{path}: safe_open and load_file disagree on the names")
    return cfg, quant["name"], (head, tensors)


def expect(problems, path, head, name, dtype, shape=None):
    t = head.get(name)
    if t is None:
        problems.append(f"{path}: missing {name}")
        return
    if t["dtype"] != dtype:
        problems.append(f"{path}: {name} is {t['dtype']}, expected {dtype}")
    if shape is not None and list(t["shape"]) != list(shape):
        problems.append(f"{path}: {name} has shape {t['shape']}, expected {shape}")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    problems = []
    f32_path = sys.argv[1]
    cfg, qname, (head32, t32) = check_file(f32_path, problems)
    if qname != "f32":
        problems.append(f"{f32_path}: quantization {qname}, expected f32")
    h, e, n = cfg["d_model"], cfg["expand"] * cfg["d_model"], cfg["d_state"]
    r, k = -(-h // 16), cfg["d_conv"]
    mamba = cfg["variant"] in ("mamba", "dual")
    for i in range(cfg["layers"] if mamba else 0):
        m = f"layers.{i}.mixer"
        expect(problems, f32_path, head32, f"{m}.in_proj.weight", "F32", [2 * e, h])
        expect(problems, f32_path, head32, f"{m}.conv1d.weight", "F32", [e, 1, k])
        expect(problems, f32_path, head32, f"{m}.conv1d.bias", "F32", [e])
        expect(problems, f32_path, head32, f"{m}.x_proj.weight", "F32", [r + 2 * n, e])
        expect(problems, f32_path, head32, f"{m}.dt_proj.weight", "F32", [e, r])
        expect(problems, f32_path, head32, f"{m}.dt_proj.bias", "F32", [e])
        expect(problems, f32_path, head32, f"{m}.A_log", "F32", [e, n])
        expect(problems, f32_path, head32, f"{m}.D", "F32", [e])
        expect(problems, f32_path, head32, f"{m}.out_proj.weight", "F32", [h, e])
        expect(problems, f32_path, head32, f"layers.{i}.norm.weight", "F32", [h])
    if cfg["variant"] in ("mamba", "s4d", "dual"):
        # Candidate inputs: features and missing flags (2 x 24), the 8 history features
        # and the 96 turn-relative features when the model reads them, the memory-slot and
        # entity embeddings, the content.
        own = 2 * 24 + (8 if cfg.get("history") else 0) + (96 if cfg.get("relative") else 0)
        cand_in = own + 2 * cfg["d_slot"] + cfg["content_dim"]
        expect(problems, f32_path, head32, "scorer.cand_enc.weight", "F32", [h, cand_in])
        # The pointwise branch also reads the keyed state: per event source (memory,
        # entity), each kernel channel times every event number but the phase.
        modes, cycles = cfg.get("keyed_modes", 0), cfg.get("keyed_cycles", 0)
        channels = modes + 2 * cycles
        read = 2 * channels * len(KEYED_VALUES)
        expect(problems, f32_path, head32, "scorer.mlp.fc1.weight", "F32", [cfg["mlp_hidden"], own + read])
        if cfg.get("mlp_layers", 1) > 1:
            expect(problems, f32_path, head32, "scorer.mlp.mid.weight", "F32", [cfg["mlp_hidden"], cfg["mlp_hidden"]])
        if channels:
            expect(problems, f32_path, head32, "scorer.keyed.log_rate", "F32", [2, channels])
            if cycles:
                expect(problems, f32_path, head32, "scorer.keyed.omega", "F32", [2, cycles])
            if cfg.get("selective", True):
                expect(problems, f32_path, head32, "scorer.keyed.select.weight", "F32", [2, len(KEYED_VALUES)])
            rates = np.exp(t32["scorer.keyed.log_rate"])
            if not np.all(np.isfinite(rates)):
                problems.append(f"{f32_path}: the keyed state's decay rates are not finite")
    if mamba:
        expect(problems, f32_path, head32, "norm_f.weight", "F32", [h])
        a = t32["layers.0.mixer.A_log"]
        if not np.all(np.isfinite(a)):
            problems.append(f"{f32_path}: A_log is not finite")
    for qpath in sys.argv[2:]:
        qcfg, qname, (headq, tq) = check_file(qpath, problems)
        if qcfg != cfg:
            problems.append(f"{qpath}: model config differs from {f32_path}")
            continue
        if qname not in ("int8", "ternary"):
            problems.append(f"{qpath}: quantization {qname}")
            continue
        for name, w in t32.items():
            if name.endswith(".weight") and (name[: -len(".weight")] + ".scale") in tq:
                base = name[: -len(".weight")]
                expect(problems, qpath, headq, base + ".scale", "F16")
                scale = tq[base + ".scale"].astype(np.float32)
                # One scale per output channel: rows of a projection, columns of an embedding.
                per_column = base.endswith("_emb")
                step = scale[None, :] if per_column else scale[:, None]
                if step.size != (w.shape[1] if per_column else w.shape[0]):
                    problems.append(f"{qpath}: {base}.scale has {scale.size} values")
                    continue
                if qname == "int8":
                    expect(problems, qpath, headq, base + ".qweight", "I8", w.shape)
                    back = tq[base + ".qweight"].astype(np.float32) * step
                    if np.any(np.abs(back - w) > step / 2 + 1e-6):
                        problems.append(f"{qpath}: {base} dequantizes beyond one step of the f32 weight")
                else:
                    expect(problems, qpath, headq, base + ".qweight2", "U8", [w.shape[0], -(-w.shape[1] // 4)])
                    packed = tq[base + ".qweight2"]
                    codes = np.stack([(packed >> (2 * j)) & 3 for j in range(4)], axis=-1).reshape(w.shape[0], -1)
                    codes = codes[:, : w.shape[1]].astype(np.int8) - 1
                    want = np.clip(np.round(w / step), -1, 1)
                    if np.any(codes != want):
                        problems.append(f"{qpath}: {base} ternary codes disagree with round(clip(w / scale))")
                if not np.all(scale > 0):
                    problems.append(f"{qpath}: {base}.scale has non-positive values")
            elif name in tq:
                # Full-precision tensors: F16 beside quantized projections.
                if np.any(np.abs(tq[name].astype(np.float32) - w) > 1e-3 * (1 + np.abs(w))):
                    problems.append(f"{qpath}: {name} differs from the f32 export")
            else:
                problems.append(f"{qpath}: {name} of the f32 export is missing")
        if mamba and headq["layers.0.mixer.A_log"]["dtype"] != "F16":
            problems.append(f"{qpath}: A_log is not F16")
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"ok: {f32_path} and {len(sys.argv) - 2} quantized export(s)")


if __name__ == "__main__":
    main()
