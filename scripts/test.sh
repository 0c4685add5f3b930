#!/usr/bin/env bash
# Quickstart command two: create or reuse .venv, install the project with its test extra, run the whole suite.
source "$(dirname "$0")/venv.sh" test
exec .venv/bin/python -m pytest -n 2 --dist loadfile "$@"
