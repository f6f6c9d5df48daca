"""The one place that puts the repository's root on sys.path, for a script run as a file
(`python scripts/report.py ...`): its first line is `import repo_path`, after which the
repository's packages (models, utils, ...) import as they do everywhere else."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
