"""Reads what scripts/gpu-check.sh left in OUT and writes OUT/gpu-check.json and OUT/gpu-check.md.

Only numpy and the standard library: it runs with the GPU image's Python as well as with .venv-lm.
Exit status 1 when a step failed or a check is outside its target (targets are checked on the GPU
run only; the dry run checks that every step ran and that the two CPU embeddings agree).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

PAPER_CELLS = 96_000  # the paper's four datasets, as the issue counts them
TARGETS = {"f32_max_abs": 1e-3, "bf16_min_cosine": 0.999, "vs_c2s": 2.0, "vs_best": 1.0,
           "cells_per_s": 500.0, "workload_s": 600.0, "mlp_macro_f1_diff": 0.01}


def load_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def bench(dir_):
    """(ours seconds, {transformers tool: seconds}, tokens) of one `bench embed` output folder."""
    rows = None
    for name in ("embed_cuda.json", "embed_cpu.json"):
        rows = load_json(dir_ / name) or rows
    if not rows:
        return None
    ours = next(r for r in rows if r["tool"].startswith("cellsentence"))
    hf = {r["tool"]: r["seconds"] for r in rows if r["tool"].startswith("transformers")}
    return ours["seconds"], hf, ours["tokens"]


def parity(work):
    out = {}
    cpu = work / "parity_cpu_f32.npy"
    if not cpu.exists():
        return out
    a = np.load(cpu).astype(np.float64)
    for name in ("f32", "bf16"):
        p = work / f"parity_cuda_{name}.npy"
        if not p.exists():
            continue
        b = np.load(p).astype(np.float64)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        out[name] = {"cells": int(a.shape[0]), "max_abs": float(np.abs(a - b).max()),
                     "min_cosine": float(cos.min())}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--bin", default="")
    a = ap.parse_args()
    out = Path(a.out)
    steps = [json.loads(l) for l in (out / "steps.jsonl").read_text().splitlines() if l.strip()]
    secs = {s["step"]: s["seconds"] for s in steps}
    failed = [s["step"] for s in steps if s["rc"] != 0]
    r = {"dry_run_on_cpu": bool(a.cpu), "binary": a.bin, "failed_steps": failed, "steps": steps,
         "env": (out / "logs" / "env.out").read_text() if (out / "logs" / "env.out").exists() else "",
         "gpu": (out / "nvidia-smi.csv").read_text().strip() if (out / "nvidia-smi.csv").exists() else ""}

    c2s = bench(out / "bench_c2s")
    runs = {b: bench(out / f"bench_sdpa_{b}") for b in (32, 64, 128)}
    best = [r + (b,) for b, r in runs.items() if r]
    if c2s:
        ours_s, hf, tokens = c2s
        hf_c2s = min(hf.values())  # cell2sentence's batches of 8: the faster of eager and sdpa
        speed = {"ours_s": ours_s, "tokens": tokens, "transformers_c2s_s": hf, "vs_c2s": hf_c2s / ours_s}
        if best:
            b_s, b_batch = min((min(x[1].values()), x[3]) for x in best)
            speed.update({"transformers_best_s": b_s, "transformers_best_batch": b_batch,
                          "vs_best": b_s / min([ours_s] + [x[0] for x in best])})
        r["speed"] = speed
    r["parity"] = parity(out / "work")

    wl = {}
    for g in ("all", "hvg"):
        p = out / "work" / f"workload_{g}.npy"
        if p.exists() and f"workload_{g}" in secs:
            cells = int(np.load(p, mmap_mode="r").shape[0])
            wl[g] = {"cells": cells, "seconds": secs[f"workload_{g}"], "cells_per_s": cells / secs[f"workload_{g}"]}
    if len(wl) == 2:
        wl["paper_workload_s"] = sum(PAPER_CELLS / wl[g]["cells_per_s"] for g in ("all", "hvg"))
    r["workload"] = {"dataset": a.dataset, **wl}

    dev, cpu = load_json(out / "mlp_device" / "summary.json"), load_json(out / "mlp_cpu" / "summary.json")
    if dev and cpu:
        r["mlp"] = {"device_macro_f1": dev["macro_f1_mean"], "cpu_macro_f1": cpu["macro_f1_mean"],
                    "diff": abs(dev["macro_f1_mean"] - cpu["macro_f1_mean"]),
                    "device_s": secs.get("mlp_device"), "cpu_s": secs.get("mlp_cpu")}
    lm_out = (out / "logs" / "train_lm.out")
    if lm_out.exists():
        try:
            t = json.loads(lm_out.read_text())
            r["train_lm"] = {"tokens_per_s": t.get("tokens_per_s"), "seconds": t.get("seconds")}
        except ValueError:
            pass

    checks = {}
    P = r["parity"]
    if a.cpu:
        checks["every step ran"] = not failed
        checks["two CPU runs agree (max-abs ≤ 1e-6)"] = "f32" in P and P["f32"]["max_abs"] <= 1e-6
    else:
        checks["every step ran"] = not failed
        checks["CUDA f32 vs CPU max-abs ≤ 1e-3"] = "f32" in P and P["f32"]["max_abs"] <= TARGETS["f32_max_abs"]
        checks["CUDA bf16 vs CPU cosine ≥ 0.999"] = "bf16" in P and P["bf16"]["min_cosine"] >= TARGETS["bf16_min_cosine"]
        s = r.get("speed", {})
        checks["≥ 2× transformers as cell2sentence runs it"] = s.get("vs_c2s", 0) >= TARGETS["vs_c2s"]
        checks["≥ 1× transformers at its best"] = s.get("vs_best", 0) >= TARGETS["vs_best"]
        checks["≥ 500 cells/s (workload, full sentences)"] = wl.get("all", {}).get("cells_per_s", 0) >= TARGETS["cells_per_s"]
        checks["paper workload < 10 min"] = wl.get("paper_workload_s", 1e9) < TARGETS["workload_s"]
        checks["MLP macro-F1 device vs CPU within 0.01"] = r.get("mlp", {}).get("diff", 1) <= TARGETS["mlp_macro_f1_diff"]
    r["checks"] = checks
    (out / "gpu-check.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / "gpu-check.md").write_text(markdown(r))
    print(markdown(r))
    sys.exit(0 if all(checks.values()) else 1)


def markdown(r):
    f = lambda v, d=3: "—" if v is None else (f"{v:.{d}g}" if isinstance(v, float) else str(v))
    lines = ["# GPU check" + (" (CPU dry run, small shape)" if r["dry_run_on_cpu"] else ""), ""]
    if r["gpu"]:
        lines += ["GPU (nvidia-smi): `" + r["gpu"].replace("\n", " · ") + "`", ""]
    lines += ["```", r["env"].strip(), "```", "", "| check | holds |", "|---|---|"]
    lines += [f"| {k} | {'yes' if v else '**no**'} |" for k, v in r["checks"].items()]
    lines += ["", "| measure | value |", "|---|---|"]
    for name, p in r["parity"].items():
        lines.append(f"| parity {name} vs CPU f32 ({p['cells']} prompts): max-abs / min cosine | {f(p['max_abs'])} / {f(p['min_cosine'], 6)} |")
    s = r.get("speed")
    if s:
        lines.append(f"| embedding: ours s / transformers (batch 8) s | {f(s['ours_s'])} / " + ", ".join(f"{k}: {f(v)}" for k, v in s['transformers_c2s_s'].items()) + " |")
        lines.append(f"| speed-up vs transformers as cell2sentence runs it | {f(s['vs_c2s'])}× |")
        if "vs_best" in s:
            lines.append(f"| speed-up vs transformers at its best (sdpa, batch {s['transformers_best_batch']}) | {f(s['vs_best'])}× |")
    w = r["workload"]
    for g in ("all", "hvg"):
        if g in w:
            lines.append(f"| workload {w['dataset']} {g} sentences: cells, s, cells/s (load and sentences included) | {w[g]['cells']}, {f(w[g]['seconds'])}, {f(w[g]['cells_per_s'])} |")
    if "paper_workload_s" in w:
        lines.append(f"| paper's workload ({PAPER_CELLS:,} cells × full and HVG), extrapolated | {f(w['paper_workload_s'])} s |")
    m = r.get("mlp")
    if m:
        lines.append(f"| MLP 5-fold macro-F1 device / CPU (diff) | {f(m['device_macro_f1'], 4)} / {f(m['cpu_macro_f1'], 4)} ({f(m['diff'])}) |")
    t = r.get("train_lm")
    if t:
        lines.append(f"| train-lm tokens/s (default small model) | {f(t['tokens_per_s'])} |")
    if r["failed_steps"]:
        lines += ["", "Failed steps (see logs/): " + ", ".join(r["failed_steps"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
