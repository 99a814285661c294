#!/bin/sh
# Runs the agent's unit tests on Python 3.11 with EXACTLY the oldest versions of the
# agent's dependencies that setup.cfg declares (install_requires lower bounds, and the
# runtime extra), in a fresh .venv-oldest. Test tools (pytest, hypothesis) come from the
# test extra's range.
# Usage: scripts/test-oldest-deps.sh [PYTEST ARGS...]
set -eu
cd "$(dirname "$0")/.."

PYTHON=${PYTHON_OLDEST:-python3.11}
VENV=.venv-oldest

# The lower bound of NAME in setup.cfg ("name>=X,<Y" -> X): the pins follow the declaration.
lower_bound() {
    sed -n "s/^[[:space:]]*$1>=\([0-9][0-9a-z.]*\).*/\1/p" setup.cfg | head -n 1
}

pins=""
for name in requests cryptography pyudev tenacity py-sr25519-bindings; do
    version=$(lower_bound "$name")
    if [ -z "$version" ]; then
        echo "test-oldest-deps: no lower bound for $name in setup.cfg" >&2
        exit 2
    fi
    pins="$pins $name==$version"
done

"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || {
    echo "test-oldest-deps: $PYTHON is not Python 3.11" >&2
    exit 2
}
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
echo "test-oldest-deps: installing$pins" >&2
# shellcheck disable=SC2086 # the pin list is split into words on purpose
"$VENV/bin/python" -m pip install -q $pins 'pytest>=8,<10' 'pytest-timeout>=2.3,<3' 'hypothesis>=6,<7'
"$VENV/bin/python" -m pip freeze | grep -iE '^(requests|cryptography|pyudev|tenacity|py-sr25519-bindings)=='
# The project from the work tree (no install, so nothing is built into it), under its
# installed names (tdx_boot_attest.agent, ...) through a tree of links.
tree=build/import-tree/tdx_boot_attest
mkdir -p "$tree"
for part in agent server tdxsim; do
    ln -sfn "../../../$part" "$tree/$part"
done
PYTHONPATH="$(pwd)/build/import-tree:$(pwd)" "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    tests/agent "$@"
