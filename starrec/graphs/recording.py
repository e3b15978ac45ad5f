"""Trajectory recording: a LangChain callback handler that assembles one run's :class:`Trajectory`.

:class:`TrajectoryRecorder` is attached to one run (``config={"callbacks": [recorder]}``). It
groups every LLM call (messages, response, tokens, seconds), tool call (arguments, evidence,
Cypher traces) and structured-output repair under the graph node it happened in, and takes each
node's structured output from the step report the node sends as a custom event
(:data:`STEP_EVENT`). :meth:`TrajectoryRecorder.trajectory` then assembles the
:class:`~starrec.contract.trajectory.Trajectory` that distillation reads (written to
``runs.jsonl`` by :class:`~starrec.contract.runs_file.RunsFile`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import LLMResult

from starrec.contract.roster import ROSTER, Roster
from starrec.contract.trajectory import LLMCallRecord, StepRecord, ToolCallRecord, Trajectory, hit_flags
from starrec.distill.student_prompt import task_prompt
from starrec.llm.cache import CACHE_METADATA_KEY
from starrec.llm.messages import join_text_blocks, message_to_record
from starrec.llm.redact import redact, redact_value
from starrec.llm.structured import REPAIR_EVENT
from starrec.llm.toolcall_syntax import format_tool_call
from starrec.llm.usage import ModelIdentity, add_costs, call_cost, identify_model
from starrec.tools.base import CFResult, ValuesResult

STEP_EVENT = "mars_step"
"""Custom event each node dispatches once, at its end: ``{node, round, output, thinking, repairs, ...}``."""


class TrajectoryRecorder(BaseCallbackHandler):
    """Collects one MARS run's steps from LangChain callbacks (one recorder per run).

    ``roster`` must be the graph's: its node names tell the graph's own nodes from an embedding
    app's.
    """

    run_inline = True  # keep event order in async runs; every handler method is cheap

    def __init__(
        self, roster: Roster = ROSTER, *, nodes: Sequence[str] = (), step_event: str = STEP_EVENT
    ) -> None:
        """``nodes``/``step_event``: record another graph of the house (the value miner) instead."""
        self.node_names = frozenset(nodes) if nodes else roster.node_names
        self.step_event = step_event
        self.steps: list[StepRecord] = []
        self._step_of_run: dict[UUID, StepRecord] = {}
        self._started: dict[UUID, float] = {}
        self._llm: dict[UUID, LLMCallRecord] = {}
        self._models: dict[UUID, ModelIdentity] = {}
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
            if name in self.node_names and node == name and parent_run_id not in self._step_of_run:
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
            identity = identify_model(serialized, kwargs.get("invocation_params"), kwargs.get("metadata"))
            record.model = identity.model
            owner.llm_calls.append(record)
            self._llm[run_id] = record
            self._models[run_id] = identity
            self._started[run_id] = time.perf_counter()

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            record = self._llm.pop(run_id, None)
            identity = self._models.pop(run_id, ModelIdentity(model=""))
            if record is None:
                return
            record.seconds = time.perf_counter() - self._started.pop(run_id, time.perf_counter())
            generation = (
                response.generations[0][0] if response.generations and response.generations[0] else None
            )
            message = getattr(generation, "message", None)
            if isinstance(message, AIMessage):
                calls = [format_tool_call(call["name"], call["args"]) for call in message.tool_calls]
                record.response = "\n".join(part for part in [join_text_blocks(message), *calls] if part)
                usage = message.usage_metadata or {}
                record.prompt_tokens = int(usage.get("input_tokens", 0))
                record.completion_tokens = int(usage.get("output_tokens", 0))
                record.cache = message.response_metadata.get(CACHE_METADATA_KEY)
            elif generation is not None:
                record.response = generation.text
            tokens = (record.prompt_tokens, record.completion_tokens)
            record.cost_usd = call_cost(identity, *tokens, record.cache)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            record = self._llm.pop(run_id, None)
            self._started.pop(run_id, None)
            self._models.pop(run_id, None)
            owner = self._step_of_run.get(run_id)
            if record is not None and owner is not None:
                record.response = redact(f"[error] {type(error).__name__}: {error}")
                record.cost_usd = 0.0  # a failed request reports no usage and is not billed
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
            record.response = join_text_blocks(output) if isinstance(output, ToolMessage) else str(output)
            if isinstance(artifact, CFResult | ValuesResult):
                record.queries = list(artifact.queries)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            record = self._tools.pop(run_id, None)
            self._started.pop(run_id, None)
            if record is not None:
                record.error = redact(f"{type(error).__name__}: {error}")

    # -- step reports of the nodes, repairs announced by the structured-output layer -------

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        if name not in (self.step_event, REPAIR_EVENT):
            return
        with self._lock:
            owner = self._step_of_run.get(run_id)
            if owner is None or not isinstance(data, Mapping):
                return
            if name == self.step_event:
                owner.round = int(data.get("round", 0))
                owner.output = dict(data.get("output", {}))
                owner.thinking = str(data.get("thinking", ""))
                for key, value in (data.get("repairs") or {}).items():
                    owner.repairs[key] = owner.repairs.get(key, 0) + int(value)
            else:
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
        # A run that ended cleanly sends no more events, so its steps are handed over as they are;
        # one that failed or timed out may still hear from a cancelled call, so it gets a snapshot.
        steps = list(self.steps) if error is None else [step.model_copy(deep=True) for step in self.steps]
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
            prompt=task_prompt(
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
            llm_cache_hits=sum(call.cache == "hit" for call in llm_calls),
            llm_cache_misses=sum(call.cache == "miss" for call in llm_calls),
            cost_usd=add_costs([call.cost_usd for call in llm_calls]),
            settings=redact_value(dict(settings or {})),
            model=model,
        )
