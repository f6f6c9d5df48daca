"""The table scripts (scripts/table*.sh, scripts/lib.sh): which runs each declares, the
dependencies and scheduling between stages, skipping finished runs, and one table end
to end at a tiny scale on real training scripts."""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import dry_run, run_script, script_knobs

# Runs per seed: (teachers, paraphrasers, students), from the paper's tables.
PER_SEED = {
    # 4 teachers; per teacher 5 k + CAE + RAE paraphrasers; 3 students alone (ResNet-20 is
    # shared by two rows); per pair AT, KD, AT+KD, 7 FT, FT+KD; multi-group FT for
    # ResNet-56 -> ResNet-20 (paraphrasers of groups 0 and 1, one student).
    "table1": (4, 4 * 7 + 2, 3 + 4 * 11 + 1),
    # 2 teachers, one k=0.5 paraphraser each; per pair alone, AT, F-ActT, KD, AT+KD, FT.
    "table2": (2, 2, 2 * 6),
    # ResNet-110 shared by both rows; 7 paraphrasers; 2 students alone + 2 x 11.
    "table3": (1, 7, 2 + 2 * 11),
    # per dataset: teacher; paraphrasers of 1/2/3 layers; alone, no-para, no-trans, FT of 1/2/3 layers.
    "table4": (2, 2 * 3, 2 * 6),
    # per dataset: teacher, paraphraser, alone, p=1, p=2.
    "table7": (2, 2, 2 * 3),
    "mmrazor_r50_r18": (1, 1, 2),
}
TABLES = tuple(PER_SEED)


def flag(words: list[str], name: str) -> str | None:
    return words[words.index(name) + 1] if name in words else None


def out_of(words: list[str]) -> str:
    return flag(words, "--out")


def dependencies(words: list[str]) -> list[str]:
    deps, taking = [], False
    for w in words:
        if w in ("--teacher", "--paraphraser"):
            taking = True
        elif w.startswith("--"):
            taking = False
        elif taking:
            deps.append(w)
    return deps


# ----------------------------------------------------------------------------- dry runs
def test_the_callers_knobs_never_reach_a_script(tmp_path, monkeypatch):
    """tests/helpers.py clears every knob the scripts read, so a shell that exported SEEDS,
    ONLY, GPUS or IMAGENET_ROOT cannot change what a test sees."""
    knobs = script_knobs()
    assert {"SEEDS", "ONLY", "GPUS", "CPU_JOBS", "DRY_RUN", "RUNS", "DATA_ROOT", "EXTRA_ARGS", "IMAGENET_ROOT",
            "PRETRAINED", "CUDA_VISIBLE_DEVICES"} <= knobs
    clean = {name: dry_run(name, RUNS=tmp_path) for name in ("table7", "table6", "table_voc")}
    for knob in knobs:
        monkeypatch.setenv(knob, "7")
    assert {name: dry_run(name, RUNS=tmp_path) for name in clean} == clean


@pytest.mark.parametrize("seeds", [1, 3])
@pytest.mark.parametrize("table", TABLES)
def test_dry_run_declares_the_tables_runs(table, seeds, tmp_path):
    lines = dry_run(table, SEEDS=seeds, RUNS=tmp_path / "runs")
    scripts = Counter(words[1] for words in lines)
    teachers, paras, students = PER_SEED[table]
    assert scripts == {"train_teacher.py": teachers * seeds, "train_paraphraser.py": paras * seeds,
                       "train_student.py": students * seeds}
    outs = [out_of(words) for words in lines]
    assert len(set(outs)) == len(outs), "a run folder is declared twice"
    # A shared teacher is trained once per seed; every folder name carries its seed.
    teacher_outs = [out_of(w) for w in lines if w[1] == "train_teacher.py"]
    assert all(Path(o).name.startswith("teacher-") for o in teacher_outs)
    for seed in range(seeds):
        assert sum(o.endswith(f"-s{seed}") for o in teacher_outs) == teachers
    for words in lines:
        assert flag(words, "--seed") == Path(out_of(words)).name.rsplit("-s", 1)[1]
    # Stages in order: every --teacher / --paraphraser folder is trained by an earlier line.
    seen = set()
    for words in lines:
        assert set(dependencies(words)) <= seen, words
        seen.add(out_of(words))


