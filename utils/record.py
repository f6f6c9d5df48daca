"""A run folder's records: the one reader and writer of args.json, metrics.jsonl and final.json,
their schema and its migration, and the table cell a run fills.

    OUT/args.json       {"schema": SCHEMA, "args": the resolved arguments (a flat dict),
                         "run": what the run is, "git_commit", "torch"}
    OUT/metrics.jsonl   one JSON line per evaluation ("iter", the losses, the errors, ...)
    OUT/final.json      written last: the last and best primary metric, "run" again

`read(folder)` gives a `RunRecord` in the current schema; every tool that looks into a run
folder (the report and its figures, gpu_check, ship_run, the demo's summary)
reads through it, and the training loop writes through `write_args`, `append_metrics` and
`write_final` (utils/run.py's RunDir), so a cell (`cell`) and a resume (`resume_differences`)
see the same arguments.

Schema versions (args.json's "schema"):
    0  no "schema": every record written before it existed.  Its args lack the options added
       since (ADDED_ARGS), a paraphraser's hold a placeholder --rae-lambda outside --kind rae
       (1e-4, its former default; none since); a run resumed by a later version of the code keeps its "run" in
       final.json only; the oldest have no "run" at all (such a run is read but fills no cell
       until scripts/backfill_run_records.py describes it from its checkpoints: `upgrade`).
    1  "schema": 1, every option in "args", "run" in args.json.
`migrate` is the one path from any of them to the current one, a step per version (MIGRATIONS):
a record on disk is never rewritten to migrate it.  An option added later bumps SCHEMA and adds
a step that gives older records the value that reproduces them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from utils.errors import UserError

SCHEMA = 1
ARGS = "args.json"
METRICS = "metrics.jsonl"
FINAL = "final.json"
FILES = (ARGS, METRICS, FINAL)  # the record of a run (what scripts/ship_run.py --records-only copies)

# Options added to the training scripts before the schema existed, with the value that
# reproduces the runs made without them and the stages that have them ("detection/..." for
# detection/train_*.py): migrating a version-0 record gives it that value.
_CIFAR = {"teacher", "paraphraser", "student"}
_ALL = _CIFAR | {"detection/teacher", "detection/paraphraser", "detection/student"}
ADDED_ARGS = {
    "recipe": ("paper", _CIFAR), "lr_decay": (0.1, _ALL), "pad_mode": ("zero", _CIFAR),
    "ft_reduction": ("mean", {"student", "detection/student"}), "wrn_init": ("standard", {"teacher", "student"}),
    "bn_images": (0, {"teacher", "student"}), "at_beta_decay": ("none", {"student"}),
}
# Options whose default (None) means "auto" (utils.perf.fast_paths): resuming a run folder that
# holds an explicit value keeps that value (runs made when the default was off).
AUTO_ARGS = {"channels_last", "fold_bn"}
# Arguments that may change between a run and its resumption without changing its result.
RESUME_FREE_ARGS = {"out", "force", "device", "progress", "data_root", "eval_batch_size", "workers",
                    "default_iters"}


# ----------------------------------------------------------------------------- files
def read_json(path: Path):
    """A JSON file's contents; None when it is missing or unreadable (a run being written)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_metrics(path: Path) -> list[dict]:
    """The evaluation lines of a metrics.jsonl (a folder or the file), up to a line cut by a kill."""
    path = Path(path)
    path = path / METRICS if path.is_dir() else path
    lines = []
    try:
        text = path.read_text()
    except OSError:
        return lines
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            lines.append(json.loads(line))
        except ValueError:
            break  # a line cut by a kill ends the valid log
    return lines


