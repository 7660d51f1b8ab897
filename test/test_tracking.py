"""Tracking and smoothing on synthetic faces: the canonical face mesh posed in front of a pinhole camera."""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest

from face3d_ros.core.config import SmoothingConfig, TrackingConfig
from face3d_ros.core.smoothing import (FaceSmoother, OneEuroFilter, RotationOneEuroFilter, matrix_from_quat,
                                       quat_from_matrix, quat_multiply, smoothing_factor)
from face3d_ros.core.tracking import (COASTING, TENTATIVE, TRACKED, FaceTracker, box_iou,
                                      track_id_from_index)
from face3d_ros.core.types import Face, Roi

T0_NS = 1_700_000_000_000_000_000   # a realistic epoch stamp: dt must come from integer differences
PERIOD_NS = 33_333_333              # 30 Hz
FX = 600.0
CX, CY = 320.0, 240.0
# A frontal face looking into the camera (columns: face x, y, z in the optical frame).
FRONTAL = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]])
ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")

REPO = Path(__file__).resolve().parents[1]
MESH_CANDIDATES = [REPO / "face3d_ros/core/data/canonical_face_model.obj",
                   REPO / "models/canonical_face_model.obj",
                   Path("/work/shared/data/canonical_face_geometry/canonical_face_model.obj")]


def canonical_points_face_frame() -> np.ndarray:
    """The 468 canonical mesh vertices in REP-155's face frame (m): origin between the eyes, x out of the
    face, y to the person's left, z up. An ellipsoid cap of 468 points stands in if no mesh is installed."""
    for path in MESH_CANDIDATES:
        if path.exists():
            v = np.array([[float(s) for s in line.split()[1:4]]
                          for line in path.read_text().splitlines() if line.startswith("v ")]) / 100.0
            p = v[:, [2, 0, 1]]  # canonical: x to the person's left, y up, z out of the face
            return p - p[[33, 133, 263, 362]].mean(axis=0)
    rng = np.random.default_rng(0)
    d = rng.normal(size=(468, 3))
    d[:, 0] = np.abs(d[:, 0])
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return d * np.array([0.05, 0.078, 0.088]) - np.array([0.03, 0.0, 0.0])


POINTS = canonical_points_face_frame()


def rotation_about(axis, angle) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def angle_between(R1, R2) -> float:
    return math.acos(np.clip((np.trace(R1.T @ R2) - 1) / 2, -1, 1))


def make_face(center_px=(320.0, 240.0), depth_m=1.0, R=FRONTAL, noise_px=0.0, noise_rad=0.0, noise_m=0.0,
              rng=None, pose_confidence=0.9) -> Face:
    """A face whose eye midpoint projects to `center_px` at `depth_m`, with optional measurement noise."""
    rng = rng or np.random.default_rng(1)
    t_true = depth_m * np.array([(center_px[0] - CX) / FX, (center_px[1] - CY) / FX, 1.0])
    R_meas = R @ rotation_about(rng.normal(size=3), noise_rad * rng.normal()) if noise_rad else R.copy()
    t_meas = t_true + noise_m * rng.normal(size=3)
    truth_cam = POINTS @ R.T + t_true
    landmarks = np.column_stack([FX * truth_cam[:, 0] / truth_cam[:, 2] + CX,
                                 FX * truth_cam[:, 1] / truth_cam[:, 2] + CY,
                                 FX * (truth_cam[:, 2] - depth_m) / depth_m])
    landmarks += noise_px * rng.normal(size=landmarks.shape)
    bbox = np.array([*landmarks[:, :2].min(axis=0), *landmarks[:, :2].max(axis=0)])
    roi = Roi(center=(bbox[:2] + bbox[2:]) / 2, size=1.5 * float(max(bbox[2:] - bbox[:2])), rotation=0.0)
    return Face(bbox=bbox, detection_score=0.9, roi=roi, landmark_score=0.95, landmarks_px=landmarks,
                R_cam_face=R_meas, t_cam_face=t_meas, vertices_cam=POINTS @ R_meas.T + t_meas,
                fit_rmse_px=1.0, pose_confidence=pose_confidence)


