#!/usr/bin/env bash
# Install everything into .venv (once) and run the whole test suite on CPU, offline, including
# the end-to-end tests (marker e2e) that a plain `pytest` skips. Extra arguments go to pytest.
# The notebooks run on the smoke preset into $A3_SMOKE_RESULTS, and the report test builds the PDF from
# those run folders (tests/test_notebooks.py); it needs LaTeX, installed here from Debian packages when missing. Without
# them (an offline laptop) that test is skipped, unless A3_REQUIRE_LATEX=1 (CI) makes it an error.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh requirements-dev.txt
if ! bash scripts/install_latex.sh; then
    if [ "${A3_REQUIRE_LATEX:-0}" = 1 ]; then exit 1; fi
    echo "warning: LaTeX unavailable, the report PDF test will be skipped" >&2
fi
export A3_SMOKE_RESULTS="${A3_SMOKE_RESULTS:-$(mktemp -d)/smoke-results}"
# -m "e2e or not e2e": every test, overriding pytest.ini's -m "not e2e" (a later -m in "$@" wins).
exec .venv/bin/python -m pytest -m "e2e or not e2e" "$@"
