#!/usr/bin/env bash
# All three stages on a Flickr8k folder: bash scripts/flickr8k.sh DATA=<folder> ENCODER=<name or path> [more flags]
source "$(dirname "$0")/venv.sh" eval
DATA=""; ENCODER=""; rest=()
for arg in "$@"; do
  case "$arg" in
    DATA=*) DATA="${arg#DATA=}" ;;
    ENCODER=*) ENCODER="${arg#ENCODER=}" ;;
    *) rest+=("$arg") ;;
  esac
done
if [ -z "$DATA" ]; then echo "usage: bash scripts/flickr8k.sh DATA=<flickr8k folder> [ENCODER=<name or .tflite path>] [flags]" >&2; exit 2; fi
exec .venv/bin/python -m tools.end_to_end --data "$DATA" --config flickr8k ${ENCODER:+--encoder "$ENCODER"} "${rest[@]}"
