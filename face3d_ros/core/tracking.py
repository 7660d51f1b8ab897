"""Multi-face tracking: stable ids over images, track states, per-track smoothing.

Rules (all thresholds from TrackingConfig / SmoothingConfig, read at every update):
- Association: Hungarian assignment (scipy's linear_sum_assignment) on cost 1 - IoU between each face's box
  and each track's box predicted to this stamp (last box moved by the track's velocity, so faces crossing
  each other keep their ids); pairs with IoU < min_iou (or no overlap at all) are never matched there.
- Reacquisition: a confirmed track matched in the previous image and unmatched in this one takes a new face
  of about its size (within REACQUIRE_SIZE_RATIO) that appeared in this image no more than
  REACQUIRE_DISTANCE face sizes from its predicted box: the same face after a jump too large for the boxes
  to overlap (frames dropped, a fast pan). It keeps its id and restarts its filters and velocity.
- States (as in the FacePose message): TENTATIVE until a track has been matched in min_hits images in a row;
  TRACKED when matched in this image; COASTING when a confirmed track is unmatched in this image: it is
  returned with its last smoothed face, so consumers see continuity, until it is dropped.
- `update` returns the confirmed tracks (TRACKED and COASTING; at most max_faces, TRACKED first), in the
  order the tracks started; pass include_tentative=True for the tentative ones too.
- Dropped: a tentative track at its first miss (most are false detections); a confirmed track unmatched in
  more than max_age images in a row, or unmatched with its last match more than max_gap_s ago.
  `removed_ids` lists the ids the last update dropped and those a `reset()` dropped before it (tentative
  ones included).
- Resets: a new track starts fresh filters; a track matched after more than max_gap_s (a gap in the image
  stream) keeps its id but restarts its filters and velocity; a stamp going backwards (a looping bag)
  drops every track. Ids are never reused within a tracker's life.
- Reliability: a face updates its filters only when its landmarks are finite and, if it has a pose, the
  pose is finite with pose_confidence >= min_pose_confidence. Otherwise the track is still matched and
  kept alive, but publishes its last smoothed landmarks, pose and mesh (see FaceSmoother.update).
- Faces: the caller's Face objects and arrays are never modified nor kept (the tracker copies what it keeps,
  so the caller may reuse its buffers). Returned faces are new objects with track_id, track_age (images
  since the track's first, 0 on it) and track_state set; their arrays are the tracker's, READ-ONLY (a write
  raises instead of corrupting a filter or a coasting face): copy one to modify it.
"""
from __future__ import annotations

import dataclasses
import math
import string

import numpy as np
from scipy.optimize import linear_sum_assignment

from .config import SmoothingConfig, TrackingConfig
from .geometry import all_finite
from .roi import box_iou
from .smoothing import NS_PER_S, FaceSmoother, face_size_px, frozen_copy, with_fields
from .types import Face, Roi

TENTATIVE, TRACKED, COASTING = 0, 1, 2
STATE_RANK = {TRACKED: 0, COASTING: 1, TENTATIVE: 2}   # which faces to publish first

# Weight of the newest box velocity measurement (the rest is the previous estimate): tames landmark jitter.
VELOCITY_GAIN = 0.5
# Cost of a pair the gate forbids: above any real cost (<= 1), so the solver only uses it when forced.
FORBIDDEN_COST = 1e6
# A face that jumps between two images (dropped frames, a fast pan) no longer overlaps its track's box: the
# track lost in this image takes a new face this near (centre distance, in the track's face sizes) and this
# alike in size, rather than coasting beside it as a frozen ghost while the face gets a new id
REACQUIRE_DISTANCE = 1.5
REACQUIRE_SIZE_RATIO = 1.3


@dataclasses.dataclass
class Track:
    """One face over time. `face` is its last output; `bbox` and `last_landmarks_px` its last measurement
    (unsmoothed, so without lag: what the next image's crop should follow)."""

    track_id: str
    face: Face
    bbox: np.ndarray
    last_landmarks_px: np.ndarray | None
    last_seen_stamp_ns: int
    smoother: FaceSmoother = dataclasses.field(default_factory=FaceSmoother)
    velocity_px_s: tuple[float, float] = (0.0, 0.0)   # of the box centre, for the prediction
    hits: int = 1           # images matched since the track started
    age: int = 0            # images since the track started
    misses: int = 0         # images unmatched in a row
    state: int = TENTATIVE

    @property
    def confirmed(self) -> bool:
        return self.state != TENTATIVE

    def restart_filters(self) -> None:
        """Forget the motion so far (after a gap in the images, or a jump): smoothing across it would drag."""
        self.smoother.reset()
        self.velocity_px_s = (0.0, 0.0)

    def predicted_bbox(self, stamp_ns: int) -> list[float]:
        """The last box (x0, y0, x1, y1) moved by the track's velocity to `stamp_ns`."""
        dt = (stamp_ns - self.last_seen_stamp_ns) / NS_PER_S
        dx, dy = self.velocity_px_s[0] * dt, self.velocity_px_s[1] * dt
        x0, y0, x1, y1 = self.bbox.tolist()
        return [x0 + dx, y0 + dy, x1 + dx, y1 + dy]


