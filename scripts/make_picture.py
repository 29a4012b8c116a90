#!/usr/bin/env python3
"""The README's picture: `pyomnisift viz` on the tiny model and the sdist's test-3.mp4 (10 s with
sound), at the paper's 25% setting (video 0.23, audio 0.5, anchor).

    python scripts/make_picture.py [-o docs/omnisift-kept.png]

It takes the masks from create_chat_completion(on_unit=...). The picture is generated, not kept in
git (docs/omnisift-kept.png is ignored).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pyomnisift.assets import default_cache_dir, ensure_assets
from pyomnisift import tiny_model as make_tiny_model

ROOT = Path(__file__).resolve().parents[1]


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
    result = viz.visualize(llm, clip, "video", max_pairs=args.max_pairs, thumb_width=128, **compression)
    result.image.save(args.output, optimize=True)
    print(f"wrote {args.output} ({result.image.width}x{result.image.height}): {result.summary()}")
    llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