def stamp(i: int) -> int:
    return T0_NS + i * PERIOD_NS


def new_tracker(**tracking) -> FaceTracker:
    return FaceTracker(TrackingConfig(**tracking), SmoothingConfig())


def ids_by_x(faces) -> list[tuple[float, str]]:
    return sorted((float(f.bbox[0]), f.track_id) for f in faces)


# ---------------------------------------------------------------- ids and track life

def test_track_ids_are_short_valid_ros_names_and_never_repeat():
    assert [track_id_from_index(i) for i in (0, 1, 25, 26, 27, 701, 702)] == \
        ["a", "b", "z", "aa", "ab", "zz", "aaa"]
    ids = [track_id_from_index(i) for i in range(20000)]
    assert len(set(ids)) == len(ids) and all(ID_PATTERN.match(i) for i in ids)

    tracker = new_tracker(min_hits=1, max_age=0)
    seen = []
    for i in range(40):  # a face jumping far away each image: a new track, the old one dropped
        faces = tracker.update([make_face(center_px=(100.0 + 400 * (i % 2), 240.0))], stamp(i))
        seen += [f.track_id for f in faces]
    assert len(seen) == 40 and len(set(seen)) == 40
    assert all(ID_PATTERN.match(i) for i in seen)


def test_id_stable_across_occlusion_shorter_than_max_age():
    tracker = new_tracker(min_hits=2, max_age=5)
    rng = np.random.default_rng(2)
    out = [tracker.update([make_face((200.0 + 3 * i, 240.0), noise_px=1.0, rng=rng)], stamp(i)) for i in range(10)]
    assert out[0] == []  # tentative until min_hits
    track_id = out[-1][0].track_id
    for i in range(10, 15):  # 5 unseen images = max_age: still alive, published as coasting
        (face,) = tracker.update([], stamp(i))
        assert (face.track_id, face.track_state) == (track_id, COASTING)
        assert tracker.removed_ids == []
    (face,) = tracker.update([make_face((245.0, 240.0), noise_px=1.0, rng=rng)], stamp(15))
    assert (face.track_id, face.track_state, face.track_age) == (track_id, TRACKED, 15)


def test_new_id_after_occlusion_longer_than_max_age():
    tracker = new_tracker(min_hits=1, max_age=5)
    for i in range(10):
        (face,) = tracker.update([make_face()], stamp(i))
    old_id = face.track_id
    for i in range(10, 16):
        tracker.update([], stamp(i))
    assert tracker.removed_ids == [old_id] and tracker.tracks == []
    (face,) = tracker.update([make_face()], stamp(16))
    assert face.track_id != old_id


def test_a_face_jumping_a_face_width_keeps_its_id_and_restarts_its_filters():
    """Frames dropped or a fast pan: the face's box no longer overlaps its track's. The track lost in this
    image takes the new face near it (no frozen ghost coasting beside a new id) and starts its filters
    afresh (smoothing across the jump would drag the pose for several images)."""
    tracker = new_tracker(min_hits=2, max_age=5)
    for i in range(6):
        faces = tracker.update([make_face((200.0, 240.0))], stamp(i))
    (before,) = faces
    size = math.sqrt(np.prod(before.bbox[2:] - before.bbox[:2]))
    jumped = make_face((200.0 + 1.3 * size, 240.0))
    assert box_iou(before.bbox[None], jumped.bbox[None])[0, 0] == 0.0
    (face,) = tracker.update([jumped], stamp(6))
    assert (face.track_id, face.track_state) == (before.track_id, TRACKED) and tracker.removed_ids == []
    np.testing.assert_array_equal(face.landmarks_px, jumped.landmarks_px)
    assert [f.track_id for f in tracker.update([make_face((200.0 + 1.3 * size, 240.0))], stamp(7))] == ["a"]


