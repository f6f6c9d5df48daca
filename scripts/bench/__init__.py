"""The pieces of scripts/benchmark.py: our step (ours), the authors' way of running it
(reference), and how a window is timed (measure)."""
