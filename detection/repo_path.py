"""For detection/train_*.py run as files (`python detection/train_teacher.py ...`, as
docs/detection.md and scripts/table_voc.sh call them, which imports from detection/ only):
runs scripts/repo_path.py, the one place that makes the repository's packages importable."""
import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parent.parent / "scripts" / "repo_path.py"))
