#!/usr/bin/env bash
# Build report/report.pdf from the run folders: bash scripts/build_report.sh [--results DIR] [--run SLOT=FOLDER ...]
# Installs LaTeX (latexmk and TeX Live from Debian/Ubuntu packages) first when it is missing.
# Every option is passed to the report builder (see `python -m report.build --help`).
set -euo pipefail
# Relative --results and --run folders are the caller's: the builder resolves them against this directory.
export A3_CALLER_DIR="$PWD"
cd "$(dirname "$0")/.."

bash scripts/install_latex.sh

# The build reads JSON with the standard library; the cross-run figures and the artifact numbers
# of Problem 1.3(e, f) also need the project's environment (torch, matplotlib), when present.
python=python3
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
exec "$python" -m report.build "$@"