def test_a_new_face_takes_no_id_it_is_not_plainly_the_continuation_of():
    """Reacquisition is for one face that jumped: a face twice the size, a face farther than
    REACQUIRE_DISTANCE face sizes, or a face beside a track still matched in this image gets an id of its own;
    a tentative track is not continued either."""
    for size_factor, distance, keep_first in ((1.0, 2.5, False), (2.0, 0.9, False), (1.0, 1.0, True)):
        tracker = new_tracker(min_hits=2, max_age=5)
        for i in range(6):
            tracker.update([make_face((200.0, 240.0))], stamp(i))
        size = math.sqrt(np.prod(tracker.tracks[0].bbox[2:] - tracker.tracks[0].bbox[:2]))
        other = make_face((200.0 + distance * size, 240.0), depth_m=1.0 / size_factor)
        faces = [make_face((200.0, 240.0)), other] if keep_first else [other]
        tracker.update(faces, stamp(6))
        assert len(tracker.tracks) == 2, (size_factor, distance, keep_first)
    tracker = new_tracker(min_hits=3)
    tracker.update([make_face((200.0, 240.0))], stamp(0))
    tracker.update([make_face((300.0, 240.0))], stamp(1))
    assert [t.track_id for t in tracker.tracks] == ["b"]


def test_new_id_after_gap_longer_than_max_gap_s():
    tracker = new_tracker(min_hits=1, max_age=1000, max_gap_s=0.5)
    tracker.update([make_face()], stamp(0))
    old_id = tracker.tracks[0].track_id
    tracker.update([], stamp(10))   # 0.33 s unseen: coasting
    assert tracker.tracks[0].state == COASTING
    (face,) = tracker.update([make_face()], stamp(20))  # 0.67 s: dropped before matching
    assert old_id in tracker.removed_ids and face.track_id != old_id


def test_gap_in_the_image_stream_keeps_the_id_but_restarts_the_filters():
    tracker = new_tracker(min_hits=1, max_gap_s=0.5)
    for i in range(5):
        tracker.update([make_face((300.0 + i, 240.0))], stamp(i))
    raw = make_face((310.0, 240.0))
    (face,) = tracker.update([raw], stamp(5) + 2 * 10**9)  # no image for 2 s, the face still there
    assert face.track_id == "a"
    np.testing.assert_array_equal(face.landmarks_px, raw.landmarks_px)


def crossing_scene(occlude_behind: bool):
    """Face A moves right, face B left, 5 px lower: their boxes overlap by up to IoU 0.74 as they cross.
    With `occlude_behind`, B is hidden (not detected) while its box overlaps A's by IoU > 0.3."""
    tracker = new_tracker(min_hits=2, max_age=5)
    rng = np.random.default_rng(3)
    history = []
    for i in range(31):
        a = make_face((170.0 + 10 * i, 240.0), noise_px=0.5, rng=rng)
        b = make_face((460.0 - 10 * i, 245.0), noise_px=0.5, rng=rng)
        overlap = box_iou(a.bbox[None], b.bbox[None])[0, 0]
        hidden = occlude_behind and overlap > 0.3
        faces = [a] if hidden else [b, a] if i % 2 else [a, b]
        history.append((overlap, hidden, {"A": a.bbox, "B": b.bbox}, tracker.update(faces, stamp(i))))
    return history


@pytest.mark.parametrize("occlude_behind", [False, True])
def test_faces_crossing_paths_keep_their_ids(occlude_behind):
    history = crossing_scene(occlude_behind)
    assert max(overlap for overlap, *_ in history) > 0.7
    assert sum(hidden for _, hidden, *_ in history) == (4 if occlude_behind else 0)
    ids = {}
    for _, hidden, truth, faces in history[1:]:
        assert len(faces) == 2
        for face in faces:
            if face.track_state == COASTING:
                assert hidden
                continue
            who = min(truth, key=lambda name: np.abs(truth[name] - face.bbox).max())
            assert face.track_id == ids.setdefault(who, face.track_id)
    assert set(ids) == {"A", "B"} and ids["A"] != ids["B"]


