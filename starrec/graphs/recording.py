"""Trajectory recording: a LangChain callback handler, the ``runs.jsonl`` writer and a loader.

:class:`TrajectoryRecorder` is attached to one run (``config={"callbacks": [recorder]}``). It
groups every LLM call (messages, response, tokens, seconds), tool call (arguments, evidence,
Cypher traces) and structured-output repair under the graph node it happened in, and takes each
node's structured output from the node's own ``last_step`` report. :meth:`TrajectoryRecorder.trajectory`
then assembles the :class:`~starrec.distill.trajectory.Trajectory` that distillation reads.

:class:`RunsFile` appends one JSON line per finished run and flushes it, so a killed batch loses
at most the runs in flight, and tells a resumed batch which (task, pass) pairs are done.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import LLMResult

from starrec.agents.base import format_entry
from starrec.distill.trajectory import AGENT_NODES, LLMCallRecord, StepRecord, ToolCallRecord, Trajectory
from starrec.llm.messages import message_text, message_to_record
from starrec.llm.redact import redact, redact_value
from starrec.llm.structured import REPAIR_EVENT
from starrec.llm.textproto import format_tool_call
from starrec.tools.base import CFResult

NODE_NAMES: frozenset[str] = frozenset({"abstractor", "planner", *AGENT_NODES, "reflector", "ranker"})
HIT_KS: tuple[int, ...] = (1, 3, 5)


def student_prompt(
    summary: str, recent: Sequence[Mapping[str, Any]], candidates: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """What a run was asked, in the form the STAR student is shown (``Trajectory.prompt``)."""
    return {
        "long-term summary": summary,
        "recent behaviours (oldest first)": [format_entry(entry) for entry in recent],
        "candidates": [format_entry(entry) for entry in candidates],
    }


def hit_flags(ranking: Sequence[str], ground_truth: str | None) -> dict[str, bool]:
    if ground_truth is None:
        return {}
    return {f"hit@{k}": ground_truth in list(ranking)[:k] for k in HIT_KS}


class TrajectoryRecorder(BaseCallbackHandler):
    """Collects one MARS run's steps from LangChain callbacks (one recorder per run)."""

    run_inline = True  # keep event order in async runs; every handler method is cheap

    def __init__(self) -> None:
        self.steps: list[StepRecord] = []
        self._step_of_run: dict[UUID, StepRecord] = {}
        self._started: dict[UUID, float] = {}
        self._llm: dict[UUID, LLMCallRecord] = {}
        self._tools: dict[UUID, ToolCallRecord] = {}
        self._lock = threading.Lock()

    # -- node runs --------------------------------------------------------------------------

    def _owner(self, parent_run_id: UUID | None) -> StepRecord | None:
        return self._step_of_run.get(parent_run_id) if parent_run_id is not None else None

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name")
        node = (metadata or {}).get("langgraph_node")
        with self._lock:
            if name in NODE_NAMES and node == name and parent_run_id not in self._step_of_run:
                step = StepRecord(node=name)
                self.steps.append(step)
                self._step_of_run[run_id] = step
                self._started[run_id] = time.perf_counter()
            elif (owner := self._owner(parent_run_id)) is not None:
                self._step_of_run[run_id] = owner

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            if run_id not in self._started:
                return
            step = self._step_of_run[run_id]
            step.seconds = time.perf_counter() - self._started.pop(run_id)
            report = outputs.get("last_step") if isinstance(outputs, Mapping) else None
            if isinstance(report, Mapping):
                step.round = int(report.get("round", 0))
                step.output = dict(report.get("output", {}))
                step.thinking = str(report.get("thinking", ""))
                for key, value in (report.get("repairs") or {}).items():
                    step.repairs[key] = step.repairs.get(key, 0) + int(value)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            if run_id in self._started:
                step = self._step_of_run[run_id]
                step.seconds = time.perf_counter() - self._started.pop(run_id)
                step.error = redact(f"{type(error).__name__}: {error}")

    # -- LLM calls --------------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            owner = self._owner(parent_run_id)
            if owner is None:
                return
            self._step_of_run[run_id] = owner
            record = LLMCallRecord(node=owner.node, messages=[message_to_record(m) for m in messages[0]])
            owner.llm_calls.append(record)
            self._llm[run_id] = record
            self._started[run_id] = time.perf_counter()

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            record = self._llm.pop(run_id, None)
            if record is None:
                return
            record.seconds = time.perf_counter() - self._started.pop(run_id, time.perf_counter())
            generation = (
                response.generations[0][0] if response.generations and response.generations[0] else None
            )
            message = getattr(generation, "message", None)
            if isinstance(message, AIMessage):
                calls = [format_tool_call(call["name"], call["args"]) for call in message.tool_calls]
                record.response = "\n".join(part for part in [message_text(message), *calls] if part)
                usage = message.usage_metadata or {}
                record.prompt_tokens = int(usage.get("input_tokens", 0))
                record.completion_tokens = int(usage.get("output_tokens", 0))
            elif generation is not None:
                record.response = generation.text

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            record = self._llm.pop(run_id, None)
            self._started.pop(run_id, None)
            owner = self._step_of_run.get(run_id)
            if record is not None and owner is not None:
                record.response = redact(f"[error] {type(error).__name__}: {error}")
                owner.repairs["llm_error"] = owner.repairs.get("llm_error", 0) + 1

    # -- tools ------------------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            owner = self._owner(parent_run_id)
            if owner is None:
                return
            self._step_of_run[run_id] = owner
            name = kwargs.get("name") or (serialized or {}).get("name", "")
            record = ToolCallRecord(name=name, arguments=dict(inputs or {}))
            owner.tool_calls.append(record)
            self._tools[run_id] = record
            self._started[run_id] = time.perf_counter()

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            record = self._tools.pop(run_id, None)
            if record is None:
                return
            record.seconds = time.perf_counter() - self._started.pop(run_id, time.perf_counter())
            artifact = output.artifact if isinstance(output, ToolMessage) else None
            record.response = message_text(output) if isinstance(output, ToolMessage) else str(output)
            if isinstance(artifact, CFResult):
                record.queries = list(artifact.queries)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            record = self._tools.pop(run_id, None)
            self._started.pop(run_id, None)
            if record is not None:
                record.error = redact(f"{type(error).__name__}: {error}")

    # -- repairs announced by the structured-output layer ----------------------------------

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if name != REPAIR_EVENT:
            return
        with self._lock:
            owner = self._step_of_run.get(run_id)
            if owner is not None and isinstance(data, Mapping):
                key = str(data.get("key") or f"structured_{data.get('kind', 'repair')}")
                owner.repairs[key] = owner.repairs.get(key, 0) + 1

    # -- assembly ---------------------------------------------------------------------------

    def trajectory(
        self,
        state: Mapping[str, Any] | None,
        *,
        task_id: str,
        pass_: int = 0,
        ground_truth: str | None = None,
        settings: Mapping[str, Any] | None = None,
        model: str = "",
        seconds: float = 0.0,
        error: str | None = None,
        candidates: Sequence[str] = (),
    ) -> Trajectory:
        """The run as one :class:`Trajectory` (``state`` = the graph's final state, None on error)."""
        state = dict(state or {})
        ranking = list(state.get("ranking") or [])
        shown = list(candidates) or [c["id"] for c in state.get("candidates", [])]
        steps = [step.model_copy(deep=True) for step in self.steps]
        repairs: dict[str, int] = {}
        for step in steps:
            for key, value in step.repairs.items():
                repairs[key] = repairs.get(key, 0) + value
        llm_calls = [call for step in steps for call in step.llm_calls]
        return Trajectory(
            task_id=task_id,
            pass_=pass_,
            user_id=str(state.get("user_id", "")),
            scenario=str(state.get("scenario", "")),
            domain=str(state.get("domain", "item")),
            candidates=shown,
            ground_truth=ground_truth,
            prompt=student_prompt(
                str(state.get("summary", "")), state.get("recent", []), state.get("candidates", [])
            )
            if state
            else {},
            ranking=ranking,
            hits=hit_flags(ranking, ground_truth) if ranking else {},
            nodes=[step.node for step in steps if step.error is None],
            steps=steps,
            repairs=repairs,
            error=redact(error) if error else error,
            seconds=seconds,
            llm_calls=len(llm_calls),
            prompt_tokens=sum(call.prompt_tokens for call in llm_calls),
            completion_tokens=sum(call.completion_tokens for call in llm_calls),
            settings=redact_value(dict(settings or {})),
            model=model,
        )


