"""The pieces of scripts/gpu_check.py: child processes and what the machine is (proc), and
Table 1's row trained beside the checks (row)."""
