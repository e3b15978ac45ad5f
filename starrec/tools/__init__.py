"""Collaborative-filtering tools: graph stores (Ladybug, Neo4j, scipy), verbaliser, evidence.

Public API for agents and serving (see docs/tools.md for the full guide)::

    from starrec.tools import open_toolkit, make_cf_tools

    open_toolkit(data_dir, tasks=None, store="ladybug", path=None, build_evidence=True, *,
                 verbaliser=None, config=None, show_progress=False) -> EvidenceStore
        # builds or reuses (cache: <cache_dir>/graphs, keyed by data folder + tasks) the graph
        # of data_dir's training interactions (tasks' ground truth and later events hidden)
        # and its deterministic evidence; returns a thread-safe EvidenceSource.

    open_dataset_toolkit(dataset, path=None, build_evidence=True, *, verbaliser=None, config=None,
                         show_progress=False) -> EvidenceStore
        # the same for an in-memory (already leakage-free) Dataset, cached by content hash.

    EvidenceStore.item_cf(item_id: str, k: int = 10) -> CFResult
    EvidenceStore.user_cf(user_id: str, k: int = 10) -> CFResult
        # one stored-evidence lookup; unknown ids -> CFResult(found=False, evidence="... not in graph ...")

    make_cf_tools(source: EvidenceSource) -> list[BaseTool]    # [item_cf, user_cf]
        # item_cf(item_id: str, k: int = 10), user_cf(user_id: str, k: int = 10), 1 <= k <= 50;
        # ToolMessage.content = evidence text, ToolMessage.artifact = CFResult (neighbours + Cypher).

Lower level: ``LadybugStore``/``Neo4jStore`` (``GraphStore``), ``SparseCFIndex`` (oracle),
``build_evidence``, ``MetadataVerbaliser``, ``LLMVerbaliser``, ``load_query``.
"""

from __future__ import annotations

import importlib
from typing import Any

from starrec.contract.trajectory import QueryTrace
from starrec.tools.base import CFResult, EvidenceSource, Neighbour

# Imported on first use so `starrec --help` (which loads starrec.tools.commands) stays fast.
_LAZY = {
    "EvidenceBuildConfig": "starrec.tools.evidence",
    "EvidenceStore": "starrec.tools.evidence",
    "build_evidence": "starrec.tools.evidence",
    "make_cf_tools": "starrec.tools.langchain_tools",
    "open_dataset_toolkit": "starrec.tools.toolkit",
    "open_toolkit": "starrec.tools.toolkit",
}

__all__ = [
    "CFResult",
    "EvidenceBuildConfig",
    "EvidenceSource",
    "EvidenceStore",
    "Neighbour",
    "QueryTrace",
    "build_evidence",
    "make_cf_tools",
    "open_dataset_toolkit",
    "open_toolkit",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'starrec.tools' has no attribute {name!r}")
