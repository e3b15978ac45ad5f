"""MARS agents: one module per role, plus the machinery they share.

Roles: :mod:`~starrec.agents.abstractor`, :mod:`~starrec.agents.planner`, the execution agents of
the roster (:mod:`starrec.contract.roster`, run by :mod:`~starrec.agents.analyst`),
:mod:`~starrec.agents.reflector`, :mod:`~starrec.agents.ranker`. Shared: :mod:`~starrec.agents.env`
(what an agent runs with, what it counts), :mod:`~starrec.agents.templates` (prompt files),
:mod:`~starrec.agents.tool_loop` (bounded tool calls), :mod:`~starrec.agents.structured_answer`
(JSON answer, one retry, fallback).
"""
