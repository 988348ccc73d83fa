#!/usr/bin/env bash
# The two set-up commands of the README, each a whole job on a fresh machine:
#
#   ./install.sh demo [--torch pypi|cpu|keep]   install bridge, then run `bridge demo` on a model that ships with
#                                               bridge (trace, summary, export, verify in onnxruntime, HTML view),
#                                               writing into ./bridge-demo
#   ./install.sh test [--torch pypi|cpu|keep] [-- PYTEST_ARGS]
#                                               install bridge with the test tools, then run the tests (.ci/run
#                                               calls this, then runs the slow tests and builds the docs)
#
# --torch: which torch to install (said on the command line: it decides a download of several GB)
#   pypi  torch 2.14.1 and torchvision 0.29.1 from PyPI (the default; with CUDA on Linux x86_64, CPU elsewhere)
#   cpu   the same releases as CPU-only wheels from download.pytorch.org (smaller; no GPU)
#   keep  the torch already installed (2.5 or newer), left as it is
# Where: the active virtualenv; else ./.venv, created if missing (--venv DIR for another; --no-venv for the
# python on PATH as it is, e.g. in a container).
set -euo pipefail
here="$PWD"  # the demo writes its files here (./bridge-demo)
cd "$(dirname "$0")"

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
job="${1:-}"
[ "$job" = demo ] || [ "$job" = test ] || usage
shift
torch=pypi venv=".venv" pytest_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --torch) torch="${2:-}"; shift 2 ;;
        --torch=*) torch="${1#--torch=}"; shift ;;
        --venv) venv="${2:-}"; shift 2 ;;
        --no-venv) venv=""; shift ;;
        --) shift; pytest_args=("$@"); break ;;
        *) echo "install.sh: unknown option $1" >&2; usage ;;
    esac
done
case "$torch" in pypi|cpu|keep) ;; *) echo "install.sh: --torch $torch: give pypi, cpu or keep" >&2; exit 2 ;; esac
export PIP_DISABLE_PIP_VERSION_CHECK=1

# ---- the python environment
if [ -n "${VIRTUAL_ENV:-}" ]; then
    echo "== using the active virtualenv $VIRTUAL_ENV"
elif [ -n "$venv" ]; then
    if [ ! -x "$venv/bin/python" ]; then
        echo "== creating the virtualenv $venv"
        python3 -m venv "$venv"
    fi
    # shellcheck disable=SC1091
    . "$venv/bin/activate"
    echo "== using the virtualenv $venv (afterwards: source $venv/bin/activate)"
fi
python -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "install.sh: bridge needs Python 3.10 or newer" >&2; exit 2; }

# ---- torch
case "$torch" in
    pypi) pip install torch==2.14.1 torchvision==0.29.1 ;;
    cpu) pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu ;;
    keep) python -c 'import torch' 2>/dev/null || { echo "install.sh: --torch keep, but torch is not installed here" >&2; exit 2; } ;;
esac

# ---- bridge, and the job
if [ "$job" = demo ]; then
    pip install -e .
    echo "== bridge demo"
    cd "$here"
    bridge demo
    exit
fi

# system tools the view tests use: graphviz (dot renders SVG/PNG), headless chromium + chromedriver (HTML view).
# Without them those tests skip, saying why.
if ! command -v dot >/dev/null || ! command -v chromedriver >/dev/null \
        || ! { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
    if ! command -v apt-get >/dev/null; then
        echo "== note: graphviz/chromium missing (install them with your package manager): the drawing and browser tests will skip" >&2
    elif [ "$(id -u)" -eq 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y graphviz chromium chromium-driver
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo DEBIAN_FRONTEND=noninteractive apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y graphviz chromium chromium-driver
    else
        echo "== note: graphviz/chromium missing and no root: the drawing and browser tests will skip" >&2
    fi
fi
pip install -e ".[test]" -e ".[docs]"
echo "== tests"
python -m pytest ${pytest_args[@]+"${pytest_args[@]}"}