class RunsFile:
    """``RUNS/runs.jsonl``: append-and-flush writer, resume index, tolerant reader."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path / "runs.jsonl" if path.suffix != ".jsonl" else path
        self.torn_lines = 0
        """Torn last lines skipped by the latest read (0 or 1): a killed run, redone on resume."""
        self._lock = threading.Lock()

    def records(self) -> list[dict[str, Any]]:
        """Every complete line; a torn last line (the process was killed mid-write) is skipped."""
        return [record for _, record in self.numbered_records()]

    def numbered_records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(line number, object)`` per complete line, so readers can name the line at fault.

        The file is split as bytes on ``\\n`` only: a kill can cut a multi-byte character, and
        ``str.splitlines`` would also split inside JSON strings holding U+2028 or U+0085.
        """
        self.torn_lines = 0
        if not self.path.exists():
            return
        lines = self.path.read_bytes().split(b"\n")
        if lines and not lines[-1].strip():
            lines.pop()
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                if number == len(lines):
                    self.torn_lines += 1  # torn write of a killed run: that run is simply redone
                    continue
                what = "not UTF-8" if isinstance(error, UnicodeDecodeError) else "not a JSON line"
                message = f"{self.path}:{number}: {what} ({error}); fix or delete that line"
                raise ValueError(message) from error
            yield number, record

    def finished(self) -> set[tuple[str, int]]:
        """(task_id, pass) pairs already recorded (errored runs included: they are not retried)."""
        return {(str(r["task_id"]), int(r.get("pass", 0))) for r in self.records()}

    def repair_torn_tail(self) -> bool:
        """Cut a torn last line so appended lines stay parseable; True when something was cut."""
        if not self.path.exists():
            return False
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return False
        cut = data.rfind(b"\n") + 1
        with self.path.open("r+b") as handle:
            handle.truncate(cut)
        return True

    def append(self, line: Mapping[str, Any]) -> None:
        """Write one run, every string redacted first (a key in a URL or an echoed error never lands)."""
        text = json.dumps(redact_value(line), ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())