class FaceTracker:
    """Associates each image's faces with tracks and smooths them; see the module docstring for the rules.

    `tracking` and `smoothing` are read at every update: change their fields, or assign new objects, at run
    time and the next update uses them.
    """

    def __init__(self, tracking: TrackingConfig, smoothing: SmoothingConfig) -> None:
        self.tracking = tracking
        self.smoothing = smoothing
        self.removed_ids: list[str] = []
        self._removed_since_update: list[str] = []   # by reset(): the next update reports them too
        self._tracks: dict[str, Track] = {}
        self._ids_issued = 0
        self._last_stamp_ns: int | None = None

    @property
    def tracks(self) -> list[Track]:
        """Live tracks, tentative ones included, in the order they started."""
        return list(self._tracks.values())

    def reset(self) -> None:
        """Drop every track (their ids go to `removed_ids` now and at the next update); ids issued later are
        still new ones."""
        self.removed_ids.extend(self._tracks)
        self._removed_since_update.extend(self._tracks)
        self._tracks.clear()

    def update(self, faces: list[Face], stamp_ns: int, include_tentative: bool = False,
               max_faces: int | None = None) -> list[Face]:
        """Track the faces of one image stamped `stamp_ns`; returns the published faces (`published_faces`)."""
        if self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
            self.reset()
        # a caller that resets then updates (FacePipeline on a looping bag) reads the dropped ids after update
        self.removed_ids, self._removed_since_update = self._removed_since_update, []
        self._last_stamp_ns = stamp_ns
        self._expire(stamp_ns)
        for track in self._tracks.values():
            track.age += 1
        matches, lost, new_faces = self._associate(faces, stamp_ns)
        reacquired, lost, new_faces = self._reacquire(lost, new_faces, stamp_ns)
        for track, face in matches:
            self._hit(track, face, stamp_ns)
        for track, face in reacquired:   # a jump: the filters and velocity would smear it over many images
            self._hit(track, face, stamp_ns, jumped=True)
        for track in lost:
            self._miss(track, stamp_ns)
        for face in new_faces:
            self._start(face, stamp_ns)
        return self.published_faces(include_tentative, max_faces)

    def published_faces(self, include_tentative: bool = False, max_faces: int | None = None) -> list[Face]:
        """The live tracks' last faces (new objects, read-only arrays): confirmed tracks, and tentative ones
        when asked; at most `max_faces`, matched in this image first (a coasting face is only the last pose of
        one not seen now), in the order the tracks started."""
        tracks = [t for t in self._tracks.values() if t.confirmed or include_tentative]
        if max_faces is not None and len(tracks) > max_faces:
            kept = {id(t) for t in sorted(tracks, key=lambda t: STATE_RANK[t.state])[:max_faces]}
            tracks = [t for t in tracks if id(t) in kept]
        return [published(t.face) for t in tracks]

    def _expire(self, stamp_ns: int) -> None:
        """Apply max_gap_s before matching: drop missed tracks gone too long; restart the others' filters."""
        max_gap_ns = self.tracking.max_gap_s * NS_PER_S
        for track in list(self._tracks.values()):
            if stamp_ns - track.last_seen_stamp_ns <= max_gap_ns:
                continue
            if track.misses:
                self._drop(track)
            else:  # seen in the previous image, but the images stopped for a while
                track.restart_filters()

    def _associate(self, faces: list[Face], stamp_ns: int):
        """(track, face) matches, unmatched tracks, unmatched faces."""
        tracks = list(self._tracks.values())
        if not tracks or not faces:
            return [], tracks, list(faces)
        predicted = np.array([t.predicted_bbox(stamp_ns) for t in tracks])
        iou = box_iou(predicted, np.array([f.bbox for f in faces], dtype=np.float64))
        allowed = (iou >= self.tracking.min_iou) & (iou > 0.0)
        if iou.shape == (1, 1):   # one face followed (the usual case): the only assignment is the pair
            rows, cols = [0], [0]
        else:
            rows, cols = linear_sum_assignment(np.where(allowed, 1.0 - iou, FORBIDDEN_COST))
        pairs = [(r, c) for r, c in zip(rows, cols) if allowed[r, c]]
        matched_tracks = {r for r, _ in pairs}
        matched_faces = {c for _, c in pairs}
        return ([(tracks[r], faces[c]) for r, c in pairs],
                [t for i, t in enumerate(tracks) if i not in matched_tracks],
                [f for j, f in enumerate(faces) if j not in matched_faces])

    def _reacquire(self, lost: list[Track], new_faces: list[Face], stamp_ns: int):
        """(track, face) pairs of confirmed tracks lost in this image (matched in the previous one) and new
        faces near them (see REACQUIRE_DISTANCE), nearest first; the tracks and faces left unpaired."""
        candidates = []
        for track in lost:
            if not track.confirmed or track.misses:
                continue
            x0, y0, x1, y1 = track.predicted_bbox(stamp_ns)
            size = face_size_px(track.bbox)
            for face in new_faces:
                (x, y), ratio = box_center(face.bbox), face_size_px(face.bbox) / size
                distance = math.hypot(x - (x0 + x1) * 0.5, y - (y0 + y1) * 0.5) / size
                if distance <= REACQUIRE_DISTANCE and 1.0 / REACQUIRE_SIZE_RATIO <= ratio <= REACQUIRE_SIZE_RATIO:
                    candidates.append((distance, id(track), id(face), track, face))
        pairs, taken = [], set()
        for _, track_key, face_key, track, face in sorted(candidates, key=lambda c: c[0]):
            if track_key not in taken and face_key not in taken:
                taken |= {track_key, face_key}
                pairs.append((track, face))
        return (pairs, [t for t in lost if id(t) not in taken], [f for f in new_faces if id(f) not in taken])

    def _hit(self, track: Track, face: Face, stamp_ns: int, jumped: bool = False) -> None:
        if jumped:   # the jump is no velocity: start again from rest
            track.restart_filters()
        else:
            self._update_velocity(track, face.bbox, stamp_ns)
        track.hits += 1
        track.misses = 0
        track.state = TRACKED if track.confirmed or track.hits >= self.tracking.min_hits else TENTATIVE
        self._measure(track, face, stamp_ns)

    def _miss(self, track: Track, stamp_ns: int) -> None:
        track.misses += 1
        gone_too_long = stamp_ns - track.last_seen_stamp_ns > self.tracking.max_gap_s * NS_PER_S
        if not track.confirmed or track.misses > self.tracking.max_age or gone_too_long:
            self._drop(track)
            return
        track.state = COASTING
        track.face = with_fields(track.face, track_age=track.age, track_state=COASTING)

    def _start(self, face: Face, stamp_ns: int) -> None:
        track_id = track_id_from_index(self._ids_issued)
        self._ids_issued += 1
        track = Track(track_id, face, face.bbox, None, stamp_ns)
        track.state = TRACKED if self.tracking.min_hits <= 1 else TENTATIVE
        self._tracks[track_id] = track
        self._measure(track, face, stamp_ns)

    def _measure(self, track: Track, face: Face, stamp_ns: int) -> None:
        """Take this image's measurement. What the tracker keeps is copied: the caller may reuse its arrays
        (the smoother copies the landmarks, pose and mesh)."""
        face = with_fields(face, bbox=frozen_copy(face.bbox), roi=frozen_roi(face.roi), track_id=track.track_id,
                           track_age=track.age, track_state=track.state)
        track.bbox = np.asarray(face.bbox, dtype=np.float64)
        track.last_landmarks_px = frozen_copy(face.landmarks_px)
        track.last_seen_stamp_ns = stamp_ns
        reliable = is_reliable(face, self.smoothing.min_pose_confidence)
        track.face = track.smoother.update(face, stamp_ns, self.smoothing, reliable)

    def _update_velocity(self, track: Track, bbox, stamp_ns: int) -> None:
        dt = (stamp_ns - track.last_seen_stamp_ns) / NS_PER_S
        if dt <= 0.0:
            return
        (x, y), (x_prev, y_prev) = box_center(bbox), box_center(track.bbox)
        gain = 1.0 if track.hits == 1 else VELOCITY_GAIN  # no estimate yet: take the first as it is
        vx, vy = track.velocity_px_s
        track.velocity_px_s = (vx + gain * ((x - x_prev) / dt - vx), vy + gain * ((y - y_prev) / dt - vy))

    def _drop(self, track: Track) -> None:
        del self._tracks[track.track_id]
        self.removed_ids.append(track.track_id)