def test_tables_share_runs_with_identical_commands(tmp_path):
    commands = {}
    for table in TABLES:
        for words in dry_run(table, SEEDS=2, RUNS=tmp_path / "runs"):
            commands.setdefault(out_of(words), set()).add(" ".join(words))
    assert all(len(c) == 1 for c in commands.values()), [c for c in commands.values() if len(c) > 1]
    shared = tmp_path / "runs/cifar10/ft-resnet20-from-resnet56-k0.5-s1"
    t1 = {out_of(w) for w in dry_run("table1", SEEDS=2, RUNS=tmp_path / "runs")}
    t7 = {out_of(w) for w in dry_run("table7", SEEDS=2, RUNS=tmp_path / "runs")}
    assert str(shared) in t1 & t7
    assert str(tmp_path / "runs/cifar100/ce-resnet20-s0") in t7


def test_table1_rows_and_columns(tmp_path):
    lines = dry_run("table1", SEEDS=1, RUNS=tmp_path)
    everything = [w for w in lines if w[1] == "train_student.py"]
    students = [w for w in everything if flag(w, "--ft-groups") != "all"]
    per_pair = Counter((flag(w, "--arch"), Path(flag(w, "--teacher") or "-").name, flag(w, "--method"))
                       for w in students)
    for s, t in (("resnet20", "resnet56"), ("resnet20", "wrn_40_1"), ("vgg13", "wrn_46_4"),
                 ("wrn_16_1", "wrn_16_2")):
        tt = f"teacher-{t}-s0"
        assert per_pair[(s, tt, "ft")] == 7  # k = 0.5 1 2 3 4, CAE, RAE
        for method in ("at", "kd", "at+kd", "ft+kd"):
            assert per_pair[(s, tt, method)] == 1
    paras = [w for w in lines if w[1] == "train_paraphraser.py"]
    assert sorted({flag(w, "--k") for w in paras if flag(w, "--k")}) == ["0.5", "1", "2", "3", "4"]
    assert Counter(flag(w, "--kind") for w in paras) == {None: 22, "cae": 4, "rae": 4}
    # multi-group FT: one student, with the k = 0.5 paraphrasers of groups 0, 1 and the last
    multi = [w for w in everything if flag(w, "--ft-groups") == "all"]
    assert len(multi) == 1 and flag(multi[0], "--arch") == "resnet20"
    given = multi[0][multi[0].index("--paraphraser") + 1:multi[0].index("--paraphraser") + 4]
    assert [Path(p).name for p in given] == ["para-resnet56-g0-k0.5-s0", "para-resnet56-g1-k0.5-s0",
                                             "para-resnet56-k0.5-s0"]
    assert {flag(w, "--group") for w in paras if "-g0-" in out_of(w) or "-g1-" in out_of(w)} == {"0", "1"}
    # VGG-13's factor comes from the group of WRN-46-4's spatial size (8x8).
    assert {flag(w, "--group") for w in paras if "wrn_46_4" in flag(w, "--teacher")} == {"2"}
    ftkd = [w for w in students if flag(w, "--method") == "ft+kd"]
    assert all(Path(flag(w, "--paraphraser")).name.split("-k")[1] == "0.5-s0" for w in ftkd)
    assert all(flag(w, "--kd-T") == "4" and flag(w, "--beta") == "500" for w in ftkd)


