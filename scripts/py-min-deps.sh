#!/usr/bin/env bash
# make py-test-min-deps: the Python client's tests against the lower bounds
# of pyproject.toml that can be installed here (docs/python-client.md,
# "Dependency bounds"). A venv of its own, without pip; the other packages
# (torch, grpcio, pytest) come from .venv through a .pth path; the old
# protobuf and numpy are installed into the venv itself, so they come first
# on sys.path. Downloads them from PyPI (not part of make test).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PROTOBUF=${PROTOBUF:-7.35.1}
NUMPY=${NUMPY:-1.23.5}
work=$(mktemp -d -t shardstream-min-deps.XXXXXX)
trap 'rm -rf "$work"' EXIT

"$PY" -m venv --without-pip "$work/venv"
site=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$PY" -c "import pathlib, torch; print(pathlib.Path(torch.__file__).parents[1])" > "$site/shared-venv.pth"
"$PY" -m pip install -q --no-deps --target "$site" "protobuf==$PROTOBUF" "numpy==$NUMPY"
"$work/venv/bin/python" -c "import numpy, google.protobuf as p; print('numpy', numpy.__version__, 'protobuf', p.__version__)"
cd clients/python
PYTHONPATH=. "$work/venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/test_dataset_unit.py tests/test_columnar.py tests/test_decoders.py \
  tests/test_server.py tests/test_client_features.py -k "not workers"
