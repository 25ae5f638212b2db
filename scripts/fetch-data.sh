#!/usr/bin/env bash
# Fetches the default datasets from PyPI wheels (never from a hub) into data/ (git-ignored). Idempotent.
#   data/baron_human.h5ad     Baron et al. 2016 human pancreas (came==0.1.13, came/sample_data.zip), MIT
#   data/corpus/baron_mouse.h5ad  Baron et al. 2016 mouse pancreas (same wheel and zip), MIT: only in the
#                             pretraining corpus (`pretrain-lm`), not in the experiments' `available` list
#   data/pbmc68k_reduced.h5ad 10x PBMC 68k reduced, log-normalized only (scanpy==1.11.5), BSD-3
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$ROOT/data"
PY="${PYTHON:-python3}"
mkdir -p "$DATA"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$DATA/corpus"
if [ ! -s "$DATA/baron_human.h5ad" ] || [ ! -s "$DATA/corpus/baron_mouse.h5ad" ]; then
  echo "[data] fetching came==0.1.13 wheel for raw-Baron_{human,mouse}.h5ad" >&2
  "$PY" -m pip download -q --no-deps -d "$tmp" came==0.1.13
  "$PY" - "$tmp" "$DATA" <<'PY'
import glob, io, os, sys, zipfile
tmp, data = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(glob.glob(os.path.join(tmp, "came-0.1.13-*.whl"))[0])
inner = zipfile.ZipFile(io.BytesIO(whl.read("came/sample_data.zip")))
for species, folder in (("human", data), ("mouse", os.path.join(data, "corpus"))):
    dest = os.path.join(folder, f"baron_{species}.h5ad")
    if os.path.exists(dest) and os.path.getsize(dest) > 0:
        continue
    name = next(n for n in inner.namelist() if n.endswith(f"raw-Baron_{species}.h5ad"))
    with open(dest + ".part", "wb") as f:
        f.write(inner.read(name))
    os.replace(dest + ".part", dest)
PY
fi
if [ ! -s "$DATA/pbmc68k_reduced.h5ad" ]; then
  echo "[data] fetching scanpy==1.11.5 wheel for 10x_pbmc68k_reduced.h5ad" >&2
  "$PY" -m pip download -q --no-deps -d "$tmp" scanpy==1.11.5
  # the wheel's file uses the pre-0.7 anndata layout (compound datasets); rewrite it once with
  # anndata into the current layout, which is what cellsentence (and anndata-rs) read
  "$PY" -c "import anndata" 2>/dev/null || "$PY" -m pip install -q "anndata==0.12.6" "pandas<3"
  "$PY" - "$tmp" "$DATA" <<'PY'
import glob, os, sys, warnings, zipfile
import anndata
warnings.filterwarnings("ignore")
tmp, data = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(glob.glob(os.path.join(tmp, "scanpy-1.11.5-*.whl"))[0])
legacy = os.path.join(tmp, "legacy.h5ad")
with open(legacy, "wb") as f:
    f.write(whl.read("scanpy/datasets/10x_pbmc68k_reduced.h5ad"))
part = os.path.join(data, "pbmc68k_reduced.h5ad.part")
anndata.read_h5ad(legacy).write_h5ad(part)
os.replace(part, os.path.join(data, "pbmc68k_reduced.h5ad"))
PY
fi
