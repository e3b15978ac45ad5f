"""starrec: the MARS multi-agent recommender teacher and its distilled STAR student."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "build_mars_graph"]

if TYPE_CHECKING:
    from starrec.graphs.graph import build_mars_graph


def __getattr__(name: str) -> Any:
    # Lazy so `import starrec` stays cheap for apps that only need the data layer.
    if name == "build_mars_graph":
        from starrec.graphs.graph import build_mars_graph

        return build_mars_graph
    raise AttributeError(f"module 'starrec' has no attribute {name!r}")
