"""Tool-augmented agent trajectories: the agent, the two-level filter, export."""
