"""Evaluation: metrics, ranking repair, the Recommender interface and the harness."""
