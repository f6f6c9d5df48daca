"""Makes the repository root importable for pytest (models, utils, paraphraser, ...)."""