def test_face_entering_and_leaving_does_not_change_the_others_id():
    tracker = new_tracker(min_hits=2, max_age=3)
    rng = np.random.default_rng(4)
    ids_a, ids_b = set(), set()
    for i in range(40):
        faces = [make_face((150.0, 240.0), noise_px=1.0, rng=rng)]
        if 10 <= i < 20:
            faces.append(make_face((480.0, 250.0), noise_px=1.0, rng=rng))  # B enters, then leaves
        if i >= 30:
            faces.insert(0, make_face((480.0, 250.0), noise_px=1.0, rng=rng))  # C where B was
        for face in tracker.update(faces, stamp(i)):
            if face.bbox[0] < 300:
                ids_a.add(face.track_id)
            elif i < 30:
                ids_b.add(face.track_id)
            else:
                assert face.track_id not in ids_b | ids_a
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b


def test_tentative_tracks_only_on_request():
    tracker = new_tracker(min_hits=3)
    assert tracker.update([make_face()], stamp(0)) == []
    (face,) = tracker.update([make_face()], stamp(1), include_tentative=True)
    assert face.track_state == TENTATIVE and tracker.published_faces() == []
    (face,) = tracker.update([make_face()], stamp(2))
    assert face.track_state == TRACKED and face.track_age == 2


def test_unmatched_tentative_track_is_dropped():
    tracker = new_tracker(min_hits=3)
    tracker.update([make_face()], stamp(0))
    tracker.update([], stamp(1))
    assert tracker.tracks == [] and tracker.removed_ids == ["a"]


def test_run_time_config_changes_apply_on_next_update():
    tracker = new_tracker(min_hits=5)
    assert tracker.update([make_face()], stamp(0)) == []
    tracker.tracking.min_hits = 2
    assert [f.track_state for f in tracker.update([make_face()], stamp(1))] == [TRACKED]
    tracker.smoothing.enabled = False
    raw = make_face((330.0, 240.0), noise_px=2.0)
    (face,) = tracker.update([raw], stamp(2))
    np.testing.assert_array_equal(face.landmarks_px, raw.landmarks_px)
    tracker.smoothing = dataclasses.replace(tracker.smoothing, enabled=True)
    tracker.update([make_face((330.0, 240.0))], stamp(3))
    (face,) = tracker.update([raw], stamp(4))
    assert not np.array_equal(face.landmarks_px, raw.landmarks_px)


def test_caller_faces_are_neither_modified_nor_kept_and_outputs_are_read_only():
    tracker = new_tracker(min_hits=1)
    rng = np.random.default_rng(5)
    for i in range(3):
        raw = make_face(noise_px=1.0, noise_rad=0.01, rng=rng)
        before = dataclasses.replace(raw, landmarks_px=raw.landmarks_px.copy(), bbox=raw.bbox.copy(),
                                     R_cam_face=raw.R_cam_face.copy(), vertices_cam=raw.vertices_cam.copy())
        (face,) = tracker.update([raw], stamp(i))
        assert raw.track_id == "" and face.track_id == "a"
        for name in ("bbox", "landmarks_px", "R_cam_face", "vertices_cam"):
            np.testing.assert_array_equal(getattr(raw, name), getattr(before, name))
            assert not np.shares_memory(getattr(raw, name), getattr(face, name))
        for name in ("bbox", "landmarks_px", "R_cam_face", "t_cam_face", "vertices_cam"):
            with pytest.raises(ValueError, match="read-only"):  # the tracker's state: loud, not corrupted
                getattr(face, name)[...] = 0.0
        face.track_id = "changed"    # the Face object itself is the caller's
        assert tracker.tracks[0].face.track_id == "a"
        raw.landmarks_px[:] = -1.0   # e.g. a reused inference buffer
        raw.bbox[:] = -1.0
        assert not np.any(tracker.tracks[0].last_landmarks_px == -1.0)
        assert not np.any(tracker.tracks[0].bbox == -1.0)