def test_table4_ablations_and_table7_p(tmp_path):
    t4 = dry_run("table4", SEEDS=1, RUNS=tmp_path)
    ft = [w for w in t4 if flag(w, "--method") == "ft"]
    assert sum("--no-paraphraser" in w for w in ft) == 2 and sum("--no-translator" in w for w in ft) == 2
    assert all(flag(w, "--paraphraser") is None for w in ft if "--no-paraphraser" in w)
    layers = Counter(flag(w, "--layers") for w in t4 if w[1] == "train_paraphraser.py")
    assert layers == {"1": 2, "2": 2, None: 2}
    assert {flag(w, "--dataset") for w in t4} == {"cifar10", "cifar100"}
    t7 = dry_run("table7", SEEDS=1, RUNS=tmp_path)
    assert Counter(flag(w, "--p") for w in t7 if flag(w, "--method") == "ft") == {"1": 2, "2": 2}


def test_scale_knobs_reach_every_command(tmp_path):
    lines = dry_run("table7", SEEDS=1, RUNS=tmp_path, ITERS=3000, TEACHER_ITERS=12000, PARA_EPOCHS=5,
                    TRAIN_SUBSET=5000, TEST_SUBSET=1000, EVAL_EVERY=500, EXTRA_ARGS="--amp bf16",
                    DATASET="folder", DATA_ROOT="/data/cifar10-jpeg.tar.gz", PYTHON="python3")
    for words in lines:
        assert words[0] == "python3"
        assert flag(words, "--train-subset") == "5000" and flag(words, "--test-subset") == "1000"
        assert flag(words, "--eval-every") == "500" and flag(words, "--amp") == "bf16"
        expected = {"train_teacher.py": ("--iters", "12000"), "train_student.py": ("--iters", "3000"),
                    "train_paraphraser.py": ("--epochs", "5")}[words[1]]
        assert flag(words, expected[0]) == expected[1]
        if flag(words, "--dataset") == "folder":
            assert flag(words, "--data-root") == "/data/cifar10-jpeg.tar.gz"
            assert out_of(words).startswith(f"{tmp_path}/folder/")
        else:
            assert flag(words, "--dataset") == "cifar100" and flag(words, "--data-root") == "./data"
    # Full scale: no --iters or --epochs, the scripts' paper defaults.
    t2 = dry_run("table2", SEEDS=1, RUNS=tmp_path)
    assert not any("--iters" in w or "--epochs" in w for w in t2)
    # Table 2's environment: every run of the table (teachers, paraphrasers, students) in --recipe at
    assert t2 and all(flag(w, "--recipe") == "at" for w in t2)


def test_only_filter_and_finished_runs(tmp_path):
    lines = dry_run("table7", SEEDS=2, RUNS=tmp_path, ONLY="^cifar100/(teacher|para)")
    assert [Path(out_of(w)).name for w in lines] == ["teacher-resnet110-s0", "teacher-resnet110-s1",
                                                    "para-resnet110-k4-s0", "para-resnet110-k4-s1"]
    done = tmp_path / "cifar100/teacher-resnet110-s1"
    done.mkdir(parents=True)
    (done / "final.json").write_text("{}")
    proc = run_script("table7", SEEDS=2, RUNS=tmp_path, ONLY="^cifar100/teacher", DRY_RUN=1)
    assert proc.stdout.splitlines()[1].startswith("# finished: ") and str(done) in proc.stdout
    assert "2 runs (2 teachers, 0 paraphrasers, 0 students), 1 finished" in proc.stderr


def test_bad_settings_are_refused(tmp_path):
    for settings in ({"LAUNCHER": "pbs"}, {"SEEDS": "x"}, {"PARA_EPOCHS": 1, "PARA_ITERS": 5},
                     {"DATASET": "imagenet"}, {"RUNS": tmp_path / "a b"}):
        proc = run_script("table7", check=False, **{"DRY_RUN": 1, "RUNS": tmp_path, **settings})
        assert proc.returncode == 2 and "error:" in proc.stderr, settings


