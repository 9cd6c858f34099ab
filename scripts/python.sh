#!/bin/sh
# The Python binding's tests (make test-python): numpy, pytest and
# ml_dtypes (numpy's bfloat16) from PyPI when missing, pytest against
# build/release/libqkv.so, then
# `pip install ./python` into a fresh virtual environment and `import qkv`.
set -eu
py=${PYTHON:-python3}
if ! "$py" -c "import numpy, pytest, ml_dtypes" >/dev/null 2>&1; then
    echo "python: installing numpy, pytest and ml_dtypes"
    "$py" -m pip install -q numpy pytest ml_dtypes
fi
QKV_LIBRARY="$PWD/build/release/libqkv.so" "$py" -m pytest -q python/tests
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
"$py" -m venv "$venv"
"$venv/bin/pip" install -q ./python
(cd "$venv" && "$venv/bin/python" -c "import qkv; print('python: pip install ./python gives qkv', qkv.version())")
rm -rf python/build python/*.egg-info
