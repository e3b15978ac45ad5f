"""Datasets (AgentSociety JSON lines, MovieLens) and AgentRecBench task files."""

from starrec.data.agentsociety import DataFormatError, load_dataset, write_dataset
from starrec.data.movielens import fetch_movielens_100k

__all__ = ["DataFormatError", "fetch_movielens_100k", "load_dataset", "write_dataset"]
