#!/usr/bin/env python3
"""Everything scripts/bench.py needs, built once into the cache: the bench model pair
(make_bench_model.py: the 0.5B LLM of bench_assets.py relabelled qwen2vl + a qwen2.5o mmproj whose
audio tower is Whisper-base's encoder) and the clips (bench_media.py).

    python scripts/bench_inputs.py      # prints the paths
"""

from __future__ import annotations

import sys

from bench_media import prepare_media
from make_bench_model import make_bench_model


def prepare_all() -> dict:
    """{"llm", "mmproj", "audio_weights", "clips": {name: path}}."""
    return {**make_bench_model(), "clips": prepare_media()}


def main() -> int:
    assets = prepare_all()
    print(f"bench model: {assets['llm']}\nmmproj: {assets['mmproj']} (audio tower: {assets['audio_weights']})")
    for name, clip in assets["clips"].items():
        print(f"clip {name}: {clip}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
