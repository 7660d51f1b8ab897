#!/usr/bin/env python3
"""Reliability of the face3d node over real DDS: fuzzing and a soak run. Prints the counts for the README.

    .venv/bin/python benchmarks/robustness.py [--fuzz-rounds 300] [--soak-frames 20000] [--json out.json]

Each node runs in its own process (`python -m face3d_ros.ros.main`), this process plays the camera and the
consumers (test/ros_helpers.py, shared with test/test_robustness.py).

1. Fuzzing: two nodes with their defaults (raw `image`, and `image/compressed`). Each round sends 1-3
   malformed inputs of the kinds in ros_helpers.BAD_INPUTS (bad encodings, step/data length that disagree,
   0x0, absurd declared sizes, corrupt JPEG/PNG, NaN/inf/zero K, wrong D, ...) then one good frame (CameraInfo +
   image in a random supported encoding) with a stamp of its own, and waits for the node's FacePoseArray with
   that stamp: a good frame is LOST unless it comes back with its one face. Crashes = node processes that
   ended during the run.
2. Soak: a fresh node with its defaults; --soak-frames frames (+ a last block without a face) of 320x160
   at the highest rate it sustains (each frame is sent when the previous one's result came back, the
   stamps advance 33 ms a frame), cycling scenes of 1 face, 2 faces and none, so that tracks come and go.
   It checks that the node's live track count and marker ids (from /diagnostics) return to 0 when no face
   is seen, that every marker ADDed is DELETEd once its face is gone, that no TF frame is published for a
   face gone long, that the node's publishers stay the same, and it prints the node's RSS (VmRSS) at start
   (after one warm-up cycle of the scenes), middle and end, with a stated bound on the growth, and the
   round-trip latency per segment (a growing queue would make it grow).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from ros_helpers import (ASTRONAUT, BAD_INPUTS, NEGATIVES, RELIABLE, NodeProcess, RandomDraw,  # noqa: E402
                         Recorder, Stream, diagnostics_values, load_bgr, ros_context, spin_for, spin_until,
                         stamp_ns)

GOOD_SIDE = 192
RSS_BOUND_MB = 10.0     # stated bound on the soak's RSS growth from its start (after warm-up) to its end
SCENE_BLOCK = 40        # frames per scene in the soak


def start(ros, name: str, args: list[str], topic: str) -> NodeProcess:
    node = NodeProcess(name, args, ros.env, ros.log_dir)
    ok = spin_until(ros.executor, lambda: not node.alive() or ros.node.count_subscribers(topic) > 0, 60.0)
    if not (ok and node.alive()):
        raise SystemExit(f"node {name} did not start:\n{node.log()}")
    return node


def diag(ros, recorder: Recorder, name: str, after: float) -> dict:
    """The node's newest diagnostics received after `after` (time.time())."""
    def fresh():
        return any(t >= after and any(s.name.startswith(name) for s in m.status) for t, m in recorder.items)
    spin_until(ros.executor, fresh, 5.0)
    values = diagnostics_values(recorder, name) or {}
    del recorder.items[:-20]
    return values