def test_backwards_and_equal_stamps_do_not_crash_nor_make_nan():
    tracker = new_tracker(min_hits=1)
    rng = np.random.default_rng(6)
    stamps = [stamp(0), stamp(1), stamp(1), stamp(2), stamp(0), stamp(0), stamp(1), stamp(1) + 1]
    for k, s in enumerate(stamps):
        faces = tracker.update([make_face((300.0 + k, 240.0), noise_px=1.0, noise_rad=0.01, rng=rng)], s)
        (face,) = faces
        for a in (face.landmarks_px, face.R_cam_face, face.t_cam_face, face.vertices_cam):
            assert np.isfinite(a).all()
        if k == 4:  # the bag looped: every track dropped, a new id, fresh filters
            assert tracker.removed_ids == ["a"] and face.track_id == "b" and face.track_age == 0


# ---------------------------------------------------------------- filters

def test_one_euro_equal_stamp_returns_previous_and_backwards_stamp_resets():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.5)
    f(np.zeros(3), stamp(0))
    previous = f(np.ones(3), stamp(1)).copy()
    np.testing.assert_array_equal(f(np.full(3, 5.0), stamp(1)), previous)
    np.testing.assert_array_equal(f(np.full(3, 7.0), stamp(0)), np.full(3, 7.0))

    r = RotationOneEuroFilter()
    r(FRONTAL, stamp(0))
    previous = r(FRONTAL @ rotation_about([0, 0, 1], 0.2), stamp(1))
    np.testing.assert_allclose(r(FRONTAL @ rotation_about([0, 0, 1], 1.0), stamp(1)), previous)
    R_new = FRONTAL @ rotation_about([1, 0, 0], 0.5)
    np.testing.assert_allclose(r(R_new, stamp(0)), R_new, atol=1e-12)


def test_one_euro_float_path_matches_the_array_path_to_the_bit():
    # A handful of values (a translation) is filtered on floats, more on arrays: the same operations.
    rng = np.random.default_rng(11)
    samples = np.cumsum(rng.normal(0.0, 0.02, (60, 3)), axis=0) + rng.normal(0.0, 0.003, (60, 3))
    small, large = OneEuroFilter(min_cutoff=0.3, beta=4.0), OneEuroFilter(min_cutoff=0.3, beta=4.0)
    padded = np.zeros((60, 100))     # more values than the float path takes; the first three are the sample
    padded[:, :3] = samples
    for i, x in enumerate(samples):
        t_ns = stamp(i) + int(rng.integers(-3_000_000, 3_000_000))   # jittered stamps
        np.testing.assert_array_equal(small(x, t_ns, scale=0.16), large(padded[i], t_ns, scale=0.16)[:3])


def test_new_track_filters_start_from_the_raw_input():
    tracker = new_tracker(min_hits=1)
    rng = np.random.default_rng(7)
    for i in range(5):
        tracker.update([make_face((200.0, 240.0), noise_px=1.0, rng=rng)], stamp(i))
    raw = make_face((500.0, 240.0), noise_px=1.0, noise_rad=0.02, noise_m=0.01, rng=rng)
    faces = tracker.update([make_face((200.0, 240.0), rng=rng), raw], stamp(5))
    new = next(f for f in faces if f.track_id != "a")
    for name in ("landmarks_px", "t_cam_face", "vertices_cam"):
        np.testing.assert_allclose(getattr(new, name), getattr(raw, name), atol=1e-9)
    assert angle_between(new.R_cam_face, raw.R_cam_face) < 1e-7


def test_sign_flipped_quaternions_do_not_spin_the_filtered_rotation():
    rng = np.random.default_rng(8)
    filt = RotationOneEuroFilter(min_cutoff=1.0, beta=0.5)
    for i in range(200):
        truth = FRONTAL @ rotation_about([0, 0, 1], 0.6 * math.sin(i / 30.0))  # turning the head
        noisy = truth @ rotation_about(rng.normal(size=3), math.radians(1.0) * rng.normal())
        q = quat_from_matrix(noisy) * rng.choice([-1.0, 1.0])
        q_out = filt.filter_quaternion(q, stamp(i))
        assert angle_between(matrix_from_quat(q_out), truth) < math.radians(4.0)
        if i:
            step = 2 * math.acos(min(1.0, abs(float(q_out @ q_prev))))
            assert step < math.radians(3.0) and float(q_out @ q_prev) > 0  # no spin, continuous sign
        q_prev = q_out


