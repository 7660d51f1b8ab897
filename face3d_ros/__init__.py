"""face3d_ros: real-time 3D face geometry and metric head pose.

`face3d_ros.core` is the vision core (no ROS imports); `face3d_ros.ros` is the ROS 2 adapter.
"""
# The message build installs a generated `face3d_ros/msg` beside this source package; when running
# from the source tree, extend the package path so both halves are importable.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"