def run_line(trajectory: Trajectory) -> dict[str, Any]:
    """One ``runs.jsonl`` object: the full trajectory plus flat ``hit@k`` flags."""
    return trajectory.to_line()


def load_runs_dataset(runs: str | Path, columns: Iterable[str] | None = None):  # -> datasets.Dataset
    """Recorded runs as a Hugging Face ``datasets.Dataset``.

    Flat columns (task_id, pass, ground_truth, ranking, nodes, hit@k, error, seconds, tokens...)
    stay typed; nested ones (steps, prompt, repairs, settings, hits) are JSON strings because
    their keys differ per node and Arrow needs one schema. ``Trajectory.model_validate_json``
    style round trips work with :func:`trajectory_from_row`.
    """
    from datasets import Dataset

    nested = ("steps", "prompt", "repairs", "settings", "hits")
    rows = []
    for record in RunsFile(runs).records():
        row = {
            key: (json.dumps(value, ensure_ascii=False) if key in nested else value)
            for key, value in record.items()
        }
        for k in HIT_KS:
            row.setdefault(f"hit@{k}", None)
        rows.append(row)
    if not rows:
        raise ValueError(f"no recorded runs in {RunsFile(runs).path}")
    dataset = Dataset.from_list(rows)
    return dataset.select_columns(list(columns)) if columns is not None else dataset


def trajectory_from_row(row: Mapping[str, Any]) -> Trajectory:
    """Inverse of :func:`load_runs_dataset` for one row."""
    nested = ("steps", "prompt", "repairs", "settings", "hits")
    data = {
        key: (json.loads(value) if key in nested and isinstance(value, str) else value)
        for key, value in row.items()
    }
    return Trajectory.model_validate(data)