# ----------------------------------------------------------------------------- scheduling
FAKE_PYTHON = r"""#!/usr/bin/env bash
# Stands in for python: logs start/end with the GPU it was given, writes final.json.
out=""; prev=""
for a in "$@"; do [[ $prev == --out ]] && out=$a; prev=$a; done
echo "start $out ${CUDA_VISIBLE_DEVICES-unset} ${OMP_NUM_THREADS-unset}" >> "$TRACE"
sleep 0.3
if [[ -n ${FAIL:-} && $out =~ $FAIL ]]; then echo "end $out" >> "$TRACE"; exit 1; fi
mkdir -p "$out"; echo '{}' > "$out/final.json"
echo "end $out" >> "$TRACE"
"""


@pytest.fixture
def fake_python(tmp_path):
    path = tmp_path / "fakepython"
    path.write_text(FAKE_PYTHON)
    path.chmod(0o755)
    return path


def trace(tmp_path) -> list[tuple[str, str, str]]:
    return [tuple((line.split() + [""])[:3]) for line in (tmp_path / "trace").read_text().splitlines()]


def test_local_stages_in_order_spread_over_gpus_and_skip_finished(tmp_path, fake_python):
    settings = dict(SEEDS=1, RUNS=tmp_path / "runs", PYTHON=fake_python, TRACE=tmp_path / "trace",
                    GPUS="0 1", RUNS_PER_GPU=2)
    run_script("table7", **settings)
    events = trace(tmp_path)
    starts = [e for e in events if e[0] == "start"]
    assert len(starts) == 10
    assert {gpu for _, _, gpu in starts} == {"0", "1"}
    # Students start only after every teacher and paraphraser ended; teachers ran in parallel.
    position = {(kind, out): i for i, (kind, out, _) in enumerate(events)}
    stage = lambda out: 0 if "/teacher-" in out else 1 if "/para-" in out else 2  # noqa: E731
    for _, out, _ in starts:
        for _, before, _ in starts:
            if stage(before) < stage(out):
                assert position[("end", before)] < position[("start", out)]
    assert events[0][0] == events[1][0] == "start"
    # Re-running starts nothing: finished runs are skipped without starting Python.
    proc = run_script("table7", **settings)
    assert len(trace(tmp_path)) == len(events)
    assert "10 finished" in proc.stderr and "started 0 runs" in proc.stderr


def test_local_failed_teacher_skips_its_students(tmp_path, fake_python):
    proc = run_script("table7", check=False, SEEDS=1, RUNS=tmp_path / "runs", PYTHON=fake_python,
                      TRACE=tmp_path / "trace", FAIL="teacher-resnet110")
    assert proc.returncode != 0
    started = {Path(out).name for kind, out, _ in trace(tmp_path) if kind == "start"}
    assert "ft-resnet20-from-resnet56-k0.5-p2-s0" in started and "ce-resnet20-s0" in started
    assert not any("resnet110" in name and not name.startswith("teacher") for name in started)
    assert "[FAILED]" in proc.stderr and "teacher-resnet110-s0 is not finished" in proc.stderr
    # CPU (GPUS empty): one run at a time, CUDA_VISIBLE_DEVICES left as it was.
    events = trace(tmp_path)
    assert all(events[i][0] == "start" and events[i + 1][0] == "end" for i in range(0, len(events), 2))
    assert {gpu for kind, _, gpu in events if kind == "start"} == {"unset"}


