#!/usr/bin/env bash
# Install what the report needs when it is missing: latexmk, pdflatex (TeX Live) and pdftotext,
# from the Debian/Ubuntu packages. Exits non-zero when they are missing and cannot be installed.
set -euo pipefail
PACKAGES=(latexmk texlive-latex-base texlive-latex-recommended texlive-latex-extra poppler-utils)
if command -v latexmk >/dev/null && command -v pdflatex >/dev/null && command -v pdftotext >/dev/null; then
    exit 0
fi
echo "LaTeX tools not found: installing ${PACKAGES[*]} with apt-get" >&2
if ! command -v apt-get >/dev/null; then
    echo "error: apt-get is not available; install latexmk, a TeX Live with pdflatex, and pdftotext by hand" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
${sudo[@]+"${sudo[@]}"} apt-get update -qq
${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"
