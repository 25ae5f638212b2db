#!/usr/bin/env bash
# Regenerates tests/fixtures/reference/*.json with the pinned reference tools (scanpy, cell2sentence).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REF="$ROOT/.venv-ref"
if ! "$REF/bin/python" -c "import scanpy, skmisc" 2>/dev/null; then
  python3 -m venv "$REF"
  "$REF/bin/pip" install -q -r "$ROOT/tests/fixtures/requirements.lock"
  "$REF/bin/pip" install -q --no-deps cell2sentence==1.2.0
fi
"$ROOT/scripts/fetch-data.sh"
"$REF/bin/python" "$ROOT/tests/fixtures/make_synthetic.py"
"$REF/bin/python" "$ROOT/tests/fixtures/make_fixtures.py" "$@"
"$REF/bin/python" "$ROOT/tests/fixtures/make_deviance_fixture.py"
"$REF/bin/python" "$ROOT/tests/fixtures/make_pearson_fixture.py"
"$REF/bin/python" "$ROOT/tests/fixtures/make_quality_fixture.py"
