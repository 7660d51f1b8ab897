"""face3d-node / `ros2 run face3d_ros face3d_node`: runs the face3d lifecycle node.

    face3d-node --ros-args -r image:=/camera/image_raw -r camera_info:=/camera/camera_info \\
        --params-file config/face3d.yaml

With autostart:=true (the default) the node configures and activates itself and the process exits with
status 1 if that fails (the reason is logged); with autostart:=false it waits in the unconfigured state for
the lifecycle transitions (`ros2 lifecycle set /face3d_node configure`, then `activate`).
Ctrl-C (SIGINT) and SIGTERM end it cleanly with status 0.
"""
from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        from .node import Face3dNode
        node = Face3dNode()
        if node.get_parameter("autostart").value:
            for name, transition in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
                if transition() != TransitionCallbackReturn.SUCCESS:
                    node.get_logger().fatal(f"autostart: {name} failed (see the error above); exiting")
                    return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass   # Ctrl-C or SIGTERM: a normal end
    finally:
        if node is not None:
            try:
                node.destroy_node()
            except Exception:
                pass
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
