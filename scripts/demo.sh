#!/usr/bin/env bash
# make demo: a small zstd dataset in a temporary directory, served by the
# embedded default (coordinator + loader in one process), read for two epochs
# by two trainer ranks through the Python client.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
BIN=${SHARDSTREAM_BIN:-bin/shardstream}
work=$(mktemp -d -t shardstream-demo.XXXXXX)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== making a sample dataset in $work"
"$PYTHON" examples/make_dataset.py --output "$work/files" --samples 4096
"$BIN" pack --input "$work/files" --output "$work/dataset" --shard-size 1MiB --compress zstd

echo "== serving it: $BIN serve --data $work/dataset"
mkfifo "$work/ready"
"$BIN" serve --data "$work/dataset" --listen 127.0.0.1:0 >"$work/ready" 2>"$work/serve.log" &
server_pid=$!
# Readiness: the server prints "listening on ADDR" once it serves.
addr=""
exec 3<"$work/ready"
while read -r -t 60 line <&3; do
  case "$line" in "listening on "*) addr=${line#listening on }; break ;; esac
done
if [ -z "$addr" ]; then echo "server did not start:"; cat "$work/serve.log"; exit 1; fi
cat <&3 >/dev/null &
echo "   listening on $addr"

echo "== training: 2 ranks, 2 epochs"
"$PYTHON" examples/demo.py --address "$addr" --world-size 2 --epochs 2 --batch-size 32
