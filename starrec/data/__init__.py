"""Datasets (AgentSociety JSON lines, MovieLens) and AgentRecBench task files."""
