# Sourced: the reference venv .venv-lm (PyTorch + transformers + tokenizers, pinned in
# tests/fixtures/requirements-lm.txt) for the LM fixtures and the embedding benchmark. Idempotent.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LMREF="$ROOT/.venv-lm"
if ! "$LMREF/bin/python" -c "import torch, transformers, tokenizers, h5py, sklearn" 2>/dev/null; then
  echo "[setup] creating $LMREF (torch, transformers; one-time)" >&2
  python3 -m venv "$LMREF"
  "$LMREF/bin/pip" install -q -r "$ROOT/tests/fixtures/requirements-lm.txt"
fi
export LMREF