def atomic_write_json(obj, path: Path, sort_keys: bool = True) -> None:
    """Write `obj` as JSON to `path` whole or not at all (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- writer
def write_args(folder: Path, args: dict, run: dict, git_commit: str, torch_version: str) -> None:
    """args.json of a new run, in the current schema."""
    atomic_write_json({"schema": SCHEMA, "args": args, "run": run, "git_commit": git_commit,
                       "torch": torch_version}, Path(folder) / ARGS)


def append_metrics(folder: Path, line: dict) -> None:
    with open(Path(folder) / METRICS, "a") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")


def truncate_metrics(folder: Path, iteration: int) -> None:
    """Drop the lines logged after `iteration` (the checkpoint a run resumes from), and a cut one."""
    path = Path(folder) / METRICS
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iter"] <= iteration:
                keep.append(line)
        except (ValueError, KeyError):
            break  # a line cut by a kill ends the valid log
    path.write_text("".join(f"{line}\n" for line in keep))


def write_final(folder: Path, result: dict) -> None:
    atomic_write_json(result, Path(folder) / FINAL)


def lacks_run(folder: Path) -> bool:
    """Whether args.json, or a final.json, has no "run": a record from before runs recorded
    what they are, which no migration can complete from the folder itself."""
    blob, final = read_json(Path(folder) / ARGS) or {}, read_json(Path(folder) / FINAL)
    return not blob.get("run") or (final is not None and not final.get("run"))


def write_run(folder: Path, run: dict) -> None:
    """Give such a folder's args.json and final.json `run`, described from the checkpoints
    the run names (scripts/backfill_run_records.py): the one rewrite of a record on disk."""
    folder = Path(folder)
    atomic_write_json({**read_json(folder / ARGS), "run": run}, folder / ARGS)
    final = read_json(folder / FINAL)
    if final is not None:
        atomic_write_json({**final, "run": run}, folder / FINAL)


# ----------------------------------------------------------------------------- migration
def stage_key(run: dict, args: dict) -> str | None:
    """The kind of run a record holds ("teacher", "student", "detection/student"...); for a
    record without "run", read from its arguments."""
    stage = run.get("stage")
    if stage is None and args:
        stage = "student" if "method" in args else "paraphraser" if "recon_loss" in args else "teacher"
    return f"detection/{stage}" if run.get("task") == "detection" else stage


def _run(blob: dict, final: dict | None) -> dict:
    """What the run is: final.json's "run" first (a run resumed by a later version of the code
    records itself there), else args.json's; {} for a record older than both."""
    return (final or {}).get("run") or blob.get("run") or {}


def _from_0(blob: dict, final: dict | None) -> dict:
    """Version 0 -> 1: the options added since at the value that reproduces the run."""
    args = dict(blob["args"])
    stage = stage_key(_run(blob, final), args)
    for key, (value, stages) in ADDED_ARGS.items():
        if stage in stages:
            args.setdefault(key, value)
    if stage == "paraphraser" and args.get("kind", "conv") != "rae" and "rae_lambda" in args:
        args["rae_lambda"] = None  # --rae-lambda outside --kind rae: unused, recorded then as its former default
    return {**blob, "schema": 1, "args": args}


MIGRATIONS = {0: _from_0}  # version -> the step to the next one


def version(blob: dict) -> int:
    """The schema an args.json was written in (0: before "schema" existed)."""
    v = blob.get("schema", 0)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise UserError(f"args.json has schema {v!r}, not a version number; pass --force to start the run afresh")
    if v > SCHEMA:
        raise UserError(f"a run folder's records are schema {v}, newer than this code's ({SCHEMA}); "
                        f"update the code to read them")
    return v


def migrate(blob: dict, final: dict | None = None) -> dict:
    """An args.json (with its final.json, where there is one) in the current schema.  The one
    migration: every reader and the resume check go through it."""
    v = version(blob)
    while v < SCHEMA:
        blob = MIGRATIONS[v](blob, final)
        v = blob["schema"]
    return {**blob, "run": _run(blob, final)}


def migrate_args(args: dict, stage: str | None) -> dict:
    """A version-0 argument dict of a run of `stage` (the arguments a student's record keeps of
    its teacher and paraphrasers, as that run wrote them) with the options added since."""
    return migrate({"args": args, "run": {"stage": stage}})["args"] if args else {}


def resume_differences(saved: dict, args: dict) -> list[tuple[str, object, object]]:
    """(option, recorded, given) for each argument that differs between a migrated record's
    args and a new command's `args`, which an "auto" option (AUTO_ARGS) left unset takes from
    the record.  An option absent from the record and off (None, False) now is no difference:
    the run was made before the option existed; one the migration gave its value of before
    (ADDED_ARGS) and that the new command does not have is none either."""
    for key in AUTO_ARGS:
        if args.get(key, False) is None and saved.get(key) is not None:
            args[key] = saved[key]
    keys = (set(saved) | set(args)) - RESUME_FREE_ARGS
    return [(k, saved.get(k), args.get(k)) for k in sorted(keys)
            if saved.get(k) != args.get(k) and not (k not in saved and args.get(k) in (None, False))
            and not (k not in args and k in ADDED_ARGS and saved[k] == ADDED_ARGS[k][0])]