def test_rotation_near_half_turn_is_filtered_without_flips():
    # Shepperd's conversion flips the quaternion sign for matrices around 180 degrees.
    rng = np.random.default_rng(9)
    truth = rotation_about([0.3, 1.0, 0.2], math.radians(179.5))
    filt = RotationOneEuroFilter()
    errors = []
    for i in range(100):
        noisy = truth @ rotation_about(rng.normal(size=3), math.radians(1.0) * rng.normal())
        errors.append(angle_between(filt(noisy, stamp(i)), truth))
    assert max(errors[10:]) < math.radians(1.5)


def jitter_ratio(raw_series, smoothed_series, truth, skip=30) -> float:
    raw = np.asarray(raw_series)[skip:] - truth
    smooth = np.asarray(smoothed_series)[skip:] - truth
    return float(np.sqrt(np.mean(smooth ** 2)) / np.sqrt(np.mean(raw ** 2)))


def noisy_still_face(depth_m: float, smoothing: SmoothingConfig):
    """300 images of a still face with pipeline-like noise: (truth, raw faces, smoothed faces)."""
    tracker = FaceTracker(TrackingConfig(min_hits=1), smoothing)
    rng = np.random.default_rng(10)
    truth = make_face(depth_m=depth_m)
    noise_px = 0.01 * (truth.bbox[2] - truth.bbox[0])
    raw, out = [], []
    for i in range(300):
        # noise at the levels the real pipeline shows on a still face (benchmarks/stability.py, raw)
        face = make_face(depth_m=depth_m, noise_px=noise_px, noise_rad=math.radians(0.35), noise_m=0.0015,
                         rng=rng)
        (smoothed,) = tracker.update([face], stamp(i))
        raw.append(face)
        out.append(smoothed)
    return truth, raw, out


@pytest.mark.parametrize("depth_m", [0.5, 3.0])
def test_static_noisy_face_jitter_is_much_lower_after_smoothing(depth_m):
    # Jitter in pixels grows with the face's image size; the same gains must suit near and far faces.
    truth, raw, out = noisy_still_face(depth_m, SmoothingConfig())
    lm_ratio = jitter_ratio([f.landmarks_px for f in raw], [f.landmarks_px for f in out], truth.landmarks_px)
    t_ratio = jitter_ratio([f.t_cam_face for f in raw], [f.t_cam_face for f in out], truth.t_cam_face)
    rot_raw = [angle_between(f.R_cam_face, FRONTAL) for f in raw[30:]]
    rot_out = [angle_between(f.R_cam_face, FRONTAL) for f in out[30:]]
    rot_ratio = math.sqrt(np.mean(np.square(rot_out)) / np.mean(np.square(rot_raw)))
    assert lm_ratio < 0.4 and t_ratio < 0.4 and rot_ratio < 0.4, (lm_ratio, t_ratio, rot_ratio)


@pytest.mark.parametrize("depth_m", [0.5, 3.0])
def test_still_face_filter_matches_theory_without_speed_term(depth_m):
    # With beta = 0 a One Euro filter is an exponential smoother at min_cutoff: rms ratio sqrt(a / (2 - a)).
    config = SmoothingConfig(beta=0.0)
    truth, raw, out = noisy_still_face(depth_m, config)
    lm_ratio = jitter_ratio([f.landmarks_px for f in raw], [f.landmarks_px for f in out], truth.landmarks_px)
    a = smoothing_factor(PERIOD_NS / 1e9, config.min_cutoff)
    assert 0.85 * math.sqrt(a / (2 - a)) < lm_ratio < 1.15 * math.sqrt(a / (2 - a))


