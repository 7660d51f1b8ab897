#!/usr/bin/env python3
"""Print the node's parameters as the Markdown table in README.md (one source: face3d_ros/ros/params.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from face3d_ros.ros.params import all_params  # noqa: E402


def cell(spec) -> str:
    limits = []
    if spec.choices:
        limits.append(" \\| ".join(spec.choices))
    if spec.lo is not None or spec.hi is not None:
        limits.append(f"[{spec.lo}, {spec.hi}]")
    return ", ".join(limits)


print("| parameter | default | range | run time | description |")
print("|---|---|---|---|---|")
for spec in all_params().values():
    default = repr(spec.default) if isinstance(spec.default, str) else str(spec.default).lower() \
        if isinstance(spec.default, bool) else spec.default
    print(f"| `{spec.name}` | `{default}` | {cell(spec)} | {'yes' if spec.dynamic else 'no'} | "
          f"{spec.description} |")
