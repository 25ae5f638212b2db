#!/usr/bin/env bash
# Packs what the GPU check needs beyond the working tree, for a machine with PyTorch VERSION (default
# 2.11, the lent H200's) and no network, into .cache/gpu-pack/ (ignored; carried beside the tree):
# the stripped binary built against that PyTorch (xz-compressed), kang2018.h5ad (the workload and MLP
# data) and the Pythia tokenizer.json. Checks that tree + pack stay under the 64 MiB a trip allows and
# prints the one command to run there (its results: one .tgz under $OUT).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION="${1:-2.11}"
PACK="$ROOT/.cache/gpu-pack"
BUILT="$ROOT/.cache/libtorch-$VERSION/cellsentence"
[ -x "$BUILT" ] || "$ROOT/scripts/build-for-libtorch.sh" "$VERSION"
rm -rf "$PACK"; mkdir -p "$PACK"
xz -T2 -6 -c "$BUILT" > "$PACK/cellsentence.xz"
for f in "$ROOT/data/kang2018.h5ad" "$ROOT/../shared/data/kang2018.h5ad"; do [ -f "$f" ] && { cp "$f" "$PACK/"; break; }; done
[ -f "$PACK/kang2018.h5ad" ] || { echo "error: kang2018.h5ad not found in data/ or ../shared/data" >&2; exit 1; }
cp "$ROOT/../shared/tokenizers/gpt-neox-20b/tokenizer.json" "$PACK/"
TREE=$(cd "$ROOT" && git ls-files -z -co --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
PACKB=$(du -cb "$PACK"/* | tail -1 | cut -f1)
echo "[gpu-pack] tree $((TREE / 1048576)) MiB + pack $((PACKB / 1048576)) MiB = $(((TREE + PACKB) / 1048576)) MiB (limit 64)" >&2
[ $((TREE + PACKB)) -le $((64 * 1048576)) ] || { echo "error: over the 64 MiB a trip allows" >&2; exit 1; }
cat <<CMD
# on the GPU machine, from the repository root (carry: .cache/gpu-pack):
PY=/opt/torch/.venv/bin/python3 && \\
\$PY -c "import lzma,shutil; shutil.copyfileobj(lzma.open('.cache/gpu-pack/cellsentence.xz'), open('/tmp/cellsentence','wb'))" && chmod +x /tmp/cellsentence && \\
export LD_LIBRARY_PATH="\$(\$PY -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib" && \\
scripts/gpu-check.sh --bin /tmp/cellsentence --data-dir .cache/gpu-pack --tokenizer .cache/gpu-pack/tokenizer.json --out /tmp/gpu-check; \\
tar -czf "\$OUT/gpu-check.tgz" -C /tmp gpu-check
CMD
