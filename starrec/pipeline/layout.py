"""Where every stage keeps its output inside the work folder (the layout ``benchmarks/star_vs_mars.py``
has always used, so runs recorded before the pipeline existed are picked up as they are)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from starrec.pipeline.config import MOVIELENS, PipelineConfig


def dataset_dir(dataset: str) -> Path:
    """The full dataset folder: MovieLens-100k's place in the cache, or the folder the config names."""
    if dataset == MOVIELENS:
        from starrec.config import get_settings

        return get_settings().cache_dir / "datasets" / "ml-100k"
    return Path(dataset)


@dataclass(frozen=True)
class WorkLayout:
    """Paths of one pipeline's inputs and outputs."""

    work: Path
    dataset: Path
    """The full dataset (test tasks and evaluation read it; the harness hides the answers)."""

    @classmethod
    def of(cls, config: PipelineConfig) -> WorkLayout:
        return cls(work=config.work, dataset=dataset_dir(config.data.dataset))

    @property
    def train_data(self) -> Path:
        """A copy of the dataset with every test answer and everything after it removed."""
        return self.work / f"{self.dataset.name}-train"

    @property
    def test_tasks(self) -> Path:
        return self.work / "tasks-test"

    @property
    def train_tasks(self) -> Path:
        return self.work / "tasks-train"

    @property
    def runs(self) -> Path:
        """Teacher runs (``runs.jsonl``), appended by ``teach``, which resumes per (task, pass)."""
        return self.work / "teacher-runs"

    @property
    def filter_report(self) -> Path:
        return self.work / "filter.json"

    @property
    def planner_sft(self) -> Path:
        """The planner fine-tuned on the teacher's planner steps (the MARS-Planner row's planner)."""
        return self.work / "planner-sft"

    @property
    def sft(self) -> Path:
        return self.work / "star-sft"

    @property
    def rl_data(self) -> Path:
        return self.work / "star-rl"

    @property
    def grpo(self) -> Path:
        return self.work / "star-grpo"

    @property
    def serve_plan(self) -> Path:
        return self.work / "serve.json"

    @property
    def eval_dir(self) -> Path:
        """Evaluation rows, one file per group of rows (a rerun recomputes only missing groups)."""
        return self.work / "eval"

    @property
    def results(self) -> Path:
        return self.eval_dir / "results.json"

    @property
    def record(self) -> Path:
        """The config of the last invocation and every stage's status, seconds and result."""
        return self.work / "pipeline.json"

    def server_log(self, name: str) -> Path:
        """The log of the vLLM server started for ``name``."""
        return self.work / f"vllm-{name}.log"
