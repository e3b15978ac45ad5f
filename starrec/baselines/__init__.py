"""Classical baselines: random, identity, pop, itemknn, BPR, LightGCN."""
