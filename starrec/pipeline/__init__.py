"""``starrec pipeline run CONFIG.yaml``: teach -> filter -> planner-sft -> sft -> rl-data -> grpo -> serve
-> eval.

The top floor beside the CLI: each stage calls starrec's own Python API (``teach``, the distill
functions, ``VLLMServer``, ``evaluate``), skips when its output exists, and returns its result as
data; ``eval/results.json`` holds every row with 95% intervals. See docs/pipeline.md.
"""

from __future__ import annotations

from starrec.pipeline.config import STAGES, PipelineConfig, PipelineConfigError, load_config
from starrec.pipeline.layout import WorkLayout
from starrec.pipeline.runner import run_pipeline

__all__ = ["STAGES", "PipelineConfig", "PipelineConfigError", "WorkLayout", "load_config", "run_pipeline"]
