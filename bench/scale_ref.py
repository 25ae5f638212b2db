"""The reference side of `cellsentence bench scale`: scanpy + cell2sentence on one synthetic atlas.

Steps (the paper's): read_h5ad; filter_cells(200); filter_genes(3); MT QC (< 6000 genes, < 50 % MT);
normalize_total; log1p(base=10); highly_variable_genes(seurat_v3, 2000) on the log data; Cell2Sentence
sentences of the HVGs. The address space is limited to 20 GiB so that running out of memory is a clean
MemoryError (reported as the run's failure) rather than the machine swapping. Prints one JSON line.

Usage: python bench/scale_ref.py IN.h5ad
"""

import importlib.metadata as md
import json
import resource
import sys
import time
import warnings

warnings.filterwarnings("ignore")
LIMIT = 20 * 1024**3
resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
import anndata as ad  # noqa: E402
import scanpy as sc  # noqa: E402
from scipy import sparse  # noqa: E402

from preprocess_ref import c2s_utils  # noqa: E402  (same folder: cell2sentence's utils module)


def run(path):
    C2S = c2s_utils()
    C2S.tqdm = lambda it, **kw: it
    a = ad.read_h5ad(path)
    sc.pp.filter_cells(a, min_genes=200)
    sc.pp.filter_genes(a, min_cells=3)
    a.var["mt"] = a.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(a, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    a = a[(a.obs["n_genes_by_counts"] < 6000) & (a.obs["pct_counts_mt"] < 50.0)].copy()
    sc.pp.normalize_total(a)
    sc.pp.log1p(a, base=10)
    hv = sc.pp.highly_variable_genes(a, n_top_genes=2000, flavor="seurat_v3", inplace=False)
    h = a[:, hv["highly_variable"].to_numpy()].copy()
    del a
    x = sparse.csr_matrix(h.X)
    x.eliminate_zeros()
    h.X = x
    s = C2S.generate_sentences(h, C2S.generate_vocabulary(h))
    return int(h.n_obs), int(sum(len(t) for t in s))


def main() -> None:
    t0 = time.perf_counter()
    out = {"tool": f"scanpy {sc.__version__} + cell2sentence {md.version('cell2sentence')}"}
    try:
        cells, nbytes = run(sys.argv[1])
        out.update(cells=cells, sentence_bytes=nbytes, failed=None)
    except MemoryError:
        out.update(cells=0, sentence_bytes=0, failed="out of memory (20 GiB)")
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


if __name__ == "__main__":
    main()
