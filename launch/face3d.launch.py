"""Start the face3d node: executable face3d_node of package face3d_ros, with config/face3d.yaml.

    ros2 launch face3d_ros face3d.launch.py image:=/camera/image_raw camera_info:=/camera/camera_info
    ros2 launch face3d_ros face3d.launch.py use_lifecycle:=true     # then: ros2 lifecycle set /face3d_node configure
                                                                     #       ros2 lifecycle set /face3d_node activate

Thin on purpose: it only wires the executable, the parameters file, the remappings and the Fast DDS profile,
so what it starts is what the tests start (`face3d-node --ros-args ...`).
- use_lifecycle:=false (default): the node configures and activates itself (parameter autostart:=true).
- use_lifecycle:=true: autostart:=false; the node waits, unconfigured, for the transitions from you or a
  lifecycle manager (e.g. nav2_lifecycle_manager).
- FASTDDS_DEFAULT_PROFILES_FILE (Fast DDS 3.x, Kilted) and FASTRTPS_DEFAULT_PROFILES_FILE (2.x, Jazzy) are
  set to the shipped config/fastdds_large_images.xml for the node (its
  debug_image is a full-size image) unless it is already set in the environment.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, NotSubstitution
from launch_ros.actions import Node

PACKAGE = "face3d_ros"
EXECUTABLE = "face3d_node"
PARAMS_FILE = os.path.join("config", "face3d.yaml")
FASTDDS_PROFILE = os.path.join("config", "fastdds_large_images.xml")
PROFILE_VARIABLE = ("FASTRTPS_DEFAULT_PROFILES_FILE" if os.environ.get("ROS_DISTRO") in ("humble", "iron", "jazzy")
                    else "FASTDDS_DEFAULT_PROFILES_FILE")


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    arguments = [
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="Image topic to read (with image_transport:=compressed in the params "
                                          "file, <image>/compressed is read)"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info",
                              description="CameraInfo topic of that camera"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="Namespace of the node and of its relative topics (faces, markers, ...)"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, PARAMS_FILE),
                              description="Parameters file (every parameter, commented: config/face3d.yaml)"),
        DeclareLaunchArgument("use_lifecycle", default_value="false",
                              description="false: the node configures and activates itself; true: it waits for "
                                          "the lifecycle transitions (ros2 lifecycle set or a lifecycle manager)"),
        DeclareLaunchArgument("log_level", default_value="info",
                              description="Log level of the node: debug, info, warn, error or fatal"),
    ]
    node = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name="face3d_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"),
                    {"autostart": NotSubstitution(LaunchConfiguration("use_lifecycle"))}],
        remappings=[("image", LaunchConfiguration("image")),
                    ("camera_info", LaunchConfiguration("camera_info"))],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
        # Fast DDS 3.x (Kilted) reads FASTDDS_..., 2.x (Humble, Jazzy) FASTRTPS_... (3.x warns it is deprecated)
        additional_env={PROFILE_VARIABLE: EnvironmentVariable(
            PROFILE_VARIABLE, default_value=os.path.join(share, FASTDDS_PROFILE))},
        output="screen",
        emulate_tty=True,
    )
    return LaunchDescription(arguments + [node])