def test_cpu_jobs_run_side_by_side_with_their_share_of_the_cores(tmp_path, fake_python):
    """CPU_JOBS=2: two runs at a time, each told to use half the cores (at least one
    thread), CUDA_VISIBLE_DEVICES untouched; stages still in order.  CPU_JOBS with GPUS,
    or not a positive integer, is refused."""
    import os

    settings = dict(SEEDS=1, RUNS=tmp_path / "runs", PYTHON=fake_python, TRACE=tmp_path / "trace", CPU_JOBS=2)
    proc = run_script("table7", **settings)
    lines = [line.split() for line in (tmp_path / "trace").read_text().splitlines()]
    starts = [line for line in lines if line[0] == "start"]
    assert len(starts) == 10
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert {(gpu, omp) for _, _, gpu, omp in starts} == {("unset", threads)}
    assert f"[start] OMP_NUM_THREADS={threads}: " in proc.stderr
    running = peak = 0
    for line in lines:
        running += 1 if line[0] == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    stage = lambda out: 0 if "/teacher-" in out else 1 if "/para-" in out else 2  # noqa: E731
    ends = {line[1]: i for i, line in enumerate(lines) if line[0] == "end"}
    for i, (_, out, *_) in enumerate(lines):
        if lines[i][0] == "start":
            assert all(ends[o] < i for o in ends if stage(o) < stage(out)), out
    for bad in (dict(CPU_JOBS=2, GPUS="0"), dict(CPU_JOBS="0"), dict(CPU_JOBS="two")):
        proc = run_script("table7", check=False, **{**settings, **bad})
        assert proc.returncode == 2 and "CPU_JOBS" in proc.stderr, bad


FAKE_SBATCH = r"""#!/usr/bin/env bash
# Stands in for sbatch --parsable: records its arguments, answers a job id.
n=$(( $(cat "$JOBS" 2>/dev/null | wc -l) + 100 ))
printf '%s\n' "$n $*" >> "$JOBS"
echo "$n;cluster"
"""


def test_slurm_submits_with_afterok_dependencies(tmp_path):
    for name, text in (("sbatch", FAKE_SBATCH), ("squeue", "#!/usr/bin/env bash\necho PENDING\n")):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    settings = dict(SEEDS=1, RUNS=tmp_path / "runs", LAUNCHER="slurm", SBATCH=tmp_path / "sbatch",
                    SQUEUE=tmp_path / "false-squeue", JOBS=tmp_path / "jobs",
                    SBATCH_ARGS="--partition gpu --gres=gpu:1", ONLY="^cifar10/")
    run_script("table7", **settings)
    jobs = {}
    for line in (tmp_path / "jobs").read_text().splitlines():
        job_id, rest = line.split(" ", 1)
        name = re.search(r"--job-name ft:cifar10/(\S+)", rest).group(1)
        dependency = re.search(r"--dependency=afterok:(\S+)", rest)
        jobs[name] = (job_id, dependency.group(1).split(":") if dependency else [])
        assert "--partition gpu --gres=gpu:1" in rest and "--wrap cd " in rest and " && srun python " in rest
    assert len(jobs) == 5
    assert jobs["teacher-resnet56-s0"][1] == [] and jobs["ce-resnet20-s0"][1] == []
    assert jobs["para-resnet56-k0.5-s0"][1] == [jobs["teacher-resnet56-s0"][0]]
    for student in ("ft-resnet20-from-resnet56-k0.5-s0", "ft-resnet20-from-resnet56-k0.5-p2-s0"):
        assert sorted(jobs[student][1]) == sorted([jobs["teacher-resnet56-s0"][0],
                                                   jobs["para-resnet56-k0.5-s0"][0]])
    assert (tmp_path / "runs/cifar10/teacher-resnet56-s0/slurm.jobid").read_text().strip() == \
        jobs["teacher-resnet56-s0"][0]
    # A second submission while the jobs are still queued submits nothing new.
    proc = run_script("table7", **{**settings, "SQUEUE": tmp_path / "squeue"})
    assert len((tmp_path / "jobs").read_text().splitlines()) == 5
    assert proc.stderr.count("[queued]") == 5 and "submitted 0 jobs" in proc.stderr
    assert [f"run {i} of 5: [queued]" in proc.stderr for i in range(1, 6)] == [True] * 5


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_table7_end_to_end_on_a_tiny_folder_then_skip_and_resume(tmp_path, tiny_folder):
    """Teacher, paraphraser, student alone and FT through the real scripts; a second
    invocation starts nothing; a run without final.json is resumed (and only it)."""
    runs = tmp_path / "runs"
    settings = dict(SEEDS=1, RUNS=runs, DATASET="folder", DATA_ROOT=tiny_folder, ITERS=4, TEACHER_ITERS=4,
                    PARA_ITERS=2, EVAL_EVERY=2, EXTRA_ARGS="--batch-size 16",
                    PYTHON=sys.executable,
                    ONLY=r"^folder/(teacher|para|ce|ft-resnet20-from-resnet56-k0\.5-s0)")
    first = run_script("table7", **settings)
    assert first.stderr.count("[start]") == 4 and first.stderr.count("[done]") == 4
    finals = sorted(runs.glob("folder/*/final.json"))
    assert [f.parent.name for f in finals] == ["ce-resnet20-s0", "ft-resnet20-from-resnet56-k0.5-s0",
                                               "para-resnet56-k0.5-s0", "teacher-resnet56-s0"]
    ft = json.loads((runs / "folder/ft-resnet20-from-resnet56-k0.5-s0/final.json").read_text())
    assert ft["iters"] == 4 and 0 <= ft["test_error_last"] <= 100
    mtimes = {f: f.stat().st_mtime_ns for f in finals}

    second = run_script("table7", **settings)
    assert "[start]" not in second.stderr and "4 finished" in second.stderr
    assert {f: f.stat().st_mtime_ns for f in finals} == mtimes

    (runs / "folder/ce-resnet20-s0/final.json").unlink()
    third = run_script("table7", **settings)
    assert third.stderr.count("[start]") == 1 and "ce-resnet20-s0" in third.stderr
    assert (runs / "folder/ce-resnet20-s0/final.json").exists()
    assert all(f.stat().st_mtime_ns == t for f, t in mtimes.items() if "ce-resnet20" not in str(f))


