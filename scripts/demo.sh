#!/usr/bin/env bash
# The main job on a fresh machine, no camera, GPU or network needed: set everything up, then run the face3d
# node on the bundled sample camera over DDS and write out/demo/{summary.json,strip.jpg,annotated.mp4}.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
bash scripts/setup_env.sh
exec .venv/bin/python -m face3d_ros.ros.demo --out out/demo "$@"
