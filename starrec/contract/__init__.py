"""The contract shared by the MARS teacher, distillation and STAR serving (the ground floor).

- :mod:`~starrec.contract.trajectory`: the recorded-run schema (one :class:`Trajectory` per run)
  and the one hit@k definition;
- :mod:`~starrec.contract.runs_file`: ``runs.jsonl``, its writer and its readers;
- :mod:`~starrec.contract.roster`: the agent roster (node, chain tag, prompt, focus) and the
  graph's fixed nodes;
- :mod:`~starrec.contract.ablations`: the three ablations and the context switch each turns off;
- :mod:`~starrec.contract.tool_names`: the names of the CF tools;
- :mod:`~starrec.contract.values`: the user-values vocabulary (Schwartz's ten values) and the value profile.

Nothing here imports a higher layer (``lint-imports`` checks it), so every layer can use it.
"""