def test_midscale_declares_the_row_on_one_shipped_teacher(tmp_path):
    teacher, para = tmp_path / "teacher", tmp_path / "para"
    for run in (teacher, para):
        run.mkdir()
        (run / "final.json").write_text("{}")
    lines = dry_run("midscale", SEEDS=3, RUNS=tmp_path / "runs", TEACHER_RUN=teacher, PARA_RUN=para)
    assert len(lines) == 12
    methods = Counter(flag(words, "--method") for words in lines)
    assert methods == {"ce": 3, "kd": 3, "at": 3, "ft": 3}
    for words in lines:
        assert flag(words, "--iters") == "4000" and flag(words, "--arch") == "resnet20"
        assert flag(words, "--teacher") == (None if flag(words, "--method") == "ce" else str(teacher))
        # DATASET defaults to torchvision's cifar10, the teacher learned on the JPEG copy
        assert ("--teacher-data-copy" in words) == (flag(words, "--method") != "ce")
    assert all(flag(w, "--paraphraser") == str(para) for w in lines if flag(w, "--method") == "ft")
    assert sorted(flag(words, "--seed") for words in lines) == ["0"] * 4 + ["1"] * 4 + ["2"] * 4
    folder = dry_run("midscale", SEEDS=1, RUNS=tmp_path / "runs", TEACHER_RUN=teacher, PARA_RUN=para,
                     DATASET="folder", DATA_ROOT=tmp_path)
    assert len(folder) == 4 and not any("--teacher-data-copy" in words for words in folder)
    missing = run_script("midscale", check=False, TEACHER_RUN=tmp_path / "none", PARA_RUN=para, DRY_RUN=1)
    assert missing.returncode == 2 and "must be finished runs" in missing.stderr


@pytest.mark.parametrize("table", [t for t in TABLES])
def test_every_table_paraphraser_states_its_holdout(table, tmp_path):
    """Each paraphraser a table trains says in its command whether it holds images out."""
    paras = [w for w in dry_run(table, SEEDS=1, RUNS=tmp_path) if any(x.endswith("train_paraphraser.py") for x in w)]
    assert paras and all(flag(w, "--holdout") in ("0", "0.1") for w in paras)
