"""A camera with no hardware: publishes the bundled public-domain astronaut photo with known head motion.

    ros2 run face3d_ros sample_camera --ros-args -p rate:=15.0 -p frames:=90
    python -m face3d_ros.ros.sample_camera --ros-args -p transport:=compressed

Publishes `image` (sensor_msgs/Image bgr8) or `image/compressed` (JPEG), and `camera_info`, with the
sensor-data QoS that camera drivers use. Full-size raw images need the Fast DDS profile in
config/fastdds_large_images.xml on this (the publishing) side: see README "Large images over DDS".
"""
from __future__ import annotations

import sys

import cv2
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from face3d_ros.core.synthetic import Motion, moving_face
from face3d_ros.ros.conversions import bgr_to_image_msg

DEFAULT_MOTION = Motion(roll_amplitude_deg=15.0, scale_amplitude=0.15, period_s=4.0)


class SampleCamera(Node):
    def __init__(self):
        super().__init__("sample_camera")
        self.rate = self.declare_parameter("rate", 15.0).value
        self.frames = self.declare_parameter("frames", 0).value          # 0 = forever
        self.width = self.declare_parameter("width", 640).value
        self.height = self.declare_parameter("height", 480).value
        self.fx = self.declare_parameter("fx", 600.0).value
        self.frame_id = self.declare_parameter("frame_id", "camera_optical_frame").value
        self.compressed = self.declare_parameter("transport", "raw").value == "compressed"
        # A finite sequence should not be spent before anyone listens (discovery can take seconds).
        self.wait_for_subscribers = self.declare_parameter("wait_for_subscribers", True).value
        if self.rate <= 0 or self.width < 16 or self.height < 16 or self.fx <= 0:
            raise ValueError("rate and fx must be > 0 and the image at least 16x16")
        if self.compressed:
            self.image_pub = self.create_publisher(CompressedImage, "image/compressed", qos_profile_sensor_data)
        else:
            self.image_pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
        self.period_frames = int(round(DEFAULT_MOTION.period_s * self.rate))  # one loop of the motion
        self.sequence = list(moving_face(self.period_frames, self.rate, DEFAULT_MOTION, (self.width, self.height)))
        self.sent = 0
        self.timer = self.create_timer(1.0 / self.rate, self.publish)
        self.get_logger().info(f"publishing {self.width}x{self.height} at {self.rate} Hz "
                               f"({'JPEG' if self.compressed else 'bgr8'}), {self.frames or 'endless'} frames")

    def camera_info(self, header: Header) -> CameraInfo:
        info = CameraInfo(header=header, width=self.width, height=self.height, distortion_model="plumb_bob")
        info.k = [self.fx, 0.0, self.width / 2.0, 0.0, self.fx, self.height / 2.0, 0.0, 0.0, 1.0]
        info.p = [self.fx, 0.0, self.width / 2.0, 0.0, 0.0, self.fx, self.height / 2.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.d = [0.0] * 5
        return info

    def publish(self) -> None:
        if self.wait_for_subscribers and self.sent == 0 and (
                self.image_pub.get_subscription_count() == 0 or self.info_pub.get_subscription_count() == 0):
            self.get_logger().info("waiting for subscribers on the image and camera_info topics",
                                   throttle_duration_sec=5.0)
            return
        if self.frames and self.sent >= self.frames:
            self.timer.cancel()
            raise SystemExit(0)
        frame = self.sequence[self.sent % self.period_frames]
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.frame_id)
        self.info_pub.publish(self.camera_info(header))
        if self.compressed:
            ok, data = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            self.image_pub.publish(CompressedImage(header=header, format="jpeg", data=data.tobytes()))
        else:
            self.image_pub.publish(bgr_to_image_msg(frame.image, header))
        self.sent += 1


def main(args=None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = SampleCamera()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
