"""A first-principles estimate of one training step on a GPU, before a GPU is lent: what the
row of scripts/gpu_check.sh costs and whether it fits its budget (docs/gpu.md).

    python scripts/gpu_estimate.py                 # the row's stages on an H200, a table
    python scripts/gpu_estimate.py --json

For each stage of the row (the benchmark's networks: ResNet-56 teacher, its k = 0.5
paraphraser, ResNet-20 alone, FT ResNet-56 -> ResNet-20), one step of batch 128 is counted
on this CPU:
  kernels  the aten operations that launch a kernel on CUDA (torch's profiler, leaf
           operations that move data; views and shape changes excluded; a convolution's
           backward counted as two kernels, data and weight gradients, as cuDNN runs it);
  MACs     multiply-adds (scripts/estimate.py: three forward passes of what is trained,
           one of what is frozen);
  bytes    activations written by every convolution, BatchNorm, ReLU and residual sum in the
           forward pass, each written once and read three times over the step (the next
           layer, BatchNorm's and ReLU's backward, the weight gradient), in 2-byte bf16.
Three floors per step follow: eager launches (kernels x --launch-us of host time each), the
arithmetic (MACs x 2 / --tflops), the memory traffic (bytes / --tb-s); the step costs at
least the largest, and with --cuda-graph the launch floor becomes kernels x --graph-node-us.
The rates are assumptions, printed beside the result: the defaults are an H200's measured
bf16 matrix rate (about 790 TFLOP/s) at the 5% that convolutions of 16-64 channels reach, and
its copy bandwidth (about 4.3 TB/s) at half.  Nothing here is a measurement of a GPU.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

import repo_path  # noqa: F401  (the repository's packages, for a script run as a file)
from bench.ours import build_task
from bench.reference import build_networks
from estimate import step_macs
from utils.train import make_step

ITERS = 64_000
PARA_ITERS = 30 * 390  # train_paraphraser.py's default: 30 epochs of 390 steps
ROW = {  # stage of the benchmark -> (the row's runs it stands for, their iterations)
    "teacher": (["teacher"], ITERS),
    "paraphraser": (["paraphraser"], PARA_ITERS),
    "ce": (["student alone"], ITERS),
    "student": (["FT", "KD", "AT"], ITERS),  # KD and AT: the teacher's forward and a student step, FT's bound
}
NO_KERNEL = {"view", "reshape", "_reshape_alias", "t", "transpose", "as_strided", "expand", "permute", "select",
             "slice", "unsqueeze", "squeeze", "detach", "alias", "_unsafe_view", "empty", "empty_like",
             "empty_strided", "resolve_conj", "resolve_neg", "contiguous", "flatten", "unflatten", "lift_fresh",
             "result_type", "_to_copy", "to", "size", "stride", "numel", "is_nonzero", "item", "_local_scalar_dense",
             "set_", "zeros_like", "requires_grad_", "split", "chunk", "unbind", "narrow", "clone"}
BATCH = 128


def count_kernels(stage: str) -> int:
    """Kernel launches of one training step of `stage` on CUDA, counted on the CPU."""
    from torch.profiler import ProfilerActivity, profile

    task = build_task(stage, build_networks(stage if stage != "ce" else "student", 0)).train()
    optimizer = torch.optim.SGD([p for m in task.trainable().values() for p in m.parameters()], lr=0.1,
                                momentum=0.9, weight_decay=5e-4, foreach=True)
    step = make_step(task, optimizer, torch.device("cpu"))
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    step(x, y)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(x, y)
    count = 0
    for event in prof.events():
        name = event.name.removeprefix("aten::")
        if not event.name.startswith("aten::") or name in NO_KERNEL or event.cpu_children:
            continue
        count += 2 if name.startswith(("convolution_backward", "mkldnn_convolution_backward")) else 1
    return count


def activation_bytes(stage: str) -> int:
    """bf16 bytes of the forward activations of one step (batch 128), written once, read thrice."""
    task = build_task(stage, build_networks(stage if stage != "ce" else "student", 0)).eval()
    total = [0]

    def hook(module, inputs, output):
        if isinstance(output, torch.Tensor):
            total[0] += output.numel() * BATCH

    handles = [m.register_forward_hook(hook) for m in task.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU))]
    with torch.no_grad():
        task(torch.randn(1, 3, 32, 32), torch.zeros(1, dtype=torch.int64))
    for h in handles:
        h.remove()
    return total[0] * 2 * 4


def estimate(args) -> dict:
    stages = {}
    macs_args = {"teacher": ("teacher", "resnet56", None), "paraphraser": ("paraphraser", "resnet56", None),
                 "ce": ("student", "resnet20", None), "student": ("student", "resnet20", "resnet56")}
    for stage, (runs, iters) in ROW.items():
        kernels = count_kernels(stage)
        macs = step_macs(*macs_args[stage]) * BATCH
        nbytes = activation_bytes(stage)
        floors_ms = {"eager_launch": kernels * args.launch_us / 1e3, "graph_launch": kernels * args.graph_node_us / 1e3,
                     "arithmetic": 2 * macs / (args.tflops * 1e12) * 1e3, "memory": nbytes / (args.tb_s * 1e12) * 1e3}
        eager = max(floors_ms["eager_launch"], floors_ms["arithmetic"], floors_ms["memory"])
        graph = max(floors_ms["graph_launch"], floors_ms["arithmetic"], floors_ms["memory"])
        stages[stage] = {"runs": runs, "iters": iters, "kernels_per_step": kernels, "gmacs_per_step": macs / 1e9,
                         "activation_mb_per_step": nbytes / 1e6, "floors_ms": floors_ms,
                         "eager_ms": eager, "graph_ms": graph,
                         "eager_run_s": eager * iters / 1e3, "graph_run_s": graph * iters / 1e3}
    s = {k: v["graph_run_s"] for k, v in stages.items()}
    # the critical path: teacher -> paraphraser -> FT; the other students share the GPU beside it
    # (time-slicing adds their work to the total, it does not hide it)
    total = s["teacher"] + s["paraphraser"] + s["ce"] + 3 * s["student"]
    critical = s["teacher"] + s["paraphraser"] + s["student"]
    return {"assumptions": {"launch_us": args.launch_us, "graph_node_us": args.graph_node_us,
                            "tflops": args.tflops, "tb_s": args.tb_s, "batch": BATCH},
            "stages": stages, "row_graph_s": {"all_work": total, "critical_path": critical}}


def table(result: dict) -> str:
    a = result["assumptions"]
    lines = [f"assumed: {a['launch_us']} us a launch eager, {a['graph_node_us']} us a graph node, "
             f"{a['tflops']} TFLOP/s, {a['tb_s']} TB/s, batch {a['batch']}",
             "| stage (runs) | kernels/step | GMACs/step | act. MB/step | launch eager / graph ms | arithmetic ms "
             "| memory ms | step eager / graph ms | run eager / graph s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for stage, v in result["stages"].items():
        f = v["floors_ms"]
        lines.append(f"| {stage} ({', '.join(v['runs'])}; {v['iters']:,} it) | {v['kernels_per_step']} | "
                     f"{v['gmacs_per_step']:.1f} | {v['activation_mb_per_step']:.0f} | {f['eager_launch']:.2f} / "
                     f"{f['graph_launch']:.2f} | {f['arithmetic']:.2f} | {f['memory']:.2f} | {v['eager_ms']:.2f} / "
                     f"{v['graph_ms']:.2f} | {v['eager_run_s']:.0f} / {v['graph_run_s']:.0f} |")
    r = result["row_graph_s"]
    lines.append(f"row, graphed: {r['all_work']:.0f} s of GPU work in all; critical path teacher -> paraphraser "
                 f"-> FT {r['critical_path']:.0f} s")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--launch-us", type=float, default=6.0,
                        help="host time of one eager kernel launch through PyTorch, us (default: 6)")
    parser.add_argument("--graph-node-us", type=float, default=1.0,
                        help="GPU time between two kernels of a replayed graph, us (default: 1)")
    parser.add_argument("--tflops", type=float, default=40.0,
                        help="reached bf16 rate of these small convolutions, TFLOP/s (default: 40, 5%% of 790)")
    parser.add_argument("--tb-s", type=float, default=2.0, help="reached memory bandwidth, TB/s (default: 2)")
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    return parser


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    result = estimate(args)
    print(json.dumps(result, indent=1) if args.json else table(result))
