"""The live objects MARS nodes use (chat model, evidence source, CF tools), created lazily.

Kept out of the context because they are not JSON: an embedding app passes its own instances
to :func:`starrec.graphs.graph.build_mars_graph`; otherwise they are built on first use from
the context (``llm`` spec, ``data_dir``), so importing the graph module never loads a model.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool

from starrec.agents.env import AgentEnv
from starrec.graphs.context import Context
from starrec.llm.structured import llm_capabilities
from starrec.tools.base import EvidenceSource, ValuesSource
from starrec.tools.value_profiles import ItemValueProfiles, item_value_profiles


class Resources:
    """Chat models + evidence for a graph; thread-safe lazy construction, cached per spec.

    Which model serves a node, first match wins: an explicit instance for that node
    (``chat_models``), the context's spec for it (``Context.models``), the explicit default
    instance (``chat_model``), the context's ``llm``.
    """

    def __init__(
        self,
        chat_model: BaseChatModel | None = None,
        evidence: EvidenceSource | None = None,
        chat_models: Mapping[str, BaseChatModel] | None = None,
        value_profiles: ItemValueProfiles | None = None,
    ) -> None:
        self._explicit_model = chat_model
        self._explicit_models = dict(chat_models or {})
        self._explicit_evidence = evidence
        self._models: dict[tuple[Any, ...], BaseChatModel] = {}
        self._evidence: dict[tuple[str, str | None], EvidenceSource] = {}
        self._tools: dict[int, list[BaseTool]] = {}
        self._explicit_profiles = value_profiles
        self._profiles: dict[tuple[str | None, str | None], ItemValueProfiles] = {}
        self._live: dict[tuple[int, int, int, str], ValuesSource] = {}
        self._lock = threading.Lock()

    def chat_model(self, context: Context, node: str | None = None) -> BaseChatModel:
        """The model that serves ``node`` (None = the default model of the run)."""
        if node in self._explicit_models:
            return self._explicit_models[node]
        if self._explicit_model is not None and (node is None or node not in context.models):
            return self._explicit_model
        spec, base_url = context.model_for(node)
        key = (
            spec,
            base_url,
            context.max_new_tokens,
            context.temperature,
            context.seed,
            context.llm_threads,
            context.requests_per_second,
            context.constrained_decoding,
            context.llm_cache,
        )
        with self._lock:
            if key not in self._models:
                from starrec.llm import make_chat_model

                self._models[key] = make_chat_model(
                    spec,
                    base_url=base_url,
                    max_tokens=context.max_new_tokens,
                    temperature=context.temperature,
                    seed=context.seed,
                    threads=context.llm_threads,
                    cache=context.llm_cache,
                    **(
                        {"constrained_decoding": context.constrained_decoding}
                        if context.constrained_decoding != "none"
                        else {}
                    ),
                    **(
                        {"requests_per_second": context.requests_per_second}
                        if context.requests_per_second is not None
                        else {}
                    ),
                )
            return self._models[key]

    def evidence(self, context: Context) -> EvidenceSource | None:
        """The CF backend, or None when neither an instance nor ``data_dir`` was given."""
        if self._explicit_evidence is not None:
            return self._explicit_evidence
        if not context.data_dir:
            return None
        key = (context.data_dir, context.tasks_dir)
        with self._lock:
            if key not in self._evidence:
                from starrec.data.tasks import read_tasks
                from starrec.tools.toolkit import open_toolkit

                tasks = read_tasks(Path(context.tasks_dir)) if context.tasks_dir else None
                self._evidence[key] = open_toolkit(context.data_dir, tasks=tasks)
            return self._evidence[key]

    def value_profiles(self, context: Context) -> ItemValueProfiles | None:
        """Item value profiles for the ranker's value prior: the instance given, the context's file,
        or built from ``data_dir`` with the bundled sentence embedder (cached); None without any."""
        if self._explicit_profiles is not None:
            return self._explicit_profiles
        if not context.value_profiles and not context.data_dir:
            return None
        key = (context.value_profiles, context.data_dir)
        with self._lock:
            if key not in self._profiles:
                if context.value_profiles:
                    self._profiles[key] = ItemValueProfiles.load(Path(context.value_profiles))
                else:
                    from starrec.data import load_dataset
                    from starrec.tools.text_embedder import SentenceEmbedder

                    catalogue = load_dataset(Path(str(context.data_dir)))
                    self._profiles[key] = item_value_profiles(catalogue, SentenceEmbedder())
            return self._profiles[key]

    def tools(self, evidence: EvidenceSource) -> list[BaseTool]:
        with self._lock:
            if id(evidence) not in self._tools:
                from starrec.tools.langchain_tools import make_cf_tools

                self._tools[id(evidence)] = make_cf_tools(evidence)
            return self._tools[id(evidence)]

    def lookup_tool(self, name: str, context: Context, node: str, domain: str = "item") -> BaseTool | None:
        """The tool an agent's ``lookup`` names, when tools are on and the source has data for it
        (``node``: the agent that looks up, whose model mines live; ``domain``: what items are)."""
        from starrec.contract.tool_names import USER_VALUES

        if name != USER_VALUES or not context.use_tools:
            return None
        evidence = self.evidence(context)
        if not isinstance(evidence, ValuesSource):
            return None
        from starrec.tools.langchain_tools import make_values_tool

        if context.values_live_mining:
            live = self.live_values(context, evidence, node, domain)
            if live is not None:
                return make_values_tool(live)
        if not evidence.has_value_profiles():
            return None
        return make_values_tool(evidence)

    def live_values(
        self, context: Context, evidence: ValuesSource, node: str, domain: str
    ) -> ValuesSource | None:
        """``evidence`` with live mining where a profile is missing, on ``node``'s model; None when
        the source cannot give a user's history. Mined profiles are shared by every graph of the
        process on the same store, model spec, round limit and domain (a model passed as an
        instance: by this graph only)."""
        from starrec.graphs.values_live import LiveMiningValues, live_miner_context
        from starrec.graphs.values_mining import history_of

        store = getattr(evidence, "store", None)
        if store is None:
            return None
        model = self.chat_model(context, node)
        spec, base_url = context.model_for(node)
        domain = context.domain or domain
        key = (id(evidence), id(model), context.values_live_rounds, domain)
        with self._lock:
            if key not in self._live:
                miner = live_miner_context(
                    spec, base_url, context.values_live_rounds, context.constrained_decoding,
                    context.max_new_tokens,
                )  # fmt: skip
                # A model instance passed in has no spec to share a cache by: this graph's cache only.
                explicit = node in self._explicit_models or (
                    self._explicit_model is not None and node not in context.models
                )
                cache_key = (
                    None
                    if explicit
                    else (str(store.location), f"{spec}@{base_url}", str(context.values_live_rounds), domain)
                )
                self._live[key] = LiveMiningValues(
                    evidence, lambda user: history_of(store, user), model, miner, domain, cache_key
                )
            return self._live[key]

    def env(
        self, context: Context, domain: str, with_tools: bool, node: str | None = None
    ) -> tuple[AgentEnv, list[str]]:
        """An :class:`AgentEnv` for ``node``, on the model assigned to it, plus warnings (e.g. tools
        wanted but unavailable)."""
        model = self.chat_model(context, node)
        warnings: list[str] = []
        tools: list[BaseTool] = []
        if with_tools and context.use_tools and context.max_tool_calls > 0:
            evidence = self.evidence(context)
            if evidence is None:
                warnings.append("use_tools is on but no evidence source: pass data_dir in the context")
            else:
                tools = self.tools(evidence)
        capabilities = llm_capabilities(model)
        protocol = context.tool_protocol
        if protocol == "auto":
            protocol = "native" if capabilities.supports_tool_calling else "text"
        structured = context.structured_output
        if structured == "auto":
            # A model whose with_structured_output is itself prompt-and-repair (text method) would repair
            # twice with two sets of counters; the agents' own JSON path is then the one repair layer.
            native = capabilities.supports_structured_output and capabilities.structured_method != "text"
            structured = "native" if native else "json"
        env = AgentEnv(
            model=model,
            tools=tools,
            domain=context.domain or domain,
            max_tool_calls=context.max_tool_calls,
            tool_protocol=protocol,
            tool_choice=context.tool_choice,
            structured=structured,
        )
        return env, warnings
