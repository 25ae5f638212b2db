"""The reference side of `cellsentence bench preprocess`: scanpy + cell2sentence on one file.

Steps (the paper's): read_h5ad; filter_cells(200); filter_genes(3); MT QC (< 6000 genes, < 50 % MT);
normalize_total; log1p(base=10); highly_variable_genes(seurat_v3, 2000) on the log data; Cell2Sentence
sentences from all genes and from the HVGs. Prints one JSON line: seconds per step, peak RSS.

Usage: python bench/preprocess_ref.py IN.h5ad
"""

import importlib.metadata as md
import importlib.util
import json
import pathlib
import resource
import sys
import time
import warnings

warnings.filterwarnings("ignore")
import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import scanpy as sc  # noqa: E402
from scipy import sparse  # noqa: E402


def c2s_utils():
    path = pathlib.Path(md.distribution("cell2sentence").locate_file("cell2sentence/utils.py"))
    spec = importlib.util.spec_from_file_location("c2s_utils", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    baseline = int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
    C2S = c2s_utils()
    C2S.tqdm = lambda it, **kw: it  # no progress output in the benchmark
    t = {}
    t0 = time.perf_counter()
    a = ad.read_h5ad(sys.argv[1])
    t["read"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc.pp.filter_cells(a, min_genes=200)
    sc.pp.filter_genes(a, min_cells=3)
    a.var["mt"] = a.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(a, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    a = a[(a.obs["n_genes_by_counts"] < 6000) & (a.obs["pct_counts_mt"] < 50.0)].copy()
    t["qc"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a, base=10)
    t["normalize_log"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hv = sc.pp.highly_variable_genes(a, n_top_genes=2000, flavor="seurat_v3", inplace=False)
    t["hvg"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = sparse.csr_matrix(a.X)
    x.eliminate_zeros()
    a.X = x
    s_all = C2S.generate_sentences(a, C2S.generate_vocabulary(a))
    t["sentences_all"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    h = a[:, hv["highly_variable"].to_numpy()].copy()
    s_hvg = C2S.generate_sentences(h, C2S.generate_vocabulary(h))
    t["sentences_hvg"] = time.perf_counter() - t0
    out = {
        "tool": f"scanpy {sc.__version__} + cell2sentence {md.version('cell2sentence')}",
        "seconds": t,
        "total_seconds": sum(t.values()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_rss_mb": baseline,
        "cells": int(a.n_obs),
        "genes": int(a.n_vars),
        "sentence_bytes": int(sum(len(s) for s in s_all) + sum(len(s) for s in s_hvg)),
        "mean_words_all": float(np.mean([s.count(" ") + 1 for s in s_all])),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
