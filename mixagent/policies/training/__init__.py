"""Training mixing agents: offline (BC + CQL on trajectories) and online (SB3 over Ray)."""
