"""MARS agents: prompts, structured outputs, one module per agent."""
