"""Run-time knobs of the MARS graph (the LangGraph ``context_schema``).

One dataclass, every field documented, every field JSON-serialisable so LangGraph Studio
can show and edit it. Live objects (a chat model instance, an evidence source) are not
context: they are bound when the graph is built (:func:`starrec.graphs.graph.build_mars_graph`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from starrec.contract.ablations import ABLATION_SWITCHES, check_ablation
from starrec.llm.redact import redact_value
from starrec.llm.spec import split_endpoint


@dataclass(kw_only=True)
class Context:
    """Everything a MARS run can be told, with defaults sized for a small local model."""

    llm: str = field(
        default="local",
        metadata={
            "help": "Chat model spec for starrec.llm.make_chat_model: 'local' (SmolLM2 in-process), "
            "'local:DIR' (any HF model folder), 'openai:MODEL' (OpenAI-compatible endpoint), 'scripted'. "
            "Ignored when the graph was built with an explicit chat model."
        },
    )
    base_url: str | None = field(
        default=None, metadata={"help": "Endpoint for the openai backend (vLLM, llama.cpp server, DeepSeek)."}
    )
    models: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "Per-node chat model: {node: spec}, e.g. {'planner': 'local:DIR', 'ranker': "
            "'openai:deepseek-chat'}; nodes not named use llm. A spec takes its own endpoint as "
            "'openai:MODEL@http://HOST:PORT/v1' (without one it uses base_url). Nodes: abstractor, "
            "planner, reflector, ranker and the roster's agents (user_profile, historical_interest, "
            "recent_interest, interest_divergence). "
            "A node given an explicit chat model when the graph was built keeps it."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Dataset folder whose graph + evidence the CF tools read (built or reused via the "
            "toolkit cache). Ignored when the graph was built with an explicit evidence source."
        },
    )
    tasks_dir: str | None = field(
        default=None,
        metadata={
            "help": "Task folder whose ground truths are hidden from the graph and evidence (leakage)."
        },
    )
    domain: str = field(
        default="",
        metadata={"help": "What items are (movie, book, product, business); empty = take it from the input."},
    )
    use_tools: bool = field(default=True, metadata={"help": "Let agents call item_cf / user_cf (ablation)."})
    use_planner: bool = field(
        default=True,
        metadata={"help": "Let the planner pick and order agents; off = all four in fixed order."},
    )
    use_values: bool = field(
        default=True,
        metadata={
            "help": "Run the user_values agent where value profiles are stored (`starrec values mine`); "
            "off = the no_values ablation. Without stored profiles it runs only with values_live_mining."
        },
    )
    values_live_mining: bool = field(
        default=False,
        metadata={
            "help": "Where a user has no stored value profile, the user_values tool mines one live with "
            "the miner subgraph on the user_values node's model (cached per process, counted); off = the "
            "agent is told none is stored, and it does not run when no user has one."
        },
    )
    values_live_rounds: int = field(
        default=1, metadata={"help": "Debate rounds of a live mining (each round: one call per supervisor)."}
    )
    use_reflector: bool = field(
        default=True, metadata={"help": "Check agent outputs and re-run flagged agents (ablation)."}
    )
    max_correction_rounds: int = field(
        default=1,
        metadata={"help": "Correction rounds after a failed reflection (0 = reflect but never re-run)."},
    )
    chunk_size: int = field(
        default=10, metadata={"help": "m: behaviours per chunk in the long-sequence abstractor."}
    )
    max_history: int = field(
        default=40,
        metadata={"help": "Only the most recent N behaviours enter the abstractor (bounds LLM calls)."},
    )
    max_tool_calls: int = field(default=2, metadata={"help": "Tool calls each agent may make per run."})
    tool_k: int = field(default=10, metadata={"help": "Neighbours requested per tool call."})
    tool_protocol: Literal["auto", "native", "text"] = field(
        default="auto",
        metadata={
            "help": "How agents call tools: LangChain tool calling ('native'), the <tool_call> text protocol "
            "('text'), or 'auto' (native when the model implements bind_tools)."
        },
    )
    tool_choice: Literal["auto", "required"] = field(
        default="auto",
        metadata={
            "help": "'required' forces each tool-enabled agent's first turn to be a tool call (a short, "
            "cheap generation; native protocol only). Small local models rarely decide to call tools."
        },
    )
    structured_output: Literal["auto", "native", "json"] = field(
        default="auto",
        metadata={
            "help": "'native' = with_structured_output, 'json' = JSON extraction + repair + one retry, "
            "'auto' = native when the model supports it."
        },
    )
    ranker_fusion: Literal["agreement", "rrf", "llm"] = field(
        default="agreement",
        metadata={
            "help": "'agreement' = the LLM order counts only as far as it agrees with the CF prior beyond "
            "chance (starrec.eval.fusion; a weak model cannot pull MARS below the prior); 'rrf' = "
            "equal-weight "
            "reciprocal-rank fusion with the prior; 'llm' = the ranker's raw order (repaired)."
        },
    )
    fusion_max_weight: float = field(
        default=0.5,
        metadata={"help": "Largest share of the Borda score the LLM order can get under 'agreement' fusion."},
    )
    value_weight: float = field(
        default=0.0,
        metadata={
            "help": "Share of the ranker's prior given to user-item value affinity (ZOOM values, "
            "starrec.tools.value_profiles): prior points = (1 - w) * CF points + w * (affinity + 1) / 2, "
            "before fusion. 0 (default) = the CF prior alone, as before. Needs a CF prior (use_tools)."
        },
    )
    value_profiles: str | None = field(
        default=None,
        metadata={
            "help": "Item value profiles (.npz of ItemValueProfiles.save) for value_weight > 0; None = "
            "built once from data_dir's catalogue with the bundled all-MiniLM-L6-v2 (the values extra) "
            "and cached."
        },
    )
    ranker_prior: Literal["candidate_cf", "neighbour_lists"] = field(
        default="candidate_cf",
        metadata={
            "help": "'candidate_cf' = every candidate scored from the whole graph in one call; "
            "'neighbour_lists' = the old prior (stored top-k Item-CF lists of recent items), for comparison."
        },
    )
    rrf_k: int = field(default=60, metadata={"help": "The k constant of reciprocal-rank fusion."})
    cf_recent_items: int = field(
        default=10,
        metadata={"help": "ranker_prior=neighbour_lists: recent items whose Item-CF lists score the prior."},
    )
    cf_k: int = field(
        default=20,
        metadata={"help": "ranker_prior=neighbour_lists: neighbours per Item-CF lookup."},
    )
    max_new_tokens: int = field(
        default=256,
        metadata={"help": "Generation budget per LLM call (local backend; endpoints get max_tokens)."},
    )
    llm_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads for the local backend while generating (None = torch default). 1 is much "
            "faster on a busy machine: oversubscribed torch threads spin and stall."
        },
    )
    requests_per_second: float | None = field(
        default=None,
        metadata={"help": "Most LLM requests started per second (hosted APIs' limits); None = no limit."},
    )
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0 = greedy)."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling backends."})
    constrained_decoding: Literal["none", "vllm"] = field(
        default="none",
        metadata={
            "help": "'vllm' when base_url is a vLLM server: planner, reflector and ranker answers are "
            "constrained by JSON schemas with enums (agent names, candidate ids) and tool calls by a "
            "structural tag; 'none' = prompt, repair and count."
        },
    )

    llm_cache: str | None = field(
        default=None,
        metadata={
            "help": "SQLite file of the persistent LLM call cache (starrec.llm.cache): a rerun of the same "
            "requests (model, messages, temperature, seed, max tokens, stop, tools, output schema) is "
            "answered from it. None = off. Ignored when the graph was built with an explicit chat model."
        },
    )

    def model_for(self, node: str | None) -> tuple[str, str | None]:
        """(spec, base_url) of the chat model that serves ``node`` (None = the default model)."""
        assigned = self.models.get(node) if node is not None else None
        if assigned is None:
            return self.llm, self.base_url
        spec, url = split_endpoint(assigned)
        return spec, url if url is not None else self.base_url

    def for_pass(self, pass_: int, sample_temperature: float) -> Context:
        """The context of pass ``pass_`` of a multi-pass teach: sampled at ``sample_temperature`` with
        seed ``seed + pass_``, so K passes are K different samples, not K copies of one greedy run."""
        return Context(**{**asdict(self), "temperature": sample_temperature, "seed": self.seed + pass_})

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"Context.chunk_size must be >= 1, got {self.chunk_size}")
        if self.max_correction_rounds < 0:
            raise ValueError(f"Context.max_correction_rounds must be >= 0, got {self.max_correction_rounds}")
        if self.max_tool_calls < 0:
            raise ValueError(f"Context.max_tool_calls must be >= 0, got {self.max_tool_calls}")
        if self.ranker_fusion not in ("agreement", "rrf", "llm"):
            raise ValueError(
                f"Context.ranker_fusion must be 'agreement', 'rrf' or 'llm', got {self.ranker_fusion!r}"
            )
        if self.ranker_prior not in ("candidate_cf", "neighbour_lists"):
            raise ValueError(
                f"Context.ranker_prior must be 'candidate_cf' or 'neighbour_lists', got {self.ranker_prior!r}"
            )
        if not isinstance(self.models, dict) or not all(
            isinstance(node, str) and isinstance(spec, str) and spec.strip()
            for node, spec in self.models.items()
        ):
            raise ValueError(f"Context.models must map node names to model specs, got {self.models!r}")
        if self.values_live_rounds < 1:
            raise ValueError(f"Context.values_live_rounds must be >= 1, got {self.values_live_rounds}")
        if not 0.0 <= self.value_weight <= 1.0:
            raise ValueError(f"Context.value_weight must be in [0, 1], got {self.value_weight}")
        if not 0.0 <= self.fusion_max_weight <= 1.0:
            raise ValueError(f"Context.fusion_max_weight must be in [0, 1], got {self.fusion_max_weight}")

    def with_ablation(self, ablation: str | None) -> Context:
        """A copy with one ablation switched off (``no_tools``, ``no_planner``, ``no_reflector``)."""
        known = check_ablation(ablation)
        if known is None:
            return Context(**asdict(self))
        return Context(**{**asdict(self), ABLATION_SWITCHES[known]: False})

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        """Studio's context form: each field's ``help`` becomes its JSON-schema description."""
        schema = handler.resolve_ref_schema(handler(core_schema))
        properties = schema.get("properties", {})
        for knob in fields(cls):
            if knob.name in properties and knob.metadata.get("help"):
                properties[knob.name]["description"] = knob.metadata["help"]
        schema["description"] = "Run-time knobs of one MARS run (see docs/mars.md)."
        return schema

    def settings(self) -> dict[str, Any]:
        """The knobs as a plain dict (recorded in every trajectory), credentials in ``base_url`` masked."""
        return redact_value(asdict(self))

    @classmethod
    def help(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}
