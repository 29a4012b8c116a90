"""One end-to-end video prompt on the tiny model, the program `make test-valgrind` runs under
valgrind memcheck: a clip with sound through both towers, OmniSIFT at the default 35% setting,
decoding and a few generated tokens; then everything is closed, so that what is still allocated at
exit is a leak, not a live object.

Usage: python video_prompt.py LLM.gguf MMPROJ.gguf CLIP.mp4
"""

import sys

import pyomnisift


def main(llm_path: str, mmproj_path: str, clip: str) -> None:
    llm = pyomnisift.Llama(llm_path, mmproj_path=mmproj_path, n_ctx=2048, n_threads=1, verbose=False)
    messages = [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": clip}},
        {"type": "text", "text": "What happens?"}]}]
    out = llm.create_chat_completion(messages, max_tokens=4, temperature=0.0)
    usage = out["usage"]["omnisift"]
    print("prompt tokens", out["usage"]["prompt_tokens"], "omnisift", usage.get("tokens", usage))
    llm.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