def test_ramp_lag_is_bounded_and_below_a_plain_low_pass():
    config = SmoothingConfig()
    face_px = 100.0
    speed = 2.0 * face_px  # px/s: two face sizes per second
    filt = OneEuroFilter(config.min_cutoff, config.beta, config.d_cutoff)
    lags = [speed * i / 30.0 - float(filt(np.array([speed * i / 30.0]), T0_NS + i * 10**9 // 30,
                                          scale=face_px)[0]) for i in range(120)]
    one_euro_bound = speed / (2 * math.pi * (config.min_cutoff + config.beta * speed / face_px))
    low_pass_lag = speed / (2 * math.pi * config.min_cutoff)
    assert 0 < max(lags[60:]) <= one_euro_bound < low_pass_lag
    assert max(lags[90:]) - min(lags[90:]) < 0.01 * max(lags[90:])  # steady: the lag no longer grows


def test_unreliable_frame_holds_and_leaves_the_filters_untouched():
    rng = np.random.default_rng(11)
    faces = [make_face((300.0 + 2 * i, 240.0), noise_px=1.0, noise_rad=0.01, rng=rng) for i in range(12)]
    bad = make_face((300.0, 100.0), R=FRONTAL @ rotation_about([0, 0, 1], 1.2), pose_confidence=0.05)
    with_bad = new_tracker(min_hits=1)
    without = new_tracker(min_hits=1)
    for i, face in enumerate(faces):
        if i == 6:
            (held,) = with_bad.update([dataclasses.replace(bad, bbox=face.bbox)], stamp(i))
            np.testing.assert_array_equal(held.R_cam_face, previous.R_cam_face)
            np.testing.assert_array_equal(held.landmarks_px, previous.landmarks_px)
            continue
        (previous,) = with_bad.update([face], stamp(i))
        (expected,) = without.update([face], stamp(i))
        np.testing.assert_allclose(previous.landmarks_px, expected.landmarks_px)
        np.testing.assert_allclose(previous.R_cam_face, expected.R_cam_face)


def test_mesh_is_reposed_rigidly_by_the_smoothed_pose():
    smoother = FaceSmoother()
    rng = np.random.default_rng(12)
    for i in range(10):
        raw = make_face((300.0 + 5 * i, 240.0), noise_px=1.0, noise_rad=0.02, noise_m=0.01, rng=rng)
        out = smoother.update(raw, stamp(i), SmoothingConfig())
        in_face_frame = (out.vertices_cam - out.t_cam_face) @ out.R_cam_face
        np.testing.assert_allclose(in_face_frame, (raw.vertices_cam - raw.t_cam_face) @ raw.R_cam_face,
                                   atol=1e-9)
        np.testing.assert_allclose(out.R_cam_face.T @ out.R_cam_face, np.eye(3), atol=1e-12)


def test_quaternion_helpers_round_trip():
    rng = np.random.default_rng(13)
    for _ in range(100):
        R = rotation_about(rng.normal(size=3), rng.uniform(0, math.pi))
        q = quat_from_matrix(R)
        np.testing.assert_allclose(matrix_from_quat(q), R, atol=1e-12)
        q2 = quat_from_matrix(rotation_about(rng.normal(size=3), rng.uniform(0, math.pi)))
        np.testing.assert_allclose(matrix_from_quat(quat_multiply(q, q2)), R @ matrix_from_quat(q2), atol=1e-12)


