"""STAR distillation: trajectories, serialisation, filtering, SFT, RL data, GRPO, rewards."""