# ---------------------------------------------------------------------------------------------- fuzzing
def fuzz(ros, rounds: int, seed: int) -> dict:
    good = load_bgr(ASTRONAUT, GOOD_SIDE)
    diagnostics = Recorder(ros.node, DiagnosticArray, "/diagnostics", RELIABLE)
    out = {}
    for ns, compressed, topics in (("/fuzz_raw", False, ("image", "camera_info")),
                                   ("/fuzz_compressed", True, ("compressed", "camera_info"))):
        args = ["-r", f"__ns:={ns}"]
        if compressed:
            args += ["-p", "image_transport:=compressed"]
        node = start(ros, ns.strip("/"), args, f"{ns}/image" + ("/compressed" if compressed else ""))
        stream = Stream(ros, ns, compressed, good)
        for _ in range(3):                   # warm-up, not counted: a face is published from its 2nd image on
            stream.send_frame(timeout=15.0)
        stream.good_sent.clear()
        stream.good_lost.clear()
        rss_start = node.rss_kb()
        rnd = random.Random(seed)
        kinds = sorted(k for k, (_, topic, _, _) in BAD_INPUTS.items() if topic in topics)
        t0 = time.monotonic()
        for i in range(rounds):
            if not node.alive():
                break
            picks = kinds[i % len(kinds):i % len(kinds) + 1] + rnd.sample(kinds, rnd.randint(0, 2))
            for kind in picks:
                stream.send_bad(kind, RandomDraw(rnd))
            stream.send_good(RandomDraw(rnd))
        elapsed = time.monotonic() - t0
        alive = node.alive()
        values = diag(ros, diagnostics, f"{ns.strip('/')}/face3d_node", time.time()) if alive else {}
        log = node.log()
        problem_lines = sum(1 for line in log.splitlines() if "image skipped" in line or "invalid CameraInfo" in line
                            or "decoded with warnings" in line)
        out[ns] = {
            "bad_inputs": dict(sorted(stream.tried.items())),
            "bad_inputs_total": sum(stream.tried.values()),
            "good_frames": sum(stream.good_sent.values()),
            "good_by_encoding": dict(sorted(stream.good_sent.items())),
            "good_lost": len(stream.good_lost),
            "good_lost_examples": stream.good_lost[:5],
            "crashes": 0 if alive else 1,
            "tracebacks": log.count("Traceback"),
            "problems_counted_by_node": {k[len("problems."):]: int(v) for k, v in values.items()
                                         if k.startswith("problems.")},
            "problem_log_lines": problem_lines,
            "frames_received_by_node": int(values.get("frames_received", -1)),
            "rss_start_mb": rss_start / 1024, "rss_end_mb": node.rss_kb() / 1024 if alive else None,
            "seconds": elapsed,
        }
        stream.close()
        node.stop()
    diagnostics.close()
    return out


# ---------------------------------------------------------------------------------------------- soak
def soak_scenes() -> dict[str, np.ndarray]:
    face = load_bgr(ASTRONAUT, 160)
    negatives = [load_bgr(p, 160) for p in NEGATIVES[:2]]
    return {"one face": np.hstack([face, negatives[0]]),
            "two faces": np.hstack([face, cv2.flip(face, 1)]),
            "no face": np.hstack(negatives)}


