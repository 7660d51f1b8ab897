"""messages.points / marker_array: the fast Point building publishes exactly what Point(x=, y=, z=) would."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("face3d_ros.msg", reason="messages not built: run scripts/setup_env.sh")

from geometry_msgs.msg import Point  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from face3d_ros.core.types import Face, Roi  # noqa: E402
from face3d_ros.ros import messages  # noqa: E402


def test_points_equal_constructor():
    xyz = np.random.default_rng(0).normal(size=(50, 3))
    fast = messages.points(xyz)
    slow = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in xyz]
    assert fast == slow
    m_fast, m_slow = Marker(points=fast), Marker(points=slow)
    # through the C conversion and back (raw CDR bytes differ in their uninitialised padding)
    assert deserialize_message(serialize_message(m_fast), Marker) == m_slow
    assert messages.points(np.zeros((0, 3))) == []


def test_marker_array_mesh_matches_reference():
    rng = np.random.default_rng(1)
    vertices = rng.normal(size=(468, 3)) * 0.05 + [0, 0, 0.6]
    triangles = rng.integers(0, 478, size=(900, 3))          # some refer to iris points the face lacks
    face = Face(bbox=np.array([0.0, 0, 10, 10]), detection_score=0.9,
                roi=Roi(center=np.zeros(2), size=10.0, rotation=0.0), vertices_cam=vertices,
                R_cam_face=np.eye(3), t_cam_face=np.array([0.0, 0.0, 0.6]), track_id="7")
    header = Header(frame_id="cam")
    for _ in range(2):   # the second call uses the cached indices
        msg = messages.marker_array(header, [face], triangles)
        mesh = msg.markers[0]
        tri = triangles[triangles.max(axis=1) < len(vertices)]
        expected = [Point(x=x, y=y, z=z) for x, y, z in vertices[tri.reshape(-1)].tolist()]
        assert mesh.type == Marker.TRIANGLE_LIST and mesh.points == expected
        reference = MarkerArray(markers=[Marker(header=header, ns="7", id=messages.MESH_ID, type=Marker.TRIANGLE_LIST,
                                                action=Marker.ADD, lifetime=messages.MARKER_LIFETIME,
                                                points=expected)])
        reference.markers[0].pose.orientation.w = 1.0
        reference.markers[0].scale.x = reference.markers[0].scale.y = reference.markers[0].scale.z = 1.0
        reference.markers[0].color = mesh.color
        assert mesh == reference.markers[0]   # every field (CDR padding bytes are not deterministic)
