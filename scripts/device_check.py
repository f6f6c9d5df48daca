"""One command that checks this code on a device, within a time budget, and writes what it saw.

    bash scripts/device_check.sh OUT --device cuda      # the GPU check: at most --budget-s (480) seconds
    bash scripts/device_check.sh OUT --device cpu --quick   # the same checks, tiny, on the CPU

Writes OUT/device_check.json (one record per check, written again after each check, so a
run cut short still leaves what it did), OUT/device_check.log (the shell script tees
everything there), OUT/runs/<check>/ (each run's args.json, metrics.jsonl, final.json),
OUT/benchmark.json.  Scratch (data, checkpoints) goes to OUT/tmp, removed at the end
unless --keep-tmp.

The checks, in order of importance (docs/device_check.md says why each is built as it is):

  environment       torch, CUDA, cuDNN, NCCL versions, the devices, the git commit; on
                    --device cuda a convolution, a matmul and bf16 autocast on the GPU.  With
                    --device cuda and no usable GPU this fails and every later check is
                    marked failed (not run), never skipped.
  default/<run>     teacher, paraphraser and a student with every method (ce kd at fact ft
                    at+kd ft+kd ktan), default flags, --iters N: exit 0, every logged loss
                    finite and (on CUDA) the primary metric (test error; the paraphraser's
                    held-out reconstruction loss) lower at the end than at the first evaluation.
  fast/<run>        the same with --amp bf16 --channels-last --fold-bn, and --compile for one
                    method (--compile-method).
  graph/<run>       the fast flags and --cuda-graph (every method but KTAN, whose second
                    optimizer cannot be captured): the same, and the loss must fall and stay
                    within 25% of fast/<run>'s at each evaluation.
  kill-resume       an FT student killed with SIGKILL mid-run and re-run with the same
                    command, against an uninterrupted run: bit-for-bit equal where the device
                    is deterministic (the CPU; on CUDA, when two uninterrupted runs are
                    themselves equal), otherwise within a tolerance measured from two
                    uninterrupted runs; see `compare_runs`.
  distributed       a two-process torchrun FT student (NCCL) when two GPUs exist; otherwise a
                    recorded skip ("skipped: 1 GPU"), the only skip besides the budget.
  benchmark         scripts/benchmark.py --device DEV --json --quick; its JSON in OUT/benchmark.json.
  ft-timing         a timed FT student (ResNet-56 -> ResNet-20, default flags) of S iterations
                    and the paper's 64,000-iteration run's time, extrapolated from it and said
                    so, or measured when the budget holds the full run.
  ft-timing-fast    the same with --amp bf16 --channels-last --fold-bn.
  ft-timing-graph   the same with those flags and --cuda-graph (the whole step one CUDA graph).

Any check that errors (non-zero exit, exception, NaN, time box exceeded) is recorded with
"ok": false and the tail of its output, the remaining checks still run, and the script
exits 1 with a summary line naming every failure.

The default/ and fast/ runs share one worker process that runs the training scripts'
own entry points (`utils.cli.run_main`) one after another, as the command line would: on
a GPU a process start costs seconds (imports, CUDA context, cuDNN's autotuner) that 20
runs cannot afford in 8 minutes.  A run that fails ends the worker (a CUDA error can poison
the process); a fresh one takes the remaining runs.  Each record still carries the
equivalent command line.  The kill/resume, torchrun, benchmark and timing checks run real
command lines in processes of their own.
"""

from __future__ import annotations

import argparse
import sys

import repo_path  # noqa: F401  (the repository's packages, for a script run as a file)
from device_checks.common import FULL_ITERS, GROUPS
from device_checks.driver import Check
from device_checks.worker import worker_main


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Check every stage, method and fast path of this code on a device, within a time budget; "
                    "write OUT/device_check.json (run through scripts/device_check.sh, which tees the log). "
                    "Sizes left unset come from the mode's profile (PROFILES in scripts/device_checks/common.py).")
    parser.add_argument("out", help="output folder (device_check.json, runs/, benchmark.json; scratch in tmp/)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda fails loudly when CUDA is unavailable; cpu runs the same checks small "
                             "(default: cuda)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="total seconds (default: 480 on cuda, 240 with --quick; 1800 / 600 on cpu)")
    parser.add_argument("--quick", action="store_true", help="smaller runs (on the CPU: a few iterations each)")
    parser.add_argument("--data", default="auto",
                        help="synthetic (generated into OUT/tmp), a folder / .tar.gz of train/ test/ class "
                             "folders, or auto: data/cifar10-jpeg.tar.gz under the repository when present, "
                             "else synthetic (default: auto)")
    parser.add_argument("--methods", default=None,
                        help="comma list of student methods (default: every one in utils.distill.METHODS)")
    parser.add_argument("--only", default=None, help=f"comma list of check groups ({','.join(GROUPS)}); "
                        "the default teacher and paraphraser are trained when a selected check needs them")
    parser.add_argument("--iters", type=int, default=None, help="iterations of each default/ and fast/ run (cuda: 300)")
    parser.add_argument("--eval-every", type=int, default=None, help="their evaluation interval (cuda: 30)")
    parser.add_argument("--batch-size", type=int, default=None, help="every run's batch (cuda: 128)")
    parser.add_argument("--teacher-arch", default=None, help="default: resnet56 (resnet20 with --device cpu --quick)")
    parser.add_argument("--compile-method", default=None,
                        help="the fast/ student run with --compile (none: no compile run; default: ft on "
                             "cuda, none on cpu and with --quick on cuda)")
    parser.add_argument("--fast-flags", default=None,
                        help="the fast/ runs' flags (default: --amp bf16 --channels-last --fold-bn; "
                             "--device cpu --quick: --channels-last --fold-bn)")
    parser.add_argument("--kill-iters", type=int, default=None, help="iterations of the kill-resume runs (cuda: 400)")
    parser.add_argument("--kill-eval-every", type=int, default=None, help="(cuda: 100)")
    parser.add_argument("--stretch-iters", type=int, default=None, help="iterations of the timed FT stretch (cuda: 3000)")
    parser.add_argument("--stretch-eval-every", type=int, default=None, help="(cuda: 500)")
    parser.add_argument("--full-iters", type=int, default=FULL_ITERS,
                        help="the full schedule the stretch is extrapolated to, run when the budget holds "
                             "it (default: 64,000, the paper's)")
    parser.add_argument("--require-fall", action=argparse.BooleanOptionalAction, default=None,
                        help="fail a run whose error at the end is not below its first evaluation's "
                             "(default: on cuda)")
    parser.add_argument("--repeat-reference", action=argparse.BooleanOptionalAction, default=None,
                        help="kill-resume: run the uninterrupted reference twice, to tell a deterministic "
                             "device (exact equality required) from one that is not (tolerance) "
                             "(default: on cuda; the CPU is deterministic)")
    parser.add_argument("--distributed-on-cpu", action="store_true",
                        help="with --device cpu, run the two-process check with gloo instead of skipping it")
    parser.add_argument("--inject-failure", default=None, metavar="CHECK",
                        help="make CHECK's command fail (an unknown argument), to see the script fail loudly")
    parser.add_argument("--keep-tmp", action="store_true", help="keep OUT/tmp (data, checkpoints)")
    return parser


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2]))
    sys.exit(Check(get_args_parser().parse_args()).run())