def is_reliable(face: Face, min_pose_confidence: float) -> bool:
    """Whether `face` may update the filters: finite landmarks and, when it has a pose, a finite pose with
    pose_confidence >= min_pose_confidence (which folds in the landmark score and the fit residual)."""
    if face.landmarks_px is not None and not all_finite(face.landmarks_px):
        return False
    if not face.has_pose:
        return True
    return (face.pose_confidence >= min_pose_confidence and all_finite(face.R_cam_face)
            and all_finite(face.t_cam_face))


def track_id_from_index(index: int) -> str:
    """0 -> "a", 25 -> "z", 26 -> "aa", 27 -> "ab", ...: short, starts with a letter, valid in ROS topic
    and frame names (REP-155), and distinct for distinct indices."""
    letters = ""
    index += 1
    while index > 0:
        index, digit = divmod(index - 1, 26)
        letters = string.ascii_lowercase[digit] + letters
    return letters


def box_center(bbox) -> tuple[float, float]:
    x0, y0, x1, y1 = np.asarray(bbox, dtype=np.float64).tolist()
    return (x0 + x1) * 0.5, (y0 + y1) * 0.5


def frozen_roi(roi: Roi | None) -> Roi | None:
    return None if roi is None else Roi(frozen_copy(roi.center), roi.size, roi.rotation)


def published(face: Face) -> Face:
    """A new Face (and Roi) for the caller: its attributes can be set freely, its arrays are read-only."""
    roi = None if face.roi is None else Roi(face.roi.center, face.roi.size, face.roi.rotation)
    return with_fields(face, roi=roi)
