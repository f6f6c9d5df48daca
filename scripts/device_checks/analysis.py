"""Pure analysis of run folders (metrics, comparison, extrapolation) and the synthetic data."""

from __future__ import annotations

import math
from pathlib import Path

from utils import record

from .common import FULL_ITERS, GRAPH_LOSS_REL, TOL_FACTOR, TOL_FLOOR_ERROR, TOL_FLOOR_RELATIVE, is_number


# ============================================================================ analysis (pure)

def primary_metric(final: dict) -> str:
    """The metric final.json reports as <name>_last (test_error, recon_holdout)."""
    names = [k[:-len("_last")] for k in final if k.endswith("_last")]
    return names[0] if names else "test_error"


def steady_seconds_per_iter(lines: list[dict]) -> float | None:
    """Seconds per iteration between the first and the last evaluation (evaluations and
    checkpoints at the run's cadence included; the first window's warm-up excluded)."""
    if len(lines) < 2:
        return None
    di = lines[-1]["iter"] - lines[0]["iter"]
    dt = lines[-1]["wall_time_s"] - lines[0]["wall_time_s"]
    return dt / di if di > 0 and dt > 0 else None


def analyse_run(out: Path, batch_size: int, require_fall: bool) -> tuple[dict, list[str]]:
    """Key numbers of a finished run folder and the problems found in it."""
    lines, final = record.read_metrics(out), record.read_json(Path(out) / record.FINAL)
    problems = []
    if final is None:
        return {}, ["no final.json"]
    if not lines:
        return {}, ["no metrics.jsonl lines"]
    primary = primary_metric(final)
    bad = sorted({k for line in lines for k, v in line.items() if is_number(v) and not math.isfinite(v)})
    first, last = lines[0].get(primary), lines[-1].get(primary)
    info = {
        "primary": primary, "iters": final.get("iters"),
        "first_eval_iter": lines[0]["iter"], f"first_{primary}": first,
        "last_eval_iter": lines[-1]["iter"], f"last_{primary}": last,
        f"best_{primary}": final.get(f"{primary}_best"),
        "losses_finite": not bad,
        "final_losses": {k: v for k, v in lines[-1].items() if k.startswith("loss_")},
        "train_wall_s": final.get("wall_time_s"),
    }
    spi = steady_seconds_per_iter(lines)
    if spi:
        info["steady_s_per_iter"] = round(spi, 6)
        info["steady_img_per_s"] = round(batch_size / spi, 1)
    info["fell"] = (first is not None and last is not None and last < first)
    if bad:
        problems.append(f"non-finite values logged: {', '.join(bad)}")
    if first is None or last is None:
        problems.append(f"{primary} missing from metrics.jsonl")
    elif require_fall and len(lines) >= 2 and not last < first:
        problems.append(f"{primary} did not fall: {first:.4g} at iteration {lines[0]['iter']} -> "
                        f"{last:.4g} at iteration {lines[-1]['iter']}")
    if require_fall and len(lines) < 2:
        problems.append("fewer than two evaluations: cannot tell whether the error fell")
    return info, problems


def comparable(out: Path) -> tuple[list[dict], dict]:
    """metrics.jsonl and final.json without wall-clock times (which differ between identical runs)."""
    lines = record.read_metrics(out)
    for line in lines:
        line.pop("wall_time_s", None)
    final = record.read_json(Path(out) / record.FINAL) or {}
    final.pop("wall_time_s", None)
    if isinstance(final.get("last"), dict):
        final["last"].pop("wall_time_s", None)
    return lines, final


def max_differences(a: list[dict], b: list[dict]) -> dict[str, float]:
    """Per key, the largest |a - b| over the evaluation lines (errors in points; losses relative)."""
    out: dict[str, float] = {}
    for la, lb in zip(a, b):
        for k, va in la.items():
            vb = lb.get(k)
            if not (is_number(va) and is_number(vb)) or k in ("iter", "lr"):
                continue
            if not (math.isfinite(va) and math.isfinite(vb)):
                d = 0.0 if va == vb else math.inf
            elif "error" in k:
                d = abs(va - vb)
            else:
                d = abs(va - vb) / max(abs(va), abs(vb), 1e-12)
            out[k] = max(out.get(k, 0.0), d)
    return out


