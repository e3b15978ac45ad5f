"""Collaborative-filtering tools: graph stores (Ladybug, Neo4j, scipy), verbaliser, evidence."""
