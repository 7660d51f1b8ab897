"""face3d_ros is not built by setuptools; this file only says how it is built.

The package is one ament_cmake package (package.xml): CMakeLists.txt generates the messages in msg/ and
installs the Python package face3d_ros/ beside them. colcon reads package.xml and runs CMake; pip reads
pyproject.toml and runs the same CMakeLists.txt through scikit-build-core. Neither runs this file. It stays
because the package layout lists it, and so that a `python setup.py install` habit fails with directions
instead of silently installing a copy without messages.
"""
import sys

USAGE = """\
face3d_ros is built by CMake (CMakeLists.txt), not by setup.py. Use one of:
  colcon build --packages-select face3d_ros                 # in a sourced ROS 2 workspace
  scripts/setup_env.sh                                      # .venv with ROS from PyPI, messages and node
  FACE3D_WITH_ROS=1 pip install --no-build-isolation .      # the same, into an existing venv with the ROS wheels
  pip install .                                             # the ROS-free core and face3d-estimate only
"""

if __name__ == "__main__":
    sys.stderr.write(USAGE)
    sys.exit(1)