def compare_runs(reference: Path, resumed: Path, repeat: Path | None) -> dict:
    """Resumed vs uninterrupted run.  Exact (metrics.jsonl and final.json equal, wall times
    aside) is required when the device is deterministic: always without `repeat`, and with
    a repeat run (a second uninterrupted run) when the two uninterrupted runs are equal.
    Otherwise each logged number may differ from the reference by
    max(TOL_FACTOR x the two uninterrupted runs' difference, the floor)."""
    ref_lines, ref_final = comparable(reference)
    res_lines, res_final = comparable(resumed)
    result = {"iterations_reference": [x.get("iter") for x in ref_lines],
              "iterations_resumed": [x.get("iter") for x in res_lines]}
    if result["iterations_reference"] != result["iterations_resumed"]:
        result.update(ok=False, mode="structure", reason="the evaluations logged differ in number or iteration")
        return result
    exact = ref_lines == res_lines and ref_final == res_final
    result["exact"] = exact
    if repeat is None:
        result.update(mode="exact", deterministic_assumed=True, ok=exact,
                      reason=None if exact else "the resumed run differs from the uninterrupted run")
        if not exact:
            result["differences"] = max_differences(ref_lines, res_lines)
        return result
    rep_lines, rep_final = comparable(repeat)
    deterministic = rep_lines == ref_lines and rep_final == ref_final
    result["uninterrupted_runs_equal"] = deterministic
    if deterministic:
        result.update(mode="exact", ok=exact,
                      reason=None if exact else "two uninterrupted runs are equal bit for bit, "
                                                "the resumed one differs")
        if not exact:
            result["differences"] = max_differences(ref_lines, res_lines)
        return result
    if [x.get("iter") for x in rep_lines] != result["iterations_reference"]:
        result.update(ok=False, mode="structure", reason="the repeat uninterrupted run logged other iterations")
        return result
    noise = max_differences(ref_lines, rep_lines)
    diff = max_differences(ref_lines, res_lines)
    allowed = {k: max(TOL_FACTOR * noise.get(k, 0.0), TOL_FLOOR_ERROR if "error" in k else TOL_FLOOR_RELATIVE)
               for k in diff}
    over = {k: {"difference": round(diff[k], 6), "allowed": round(allowed[k], 6)}
            for k in diff if not diff[k] <= allowed[k]}
    result.update(mode="tolerance", ok=not over, run_to_run=noise, differences=diff, allowed=allowed,
                  tolerance_rule=f"|resumed - uninterrupted| <= max({TOL_FACTOR} x |uninterrupted - "
                                 f"uninterrupted repeat|, {TOL_FLOOR_ERROR} point of error / "
                                 f"{TOL_FLOOR_RELATIVE:.0%} of a loss), per logged number",
                  reason=None if not over else f"beyond tolerance: {over}")
    return result


def graph_follows_eager(graph: list[dict], eager: list[dict], require_fall: bool) -> list[str]:
    """Problems of a --cuda-graph stretch against the eager stretch of the same command:
    a graph that stopped updating the weights would finish with finite numbers, so its
    total loss must fall (where `require_fall`) and, at each evaluation both logged, stay
    within GRAPH_LOSS_REL of the eager run's (the two runs' kernels accumulate in other
    orders, and bf16 rounding grows the gap, so not bit for bit)."""
    problems = []
    total = [sum(v for k, v in line.items() if k.startswith("loss_")) for line in graph]
    if require_fall and len(total) >= 2 and not total[-1] < total[0]:
        problems.append(f"the graphed run's loss did not fall ({total[0]:.4g} -> {total[-1]:.4g}): "
                        f"are the captured updates replayed?")
    by_iter = {line["iter"]: sum(v for k, v in line.items() if k.startswith("loss_")) for line in eager}
    for line, value in zip(graph, total):
        ref = by_iter.get(line["iter"])
        if ref is not None and not abs(value - ref) <= GRAPH_LOSS_REL * abs(ref):
            problems.append(f"at iteration {line['iter']} the graphed run's loss {value:.4g} is more than "
                            f"{GRAPH_LOSS_REL:.0%} from the eager run's {ref:.4g}")
            break
    return problems


def extrapolate(process_s: float, iters: int, spi: float, full: int = FULL_ITERS) -> float:
    """The measured process time of `iters` iterations plus the rest at the steady rate."""
    return process_s + (full - iters) * spi


# ============================================================================ synthetic data

def make_synthetic_folder(root: Path, train: int, test: int, classes: int = 10, size: int = 32,
                          seed: int = 0) -> Path:
    """A learnable, not trivial, image-folder set: each class a colour close to the others'
    and a faint oriented grating; each image a random brightness shift and strong pixel
    noise on top.  Written as PNGs, read by utils/data.py like any folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    colours = 128 + rng.normal(0, 18, size=(classes, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    gratings = []
    for c in range(classes):
        angle = math.pi * c / classes
        gratings.append(np.sin(2 * math.pi / 6 * (math.cos(angle) * xx + math.sin(angle) * yy)))
    for split, count in (("train", train), ("test", test)):
        for c in range(classes):
            folder = root / split / f"class{c:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                phase = rng.integers(0, 6)
                pattern = np.roll(gratings[c], phase, axis=1)[..., None]
                pixels = (colours[c] + 14 * pattern + rng.normal(0, 18) +
                          rng.normal(0, 45, size=(size, size, 3)))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:05d}.png")
    return root


