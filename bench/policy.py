"""Policy throughput and training memory, measured side by side in one run.

1. Batched sampling (7 autoregressive action tokens with a KV cache) and log-prob scoring
   (one teacher-forced pass, no gradient) of the embedded VLA: steps per second at batch sizes
   1, 16, 64, and the speed-up of batching over batch size 1.
2. Peak memory of one LoRA training step against one full fine-tuning step (same model, same
   batch, AdamW): each kind runs in a fresh subprocess; the peak resident set is reset
   (/proc/self/clear_refs) after the model and data are ready, so the number is what the
   step itself (activations, gradients, optimizer state) adds.

    python bench/policy.py                # default embedded config (the SFT policy's size)
    python bench/policy.py --hidden-size 512 --layers 6 --json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

STATE_DIM = 28
INSTRUCTIONS = [
    "put the orange cube in the brown tray",
    "push the orange cube onto the green target",
    "stack the blue block on the orange block",
    "place the blue cube inside the white box and do not hit the pillar",
]


def build(args: argparse.Namespace):
    from trainer.policy import make_policy

    torch.manual_seed(0)
    return make_policy(
        "embedded",
        state_dim=STATE_DIM,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        num_heads=args.heads,
        intermediate_size=2 * args.hidden_size,
    )


def batch(size: int, seed: int = 0) -> tuple[dict, list[str], torch.Tensor]:
    rng = np.random.default_rng(seed)
    obs = {"state": rng.normal(size=(size, STATE_DIM)).astype(np.float32)}
    return (
        obs,
        [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(size)],
        torch.as_tensor(rng.integers(0, 256, (size, 7))),
    )


def steps_per_second(fn, batch_size: int, min_seconds: float) -> float:
    fn()  # warm-up (instruction cache, allocator)
    calls, started = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds and calls >= 3:
            return calls * batch_size / elapsed


def throughput(args: argparse.Namespace) -> dict:
    policy = build(args).eval()
    generator = torch.Generator().manual_seed(0)
    results = {}
    for size in args.batch_sizes:
        obs, instructions, tokens = batch(size)
        sample = steps_per_second(lambda: policy.sample(obs, instructions, generator=generator), size, args.seconds)
        with torch.no_grad():
            score = steps_per_second(lambda: policy.log_prob(obs, instructions, tokens), size, args.seconds)
        results[size] = {"sample_steps_per_s": sample, "score_steps_per_s": score}
    return results


def _hiwater_kib() -> int:
    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def _rss_kib() -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def memory_worker(args: argparse.Namespace) -> None:
    """One training step of the given kind in this (fresh) process; prints JSON."""
    from trainer.policy import add_lora, lora_parameters

    torch.set_num_threads(args.threads)
    policy = build(args)
    if args.memory_worker == "lora":
        add_lora(policy, rank=args.lora_rank, alpha=2 * args.lora_rank)
        parameters = lora_parameters(policy)
    else:
        parameters = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4)
    obs, instructions, tokens = batch(args.train_batch)
    policy.train()
    with torch.no_grad():
        policy.log_prob(obs, instructions, tokens)  # instruction cache and weights are warm
    Path("/proc/self/clear_refs").write_text("5")
    baseline = _rss_kib()
    started = time.perf_counter()
    for _ in range(2):  # the second step holds the optimizer state the first one created
        loss = -policy.log_prob(obs, instructions, tokens).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    seconds = (time.perf_counter() - started) / 2
    print(
        json.dumps(
            {
                "peak_added_mib": (_hiwater_kib() - baseline) / 1024,
                "step_seconds": seconds,
                "trainable_params": sum(p.numel() for p in parameters),
                "total_params": sum(p.numel() for p in policy.parameters()),
            }
        )
    )


def memory(args: argparse.Namespace) -> dict:
    results = {}
    for kind in ("lora", "full"):
        command = [
            sys.executable,
            __file__,
            "--memory-worker",
            kind,
            "--hidden-size",
            str(args.hidden_size),
            "--layers",
            str(args.layers),
            "--heads",
            str(args.heads),
            "--train-batch",
            str(args.train_batch),
            "--lora-rank",
            str(args.lora_rank),
            "--threads",
            str(args.threads),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"memory worker ({kind}) failed:\n{done.stderr[-2000:]}")
        results[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[10:]),
    )
    parser.add_argument("--hidden-size", type=int, default=128, help="model width (default 128, the SFT default)")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers (default 2)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64], help="throughput batch sizes")
    parser.add_argument("--train-batch", type=int, default=64, help="batch of the memory comparison (default 64)")
    parser.add_argument("--lora-rank", type=int, default=8, help="LoRA rank (default 8)")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum timing window per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--memory-worker", choices=["lora", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        memory_worker(args)
        return
    torch.set_num_threads(args.threads)
    report = {
        "config": {"hidden_size": args.hidden_size, "layers": args.layers, "threads": args.threads},
        "throughput": throughput(args),
        "memory": memory(args),
    }
    base = report["throughput"][args.batch_sizes[0]]
    lora, full = report["memory"]["lora"], report["memory"]["full"]
    report["ratios"] = {
        "sample_batch_speedup": {
            size: r["sample_steps_per_s"] / base["sample_steps_per_s"] for size, r in report["throughput"].items()
        },
        "score_batch_speedup": {
            size: r["score_steps_per_s"] / base["score_steps_per_s"] for size, r in report["throughput"].items()
        },
        "score_over_sample": {
            size: r["score_steps_per_s"] / r["sample_steps_per_s"] for size, r in report["throughput"].items()
        },
        "lora_over_full_peak_memory": lora["peak_added_mib"] / full["peak_added_mib"],
        "lora_over_full_step_time": lora["step_seconds"] / full["step_seconds"],
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(
        f"embedded VLA: hidden {args.hidden_size}, {args.layers} layers, {full['total_params']:,} parameters, "
        f"{args.threads} thread(s)"
    )
    print(
        f"{'batch':>6} {'sample steps/s':>15} {'score steps/s':>14} {'sample xB1':>11} {'score xB1':>10} "
        f"{'score/sample':>13}"
    )
    for size, r in report["throughput"].items():
        print(
            f"{size:>6} {r['sample_steps_per_s']:>15.1f} {r['score_steps_per_s']:>14.1f} "
            f"{report['ratios']['sample_batch_speedup'][size]:>11.1f} "
            f"{report['ratios']['score_batch_speedup'][size]:>10.1f} "
            f"{report['ratios']['score_over_sample'][size]:>13.1f}"
        )
    print(
        f"training step, batch {args.train_batch}: LoRA r={args.lora_rank} ({lora['trainable_params']:,} trainable) "
        f"peak +{lora['peak_added_mib']:.1f} MiB, {lora['step_seconds'] * 1e3:.0f} ms; "
        f"full ({full['trainable_params']:,} trainable) "
        f"peak +{full['peak_added_mib']:.1f} MiB, {full['step_seconds'] * 1e3:.0f} ms"
    )
    print(
        f"LoRA / full: peak memory {report['ratios']['lora_over_full_peak_memory']:.2f}x, "
        f"step time {report['ratios']['lora_over_full_step_time']:.2f}x"
    )


if __name__ == "__main__":
    main()