def soak(ros, frames: int, log_every: int) -> dict:
    node = start(ros, "soak", ["-r", "__ns:=/soak"], "/soak/image")
    scenes = soak_scenes()
    order = ["one face", "no face", "two faces", "no face", "one face", "two faces", "no face"]
    stream = Stream(ros, "/soak", False, scenes["one face"])
    markers = {"live": set(), "added": 0, "deleted": 0, "ids": set()}

    def on_markers(msg: MarkerArray) -> None:
        for mk in msg.markers:
            key = (mk.ns, mk.id)
            if mk.action == Marker.ADD:
                markers["live"].add(key)
                markers["ids"].add(mk.ns)
                markers["added"] += 1
            elif mk.action == Marker.DELETE:
                markers["live"].discard(key)
                markers["deleted"] += 1
            elif mk.action == Marker.DELETEALL:
                markers["live"].clear()
    tf = {"frames": set(), "tail_stamps": set(), "in_tail": 0}

    def on_tf(msg: TFMessage) -> None:
        for t in msg.transforms:
            if t.child_frame_id.startswith(("face_", "gaze_")):
                tf["frames"].add(t.child_frame_id)
                if stamp_ns(t.header.stamp) in tf["tail_stamps"]:   # a frame for a face gone long ago
                    tf["in_tail"] += 1
    subs = [ros.node.create_subscription(MarkerArray, "/soak/markers", on_markers, RELIABLE),
            ros.node.create_subscription(TFMessage, "/tf", on_tf, RELIABLE)]
    diagnostics = Recorder(ros.node, DiagnosticArray, "/diagnostics", RELIABLE)
    spin_for(ros.executor, 0.5)
    for name in order:   # warm-up, one cycle of the scenes: onnxruntime's arenas, tracks, markers
        for _ in range(SCENE_BLOCK):
            stream.send_frame(bgr=scenes[name])
    publishers_start = sorted(t for t, _ in ros.node.get_publisher_names_and_types_by_node("face3d_node", "/soak"))
    rss = {"start": node.rss_kb() / 1024}
    checks = {"no_result": 0, "wrong_face_count": 0, "markers_live_in_no_face_tail": 0,
              "tracks_not_zero_in_no_face": 0, "marker_ids_not_zero_in_no_face": 0, "no_face_blocks": 0}
    latencies, segments = [], []
    t0 = time.monotonic()
    for i in range(frames):
        if not node.alive():
            break
        block = (i // SCENE_BLOCK) % len(order)
        name = order[block]
        position = i % SCENE_BLOCK
        # a face needs tracking.min_hits (2) images before it is published; a gone one coasts max_age (5)
        settled = position >= 6
        header = stream.next_header(33_000_000)
        if name == "no face" and settled:
            tf["tail_stamps"].add(stamp_ns(header.stamp))
        sent = time.monotonic()
        _, result = stream.send_frame(bgr=scenes[name], header=header)
        latencies.append(time.monotonic() - sent)
        if result is None:
            checks["no_result"] += 1
        else:
            expected = {"one face": 1, "two faces": 2, "no face": 0}[name]
            if settled and len(result.faces) != expected:
                checks["wrong_face_count"] += 1
        if name == "no face" and position == SCENE_BLOCK - 1:   # end of a no-face block: everything is gone
            checks["no_face_blocks"] += 1
            spin_for(ros.executor, 0.05)
            if markers["live"]:
                checks["markers_live_in_no_face_tail"] += 1
            if checks["no_face_blocks"] % 25 == 1:            # the node's own counters (1 Hz diagnostics)
                values = diag(ros, diagnostics, "soak/face3d_node", time.time())
                checks["tracks_not_zero_in_no_face"] += values.get("tracks") != "0"
                checks["marker_ids_not_zero_in_no_face"] += values.get("marker_ids") != "0"
        if i == frames // 2:
            rss["middle"] = node.rss_kb() / 1024
        if (i + 1) % log_every == 0:
            window = latencies[-log_every:]
            segments.append({"frames": i + 1, "rss_mb": node.rss_kb() / 1024,
                             "latency_ms_p50": 1e3 * float(np.median(window)),
                             "latency_ms_p95": 1e3 * float(np.percentile(window, 95))})
            print(f"  soak {i + 1:6d}/{frames}: RSS {segments[-1]['rss_mb']:.1f} MB, round trip p50 "
                  f"{segments[-1]['latency_ms_p50']:.1f} ms p95 {segments[-1]['latency_ms_p95']:.1f} ms", flush=True)
    elapsed = time.monotonic() - t0
    for _ in range(SCENE_BLOCK if node.alive() else 0):   # end on no face: every track, marker, TF must be gone
        stream.send_frame(bgr=scenes["no face"])
    spin_for(ros.executor, 0.2)
    alive = node.alive()
    rss["end"] = node.rss_kb() / 1024 if alive else None
    rss.setdefault("middle", rss["end"])
    final = diag(ros, diagnostics, "soak/face3d_node", time.time()) if alive else {}
    spin_for(ros.executor, 0.3)
    checks["tf_for_faces_gone"] = tf["in_tail"]
    publishers_end = sorted(t for t, _ in ros.node.get_publisher_names_and_types_by_node("face3d_node", "/soak"))
    for sub in subs:
        ros.node.destroy_subscription(sub)
    diagnostics.close()
    stream.close()
    node.stop()
    done = len(latencies)
    return {
        "frames": done, "seconds": elapsed, "rate_hz": done / elapsed if elapsed else 0.0,
        "crashes": 0 if alive else 1, "tracebacks": node.log().count("Traceback"),
        "rss_mb": rss, "rss_growth_mb": (rss["end"] - rss["start"]) if alive else None,
        "rss_bound_mb": RSS_BOUND_MB,
        "checks": checks,
        "track_ids_issued": len(markers["ids"]),
        "tf_child_frames_seen": len(tf["frames"]),
        "markers_added": markers["added"], "markers_deleted": markers["deleted"],
        "markers_live_at_end": len(markers["live"]),
        "final_diagnostics": {k: final.get(k) for k in ("tracks", "marker_ids", "publishers", "subscriptions",
                                                         "frames_received", "frames_processed", "frames_skipped")},
        "publishers_start": publishers_start, "publishers_end": publishers_end,
        "segments": segments,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz-rounds", type=int, default=300, help="rounds per node (1-3 bad inputs + 1 good)")
    parser.add_argument("--soak-frames", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the numbers here too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="face3d_robustness_") as tmp, ros_context(Path(tmp)) as ros:
        result = {"fuzz": fuzz(ros, args.fuzz_rounds, args.seed) if args.fuzz_rounds else {}}
        for ns, r in result["fuzz"].items():
            print(f"\n== fuzzing {ns}: {r['bad_inputs_total']} bad inputs, {r['good_frames']} good frames in "
                  f"{r['seconds']:.0f} s")
            for kind, n in r["bad_inputs"].items():
                print(f"   {kind:42s} {n:5d}")
            print(f"   good frames by encoding: {r['good_by_encoding']}")
            print(f"   crashes {r['crashes']}, tracebacks {r['tracebacks']}, good frames lost {r['good_lost']} "
                  f"{r['good_lost_examples'] or ''}")
            print(f"   node counted {sum(r['problems_counted_by_node'].values())} problems in "
                  f"{len(r['problems_counted_by_node'])} kinds and logged {r['problem_log_lines']} lines for them "
                  f"(rate-limited per kind); it took {r['frames_received_by_node']} images")
            print(f"   RSS start {r['rss_start_mb']:.1f} MB, end {r['rss_end_mb']:.1f} MB")
        if args.soak_frames:
            print(f"\n== soak: {args.soak_frames} frames", flush=True)
            s = result["soak"] = soak(ros, args.soak_frames, max(1000, args.soak_frames // 10))
            print(f"   {s['frames']} frames in {s['seconds']:.0f} s ({s['rate_hz']:.0f} Hz, each sent when the "
                  f"previous result came back); crashes {s['crashes']}, tracebacks {s['tracebacks']}")
            print(f"   RSS start {s['rss_mb']['start']:.1f} MB, middle {s['rss_mb']['middle']:.1f} MB, end "
                  f"{s['rss_mb']['end']:.1f} MB: growth {s['rss_growth_mb']:+.1f} MB (bound {RSS_BOUND_MB:g} MB)")
            print(f"   tracks: {s['track_ids_issued']} ids issued, TF child frames seen {s['tf_child_frames_seen']}; "
                  f"markers ADD {s['markers_added']}, DELETE {s['markers_deleted']}, live at the end "
                  f"{s['markers_live_at_end']}")
            print(f"   checks (all must be 0 but no_face_blocks): {s['checks']}")
            print(f"   final diagnostics: {s['final_diagnostics']}")
            print(f"   publishers start == end: {s['publishers_start'] == s['publishers_end']} "
                  f"({len(s['publishers_end'])})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    fuzz_bad = any(r["crashes"] or r["good_lost"] or r["tracebacks"] for r in result["fuzz"].values())
    s = result.get("soak")
    soak_bad = bool(s) and (s["crashes"] or s["tracebacks"] or any(v for k, v in s["checks"].items()
                                                                  if k != "no_face_blocks")
                            or s["markers_live_at_end"] or s["rss_growth_mb"] is None
                            or s["final_diagnostics"]["tracks"] != "0" or s["final_diagnostics"]["marker_ids"] != "0"
                            or s["rss_growth_mb"] > RSS_BOUND_MB or s["publishers_start"] != s["publishers_end"])
    print("\nRESULT:", "FAIL" if fuzz_bad or soak_bad else "OK")
    return 1 if fuzz_bad or soak_bad else 0


if __name__ == "__main__":
    sys.exit(main())
