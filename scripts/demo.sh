#!/usr/bin/env bash
# Quickstart command one: create or reuse .venv, install (with the eval extra: Java for METEOR and the COCO
# tokenization), and run all three stages on the generated demo set.
source "$(dirname "$0")/venv.sh" eval
exec .venv/bin/python -m tools.end_to_end --demo "$@"
