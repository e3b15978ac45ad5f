"""STAR serving: vLLM launch and the single-pass inference loop with inline tools."""
