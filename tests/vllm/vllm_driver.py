"""Runs requests through vLLM's offline engine in a process of its own and prints one JSON line.

    python vllm_driver.py SPEC.json

SPEC: {"model": DIR, "media": NPZ (frames uint8 [T, H, W, 3], audio float32 16 kHz), "prompt": str,
"max_tokens": int, "requests": [mm_processor_kwargs, ...], "record": DIR or null,
"tensor_parallel_size": int, "chat": {"messages", "template"} or absent,
"allowed_local_media_path": DIR or absent}. Each request is the prompt with the video and its track
(use_audio_in_video), greedy; they run one after another, so that with the plugin's recorder on
(PYOMNISIFT_VLLM_RECORD) the items it writes during request k are renamed req-k-*.npz. Whether the
plugin is loaded is the caller's choice (VLLM_PLUGINS). A process per engine: vLLM loads plugins once
per process, and a run without the plugin needs a process that never registered it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(spec_path: str) -> None:
    from vllm import LLM, SamplingParams

    spec = json.loads(Path(spec_path).read_text())
    media = np.load(spec["media"])
    llm = LLM(model=spec["model"], dtype="float32", max_model_len=4096, enforce_eager=True, max_num_seqs=2,
              limit_mm_per_prompt={"image": 0, "video": 1, "audio": 1}, seed=0,
              tensor_parallel_size=spec.get("tensor_parallel_size", 1),
              allowed_local_media_path=spec.get("allowed_local_media_path", ""))
    record = Path(spec["record"]) if spec.get("record") else None
    results = []
    if spec.get("chat"):  # LLM.chat: the OpenAI server's path (chat template, media loading), offline
        for kwargs in spec["requests"]:
            out = llm.chat(spec["chat"]["messages"], SamplingParams(max_tokens=spec["max_tokens"], temperature=0),
                           chat_template=spec["chat"]["template"], mm_processor_kwargs=kwargs, use_tqdm=False)[0]
            results.append({"prompt_token_ids": list(out.prompt_token_ids), "text": out.outputs[0].text,
                            "token_ids": list(out.outputs[0].token_ids)})
        print("RESULT " + json.dumps(results), flush=True)
        return
    for k, kwargs in enumerate(spec["requests"]):
        request = {"prompt": spec["prompt"],
                   "multi_modal_data": {"video": [media["frames"]], "audio": [(media["audio"], 16000)]},
                   "mm_processor_kwargs": {"use_audio_in_video": True, **kwargs}}
        out = llm.generate([request], SamplingParams(max_tokens=spec["max_tokens"], temperature=0),
                           use_tqdm=False)[0]
        results.append({"prompt_token_ids": list(out.prompt_token_ids),
                        "token_ids": list(out.outputs[0].token_ids)})
        if record is not None and record.is_dir():
            for f in sorted(record.glob("item-*.npz")):
                f.rename(record / f"req-{k}-{f.name}")
    print("RESULT " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
