"""What Qwen's own preprocessing, ``qwen_omni_utils.v2_5.fetch_video``, samples from video files.

Run as a script (a child process, so that torch stays out of the test process and so that
``MODEL_SEQ_LEN``, which the reference reads at import, can be set per run):

    python media_reference.py REQUEST.json   ->  prints one JSON object

REQUEST: ``{"clips": [{"video": PATH, "image_patch_size": 14 (Qwen3: 16), ...fetch_video keys (fps, min_frames, max_frames,
min_pixels, max_pixels, total_pixels)..., "save": NPY_PATH (optional)}], "smart_resize": [[h, w,
min_pixels, max_pixels], ...], "smart_nframes": [[ele, total_frames, video_fps], ...]}`` (each
key optional; the two function lists answer with the reference's result or its exception's name). For each clip it prints
the reader backend, the frame indices, the frame count and rate the backend read, the sample fps,
and the (height, width) that ``fetch_video`` resized the frames to; with "save", the resized
frames as uint8 [n, h, w, 3].

``reference_env()`` is the environment to run it in: torchvision lives in a directory of its own,
``<venv>/reference-torchvision`` (the Makefile's .parity target puts it there), because the
build reachable here breaks ``import transformers`` for every other test.

Nothing here re-computes the reference: ``fetch_video`` runs as published. Two things are
arranged around it: (1) the torchvision wheel reachable from these machines is the CUDA build,
whose C++ ops do not load with the CPU torch; its import then fails registering fake kernels for
two of those ops (``torchvision::nms``, ``qnms``), which the reference never calls, so their
schemas are declared first when (and only when) that failure happens; (2) the call that resizes
the frames (``torchvision.transforms.functional.resize``) is wrapped to record the size the
reference asks for, and skips the work (returning an empty tensor) when the result would be over
40M values, so that a 768-frame clip does not need gigabytes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

TORCHVISION_DIR = Path(sys.prefix) / "reference-torchvision"


def reference_env(extra=None) -> dict:
    """os.environ with the reference's torchvision directory first on PYTHONPATH."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TORCHVISION_DIR), env.get("PYTHONPATH")) if p)
    return env


def import_reference():
    try:
        import torchvision  # noqa: F401
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        import torch
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401,F811
    from qwen_omni_utils.v2_5 import vision_process
    return vision_process


def main(request_path: str) -> None:
    import numpy as np
    import torch

    vp = import_reference()
    import torchvision.transforms.functional as F

    real_resize = F.resize
    asked = []

    def recording_resize(video, size, *args, **kwargs):
        asked.append(list(size))
        if video.shape[0] * video.shape[1] * size[0] * size[1] > 40_000_000:
            return torch.empty((video.shape[0], video.shape[1], 0, 0))
        return real_resize(video, size, *args, **kwargs)

    F.resize = recording_resize
    request = json.load(open(request_path))
    out = []
    resized = []
    for h, w, lo, hi in request.get("smart_resize", []):
        try:
            resized.append(list(vp.smart_resize(h, w, 28, lo, hi)))
        except (ValueError, AssertionError) as e:
            resized.append(type(e).__name__)
    counted = []
    for ele, total, video_fps in request.get("smart_nframes", []):
        try:
            counted.append(vp.smart_nframes(ele, total_frames=total, video_fps=video_fps))
        except ValueError as e:
            counted.append(type(e).__name__)
    for clip in request.get("clips", []):
        ele = {k: v for k, v in clip.items() if k not in ("save", "image_patch_size")}
        asked.clear()
        (video, meta), sample_fps = vp.fetch_video(ele, image_patch_size=clip.get("image_patch_size", 14),
                                                   return_video_sample_fps=True, return_video_metadata=True)
        [size] = asked
        if clip.get("save"):
            frames = video.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            np.save(clip["save"], frames)
        out.append({"backend": meta.get("video_backend"), "indices": [int(i) for i in meta["frames_indices"]],
                    "total_frames": int(meta["total_num_frames"]), "video_fps": float(meta["fps"]),
                    "sample_fps": float(sample_fps), "size": size, "nframes": len(meta["frames_indices"])})
    print(json.dumps({"backend": vp.get_video_reader_backend(), "clips": out, "smart_resize": resized,
                      "smart_nframes": counted}))


if __name__ == "__main__":
    main(sys.argv[1])
