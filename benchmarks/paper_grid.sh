#!/usr/bin/env bash
# The paper's whole comparison (docs/examples/paper-grid.yaml) on a GPU machine, in sittings.
#
# Each call trains for at most MINUTES (default 8), then writes the tables of the runs done so
# far; calling again resumes with the next run (`minecube experiment --budget`). Needs the demo
# world and its cubes (`make demo` writes demo-world/ and demo-output/cubes.zarr) and
# minecube's dependencies; on a machine without internet, carry them as wheels in .whl/ (see
# the device notes) and this script installs them first.
#
#   bash benchmarks/paper_grid.sh 8            # one sitting of 8 minutes
#   cat demo-output/paper-grid/results.md      # the tables so far
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-8}"
python="${PYTHON:-python3}"  # the device image's python3 holds torch; here: PYTHON=.venv/bin/python
if [ -d .whl ]; then
    "$python" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
"$python" -c "import torch; print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu', 'torch', torch.__version__)"
"$python" -m minecube.cli experiment docs/examples/paper-grid.yaml --budget "$minutes"
if [ -n "${OUT:-}" ]; then  # the device tool brings back what is under $OUT
    cp demo-output/paper-grid/results.md demo-output/paper-grid/results.csv \
        demo-output/paper-grid/groups.csv "$OUT"/
fi
