"""/metrics in Prometheus' text format (prometheus_client), one registry per app: requests by route
and status, tokens in and kept per modality, prompt and completion tokens, time to first token, and
the requests waiting for the model."""

from __future__ import annotations

from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MODALITIES = ("video", "audio", "image")
# Time to first token: from tens of milliseconds (text, a reused clip) to minutes (an hour of video).
TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, model=None):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("pyomnisift_requests", "HTTP requests answered, by route and status code.",
                                ["route", "status"], registry=r)
        self.prompt_tokens = Counter("pyomnisift_prompt_tokens", "Prompt tokens (KV cells) of finished "
                                     "generations.", registry=r)
        self.completion_tokens = Counter("pyomnisift_completion_tokens", "Tokens generated.", registry=r)
        self.media_tokens_in = Counter("pyomnisift_media_tokens_in", "Media tokens the encoders produced, "
                                       "by modality.", ["modality"], registry=r)
        self.media_tokens_kept = Counter("pyomnisift_media_tokens_kept", "Media tokens OmniSIFT kept (decoded "
                                         "into the LLM), by modality.", ["modality"], registry=r)
        self.ttft = Histogram("pyomnisift_time_to_first_token_seconds", "From the start of the model's work on "
                              "a request to its first sampled token.", buckets=TTFT_BUCKETS, registry=r)
        self.waiting = Gauge("pyomnisift_requests_waiting", "Requests waiting for the model.", registry=r)
        if model is not None:
            self.waiting.set_function(lambda: getattr(model, "waiting", 0))
        for m in MODALITIES:    # present from the start, so a scrape before any media shows zeros
            self.media_tokens_in.labels(m)
            self.media_tokens_kept.labels(m)

    def observe_usage(self, usage: Optional[dict], ttft_s: Optional[float] = None) -> None:
        """One finished generation's usage (llama-cpp-python's, with pyomnisift's `omnisift` stats)."""
        if not usage:
            return
        self.prompt_tokens.inc(usage.get("prompt_tokens") or 0)
        self.completion_tokens.inc(usage.get("completion_tokens") or 0)
        omni = usage.get("omnisift") or {}
        for m in MODALITIES:
            counts = omni.get(m) or {}
            self.media_tokens_in.labels(m).inc(counts.get("tokens_in", 0))
            self.media_tokens_kept.labels(m).inc(counts.get("tokens_kept", 0))
        if ttft_s is None:
            ms = (omni.get("timings_ms") or {}).get("ttft")
            ttft_s = None if ms is None else ms / 1000.0
        if ttft_s is not None:
            self.ttft.observe(ttft_s)


class RequestCounter:
    """ASGI middleware: counts each HTTP request by its route's path template and the status code
    sent. A request refused before routing (a body over the limit) counts under its path when that
    is one of `paths`; any other path is "other", so that the label set stays bounded."""

    def __init__(self, app, metrics: Metrics, paths=()):
        self.app = app
        self.metrics = metrics
        self.paths = frozenset(paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = {"code": 500}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None)    # set by the router when it matched
            if route is None:
                route = scope.get("path") if scope.get("path") in self.paths else "other"
            self.metrics.requests.labels(route, str(status["code"])).inc()