def test_random_scenes_never_crash_reuse_ids_or_make_nan():
    rng = np.random.default_rng(14)
    tracker = new_tracker(min_hits=2, max_age=3, max_gap_s=0.2)
    t_ns, ever, live = T0_NS, set(), set()
    for _ in range(300):
        t_ns += int(rng.choice([0, -PERIOD_NS, PERIOD_NS, 2 * PERIOD_NS, 10 * PERIOD_NS], p=[.05, .02, .8, .1, .03]))
        faces = [make_face((rng.uniform(50, 590), rng.uniform(50, 430)), depth_m=rng.uniform(0.5, 4.0),
                           noise_px=1.0, noise_rad=0.05, rng=rng, pose_confidence=rng.uniform(0.0, 1.0))
                 for _ in range(rng.integers(0, 5))]
        out = tracker.update(faces, t_ns, include_tentative=True)
        live -= set(tracker.removed_ids)
        new = {f.track_id for f in out} - live
        assert not new & ever, "an id came back"
        ever |= new
        live |= new
        assert {t.track_id for t in tracker.tracks} == live
        for face in out:
            assert ID_PATTERN.match(face.track_id)
            assert all(np.isfinite(a).all() for a in (face.landmarks_px, face.R_cam_face, face.vertices_cam))


def test_box_iou_of_one_pair_matches_the_general_path():
    # One pair (the tracker's usual case) is computed on floats; the general path must agree to the bit.
    rng = np.random.default_rng(12)
    boxes = rng.uniform(-50.0, 150.0, (2000, 2, 4))
    boxes[::3, :, 2:] = boxes[::3, :, :2] + rng.uniform(0.0, 80.0, (len(boxes[::3]), 2, 2))  # proper boxes
    boxes[::7, 1, 2] = boxes[::7, 1, 0]          # zero width
    boxes[::11] = np.round(boxes[::11] / 10.0)   # touching and identical edges
    boxes[5, 0, 1] = np.nan
    for a, b in boxes:
        general = box_iou(np.stack([a, a]), b[None])[:1]
        np.testing.assert_array_equal(box_iou(a[None], b[None]), general)


def test_fast_face_copy_matches_dataclasses_replace():
    # with_fields skips Face.__init__; it must stay equivalent if Face gains validation or slots.
    from face3d_ros.core.smoothing import with_fields
    face = make_face()
    assert not hasattr(Face, "__post_init__") and not hasattr(Face, "__slots__")
    copy = with_fields(face, track_id="b", track_age=3)
    expected = dataclasses.replace(face, track_id="b", track_age=3)
    assert type(copy) is Face and copy.__dict__.keys() == expected.__dict__.keys()
    assert all(copy.__dict__[k] is expected.__dict__[k] for k in copy.__dict__ if k not in ("track_id", "track_age"))
    assert (copy.track_id, copy.track_age, face.track_id) == ("b", 3, "")


def test_box_inside_fraction():
    from face3d_ros.core.roi import box_inside_fraction
    face = np.array([[0.0, 0.0, 100.0, 100.0]])
    eye = np.array([[20.0, 20.0, 40.0, 35.0]])             # wholly inside: IoU 0.03, fraction 1
    half_out = np.array([[90.0, 40.0, 110.0, 60.0]])       # half of it inside
    apart = np.array([[200.0, 0.0, 300.0, 100.0]])
    assert box_iou(face, eye)[0, 0] < 0.05
    np.testing.assert_allclose(box_inside_fraction(face, np.vstack([eye, half_out, apart])), [[1.0, 0.5, 0.0]])
    np.testing.assert_allclose(box_inside_fraction(eye, face), [[1.0]])      # symmetric: the smaller's share
    assert box_inside_fraction(face, np.array([[5.0, 5.0, 5.0, 9.0]]))[0, 0] == 0.0   # empty box: 0, no NaN


def test_at_most_max_faces_published_matched_ones_first():
    """max_faces bounds what is published: a coasting face (the last pose of one not seen now) gives way to a
    face matched in this image (max_faces 1 published two faces when one person left and another came)."""
    tracker = new_tracker(min_hits=1, max_age=5)
    for i in range(3):
        tracker.update([make_face((150.0, 240.0))], stamp(i))
    for i in range(3, 6):   # the first person gone (coasting), another seen far away
        faces = tracker.update([make_face((500.0, 240.0))], stamp(i), max_faces=1)
        assert [(f.track_id, f.track_state) for f in faces] == [("b", TRACKED)]
    assert {f.track_id for f in tracker.update([make_face((500.0, 240.0))], stamp(6))} == {"a", "b"}   # no cap