def significant(args: dict, exclude: set = frozenset()) -> dict:
    """The arguments that tell two runs apart, `exclude` aside: an option that is off (None,
    False) or at the value that reproduces runs made before it existed (ADDED_ARGS) counts as
    absent, so a run made before the option existed agrees."""
    return {k: v for k, v in args.items()
            if k not in exclude and v is not None and v is not False
            and not (k in ADDED_ARGS and v == ADDED_ARGS[k][0])}


# ----------------------------------------------------------------------------- the table cell
TRANSFER_FACTOR = {"ft", "ft+kd"}  # methods with a paraphraser/translator


def family(dataset: str) -> str:
    """The folder source is the CIFAR-10 copy: it fills the CIFAR-10 tables."""
    return "cifar10" if dataset in ("cifar10", "folder") else dataset


def teacher_id(dataset: str, arch: str) -> tuple:
    return ("teacher", family(dataset), arch)


def student_id(dataset: str, arch: str, method: str, teacher: str | None = None, k=None,
               kind: str | None = None, layers: int | None = None, p: int | None = None,
               no_paraphraser: bool = False, no_translator: bool = False,
               groups: str | None = None) -> tuple:
    """A table cell's identity; runs (`cell`) and table layouts (scripts/paper.py) both build
    it here, so they agree."""
    if method in TRANSFER_FACTOR:
        p, groups = int(p or 1), groups or "last"
        if no_paraphraser:
            k = kind = layers = None
        else:
            kind, layers = kind or "conv", int(layers or 3)
            k = None if kind == "cae" else 2.0 if kind == "rae" else round(float(k), 4)
    else:
        k = kind = layers = p = groups = None
        no_paraphraser = no_translator = False
    return ("student", family(dataset), arch, method, teacher, k, kind, layers, p,
            bool(no_paraphraser), bool(no_translator), groups)


def cell(run: dict, args: dict) -> tuple | None:
    """The table cell of a run, from its record ("run") and its migrated arguments (p, the
    ablation flags, --ft-groups); None for a paraphraser, a detection run or a run without a
    record.  With --ft-groups all, the cell is that of the last group's paraphraser (listed last)."""
    if run.get("task") == "detection":
        return None
    if run.get("stage") == "teacher":
        return teacher_id(run["dataset"], run["arch"])
    if run.get("stage") != "student":
        return None
    teacher, paras = run.get("teacher"), run.get("paraphrasers") or []
    para = paras[-1] if paras else {}
    return student_id(run["dataset"], run["arch"], run["method"], teacher["arch"] if teacher else None,
                      k=para.get("k"), kind=para.get("kind"), layers=para.get("layers"), p=args.get("p"),
                      no_paraphraser=not paras, no_translator=args.get("no_translator", False),
                      groups=args.get("ft_groups"))


# ----------------------------------------------------------------------------- reader
@dataclass
class RunRecord:
    """A run folder's records, migrated to the current schema."""

    path: Path
    args: dict               # the resolved arguments
    run: dict                # what the run is (stage, method, networks, data, ...); {} if unrecorded
    final: dict | None       # final.json; None while the run is unfinished
    schema: int              # the version the folder was written in
    git_commit: str | None = None
    torch: str | None = None

    @property
    def finished(self) -> bool:
        return self.final is not None

    @property
    def cell(self) -> tuple | None:
        return cell(self.run, self.args)

    def metrics(self) -> list[dict]:
        return read_metrics(self.path / METRICS)

    def metrics_at(self, iteration: int) -> dict | None:
        return next((line for line in self.metrics() if line.get("iter") == iteration), None)


def read(folder: Path) -> RunRecord | None:
    """The records of one run folder; None when it holds no readable args.json."""
    folder = Path(folder)
    blob = read_json(folder / ARGS)
    if not isinstance(blob, dict) or not isinstance(blob.get("args"), dict):
        return None
    final = read_json(folder / FINAL)
    final = final if isinstance(final, dict) else None
    current = migrate(blob, final)
    return RunRecord(folder, current["args"], current["run"], final, version(blob),
                     blob.get("git_commit"), blob.get("torch"))


def read_all(root: Path) -> list[RunRecord]:
    """Every run folder under `root` (itself included), in path order."""
    return [r for r in (read(p.parent) for p in sorted(Path(root).rglob(ARGS))) if r is not None]
