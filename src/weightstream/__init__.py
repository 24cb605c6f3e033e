"""weightstream: trustworthy per-user weight trajectories from messy exports."""

__version__ = "0.1.0"
