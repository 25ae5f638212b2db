"""Tiles a raw-count .h5ad to a larger matrix (cells, genes) for the preprocessing benchmark:
rows repeat the dataset's cells, extra columns repeat its genes (names suffixed `-t1`, ...).

Usage: python bench/make_tiled.py IN.h5ad OUT.h5ad N_CELLS N_GENES
"""

import os
import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

warnings.filterwarnings("ignore")


def main() -> None:
    src, out, n_cells, n_genes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    a = ad.read_h5ad(src)
    x = sparse.csr_matrix(a.X)
    names = list(a.var_names)
    cols, k = [x], 0
    while sum(c.shape[1] for c in cols) < n_genes:
        k += 1
        take = min(x.shape[1], n_genes - sum(c.shape[1] for c in cols))
        cols.append(x[:, :take])
        names += [f"{g}-t{k}" for g in a.var_names[:take]]
    x = sparse.hstack(cols, format="csr")
    reps = -(-n_cells // x.shape[0])
    rows = np.tile(np.arange(x.shape[0]), reps)[:n_cells]
    x = x[rows]
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)])
    tiled = ad.AnnData(X=x.astype(np.float32), obs=obs, var=pd.DataFrame(index=names))
    part = out + ".part"
    tiled.write_h5ad(part)
    os.replace(part, out)
    print(f"wrote {out}: {tiled.shape}, nnz={x.nnz}")


if __name__ == "__main__":
    main()
