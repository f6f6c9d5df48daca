"""The pieces of scripts/device_check.py (its docstring says what the check does)."""
