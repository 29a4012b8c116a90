#!/usr/bin/env python3
"""The README's picture: `pyomnisift viz` on the tiny model and the sdist's test-3.mp4 (10 s with
sound), at the paper's 25% setting (video 0.23, audio 0.5, anchor).

    python scripts/make_picture.py [-o docs/omnisift-kept.png]

It takes the masks from create_chat_completion(on_unit=...). On a tree whose Llama has no on_unit
yet, it falls back to the pipeline's test hook (Pipeline.on_rows: all positions, modality and keep
mask of each unit), numbering grids and audio rows in sequence order as on_unit does.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np

from pyomnisift.assets import default_cache_dir, ensure_assets
from pyomnisift import tiny_model as make_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def records_from_hook(llm, messages, **compression):
    recs, counters = [], {"video": 0, "audio": 0}
    grid_size = {}

    def on_rows(kept_rows, kept_pos, rows, positions, modality, keep):
        modality = np.asarray(modality)
        src = np.zeros(len(modality), np.int32)
        video = np.flatnonzero(modality == 1)
        if len(video):
            # consecutive grids of equal size; a grid's rows share one t
            t = positions[0][video]
            starts = np.flatnonzero(np.r_[True, np.diff(t) != 0])
            for k, s in enumerate(starts):
                e = starts[k + 1] if k + 1 < len(starts) else len(video)
                src[video[s:e]] = counters["video"]
                counters["video"] += 1
                grid_size[counters["video"] - 1] = e - s
        audio = np.flatnonzero(modality == 2)
        src[audio] = counters["audio"] + np.arange(len(audio))
        counters["audio"] += len(audio)
        recs.append(types.SimpleNamespace(item=0, kind="video", modality=modality.astype(np.int32), source_index=src,
                                          positions=np.asarray(positions, np.int32), keep=np.asarray(keep, bool)))

    llm._pipeline.on_rows = on_rows
    try:
        llm.create_chat_completion(messages, max_tokens=1, temperature=0, **compression)
    finally:
        llm._pipeline.on_rows = None
    return recs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=str(ROOT / "docs" / "omnisift-kept.png"))
    ap.add_argument("--max-pairs", type=int, default=8)
    args = ap.parse_args(argv)

    import pyomnisift
    from pyomnisift import viz

    assets = ensure_assets()
    out = default_cache_dir() / "tiny-model-0"
    llm_path, mmproj_path = out / make_tiny_model.LLM_FILE, out / make_tiny_model.MMPROJ_FILE
    if not (llm_path.exists() and mmproj_path.exists()):
        make_tiny_model.make_tiny_model(out, 0, assets["ggml-vocab-qwen2.gguf"])
    clip = str(assets["test-3.mp4"])
    compression = dict(video_retention=0.23, audio_retention=0.5, audio_selector="anchor")
    llm = pyomnisift.Llama(str(llm_path), str(mmproj_path), n_ctx=8192, n_threads=2)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    if hasattr(pyomnisift, "UnitRecord"):
        result = viz.visualize(llm, clip, "video", max_pairs=args.max_pairs, thumb_width=128, **compression)
        result.image.save(args.output, optimize=True)
    else:
        messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": clip}},
                                                 {"type": "text", "text": "Describe this."}]}]
        result = viz.render(clip, "video", records_from_hook(llm, messages, **compression), max_pairs=args.max_pairs,
                            thumb_width=128)
        result.image.save(args.output, optimize=True)
    print(f"wrote {args.output} ({result.image.width}x{result.image.height}): {result.summary()}")
    llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
