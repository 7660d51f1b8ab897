"""The vision core of face3d_ros: no ROS imports, usable from any Python program.

    from face3d_ros.core import FacePipeline, PipelineConfig, CameraModel
    faces = FacePipeline(PipelineConfig()).process(image_bgr, CameraModel.default_for(w, h))
"""
from .config import PipelineConfig
from .types import CameraModel, Detection, Face, InputError, Roi


def __getattr__(name):
    # The pipeline pulls in onnxruntime; import it only when asked for.
    if name == "FacePipeline":
        from .pipeline import FacePipeline
        return FacePipeline
    raise AttributeError(name)


__all__ = ["CameraModel", "Detection", "Face", "FacePipeline", "InputError", "PipelineConfig", "Roi"]
