# Sourced by the other scripts: creates (or reuses) .venv with Python 3.11 and installs the project into it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
extras="${1:-}"
stamp=".venv/.installed-$(sha256sum setup.py | cut -c1-16)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  echo "installing the project and its dependencies into .venv (about 2 minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}"
  touch "$stamp"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
