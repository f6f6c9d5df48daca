"""Shared pieces of the three training stages: data, losses, the loop, run folders."""
