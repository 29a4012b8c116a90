"""OmniSIFT inside vLLM: a `vllm.general_plugins` entry point (install `pyomnisift[vllm]`).

vLLM loads general plugins in every process it starts. `register` replaces vLLM's Qwen2.5-Omni
thinker (the architectures a Qwen2.5-Omni checkpoint names) with `OmniSiftQwen2_5OmniThinker`, a
subclass that compresses each video that comes with its sound (`use_audio_in_video`) with
pyomnisift's own C selection. The class is registered by name, so nothing of vLLM's model code is
imported until vLLM builds the model. `VLLM_PLUGINS` (vLLM's allow-list) turns it off: a list
without "omnisift" serves vLLM's own class.
"""

from __future__ import annotations

ARCHITECTURES = ("Qwen2_5OmniModel", "Qwen2_5OmniForConditionalGeneration",
                 "Qwen2_5OmniThinkerForConditionalGeneration")
MODEL_CLASS = "pyomnisift.vllm_plugin.model:OmniSiftQwen2_5OmniThinker"


def register() -> None:
    from vllm import ModelRegistry

    from ._cpu_runner import patch

    patch()
    for arch in ARCHITECTURES:
        ModelRegistry.register_model(arch, MODEL_CLASS)
