"""The TPO training step as trainer.loop does it, against the GRAPE reference code's way.

ours       the reference policy is the same model with the LoRA adapter disabled; reference
           log-probs are computed once (no grad) for every paired step before training; each
           optimizer step runs ONE forward + backward over the chosen and rejected trajectories
           of all its pairs concatenated (trainer.loop.backward_through_steps).
reference  a second full copy of the model is the reference; every pair runs four separate
           forwards at batch size 1 (policy chosen, policy rejected, reference chosen, reference
           rejected; one trajectory each), gradients accumulated over the optimizer step's pairs.

Both train the same LoRA policy on the same pairs (same trajectories, beta, pairs per step) for
`--epochs` passes (the reference way recomputes reference log-probs on every pass). Each method
runs in its own fresh process, so peak RSS (ru_maxrss) is that method's; the memory figure is the
peak minus the RSS right after the policy is built (which includes the reference model copy for
the reference way: that copy is part of its cost).

    python bench/tpo.py                      # defaults: 32 pairs, 50-100-step trajectories, 2 epochs
    python bench/tpo.py --pairs 16 --steps 60 --pairs-per-step 8
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_method(
    method: str,
    pairs: int,
    steps: int,
    pairs_per_step: int,
    chunk_steps: int,
    seed: int,
    hidden_size: int,
    layers: int,
    epochs: int,
) -> dict:
    from trainer.loop import StepBank, backward_through_steps, preference_loss_fn, step_logps
    from trainer.losses import tpo_loss
    from trainer.policy import add_lora, lora_parameters, make_policy
    from trainer.sim.env import STATE_DIM

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = 2 * pairs
    lengths = rng.integers(steps // 2, steps + 1, size=n)
    total = int(lengths.sum())
    bank = StepBank(
        states=rng.normal(size=(total, STATE_DIM)).astype(np.float32),
        tokens=torch.as_tensor(rng.integers(0, 256, size=(total, 7))),
        instructions=[f"put the red cube {i % 5} in the white box" for i in range(n)],
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    )
    pair_index = np.arange(n).reshape(pairs, 2)
    policy = make_policy(
        "embedded",
        state_dim=STATE_DIM,
        hidden_size=hidden_size,
        num_layers=layers,
        num_heads=max(1, hidden_size // 64),
        intermediate_size=3 * hidden_size,
    )
    reference = copy.deepcopy(policy) if method == "reference" else None
    add_lora(policy, rank=8)
    optimizer = torch.optim.AdamW(lora_parameters(policy), lr=1e-4)
    bank.log_prob(policy, bank.steps_of([0]))  # warm up (instruction encoder, kernels)
    rss_before = _rss_mib()
    beta = 0.1

    started = time.perf_counter()
    policy.train()
    if method == "ours":
        with policy.adapter_disabled():  # once per iteration, whatever the number of epochs
            ref = step_logps(policy, bank, np.arange(total), chunk_steps)
    for _ in range(epochs):
        for b in range(0, pairs, pairs_per_step):
            batch = pair_index[b : b + pairs_per_step]
            optimizer.zero_grad()
            if method == "ours":
                steps_ = bank.steps_of(batch.reshape(-1))
                backward_through_steps(
                    policy, bank, steps_, preference_loss_fn("tpo", batch, lengths, ref[steps_], beta), chunk_steps
                )
            else:
                for chosen, rejected in batch:
                    pc = bank.log_prob(policy, bank.steps_of([chosen])).sum()
                    pr = bank.log_prob(policy, bank.steps_of([rejected])).sum()
                    with torch.no_grad():
                        rc = bank.log_prob(reference, bank.steps_of([chosen])).sum()
                        rr = bank.log_prob(reference, bank.steps_of([rejected])).sum()
                    loss, _ = tpo_loss(pc[None], pr[None], rc[None], rr[None], beta)
                    (loss / len(batch)).backward()
            optimizer.step()
    seconds = time.perf_counter() - started
    return {
        "method": method,
        "pairs": pairs,
        "seconds": seconds,
        "pairs_per_second": epochs * pairs / seconds,
        "peak_rss_mib": _peak_mib(),
        "rss_after_setup_mib": rss_before,
        "peak_over_setup_mib": _peak_mib() - rss_before,
        "total_steps": total,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=32, help="preference pairs in the epoch (default 32)")
    parser.add_argument(
        "--steps",
        type=int,
        default=100,
        help="longest trajectory, steps; lengths drawn from [steps/2, steps] (default 100)",
    )
    parser.add_argument("--pairs-per-step", type=int, default=8, help="pairs per optimizer step (default 8)")
    parser.add_argument(
        "--chunk-steps", type=int, default=2048, help="most steps per forward in ours (default 2048, the trainer's)"
    )
    parser.add_argument("--epochs", type=int, default=2, help="passes over the pairs (default 2, the trainer's)")
    parser.add_argument(
        "--hidden-size", type=int, default=128, help="width of the embedded VLA (default 128, the SFT default)"
    )
    parser.add_argument("--layers", type=int, default=2, help="decoder layers (default 2, the SFT default)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per method, alternating; the median is reported (default 3)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", choices=["ours", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    common = [
        f"--pairs={args.pairs}",
        f"--steps={args.steps}",
        f"--pairs-per-step={args.pairs_per_step}",
        f"--chunk-steps={args.chunk_steps}",
        f"--seed={args.seed}",
        f"--hidden-size={args.hidden_size}",
        f"--layers={args.layers}",
        f"--epochs={args.epochs}",
    ]
    if args.method:
        print(
            json.dumps(
                run_method(
                    args.method,
                    args.pairs,
                    args.steps,
                    args.pairs_per_step,
                    args.chunk_steps,
                    args.seed,
                    args.hidden_size,
                    args.layers,
                    args.epochs,
                )
            )
        )
        return 0
    runs: dict[str, list[dict]] = {"ours": [], "reference": []}
    for _ in range(args.repeats):  # alternate, so load on a shared machine hits both alike
        for method in runs:
            out = subprocess.run(
                [sys.executable, __file__, f"--method={method}", *common], capture_output=True, text=True, check=True
            )
            runs[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
    ours, ref = (sorted(r, key=lambda x: x["pairs_per_second"])[len(r) // 2] for r in runs.values())
    print(
        f"TPO step, {args.epochs} epochs over {args.pairs} pairs, "
        f"trajectories of {args.steps // 2}-{args.steps} steps, {args.pairs_per_step} pairs/step, "
        f"model hidden {args.hidden_size} x {args.layers} layers, 1 thread, median of {args.repeats}"
    )
    print(f"{'method':<10} {'pairs/s':>9} {'seconds':>9} {'peak RSS MiB':>13} {'peak - setup MiB':>17}")
    for r in (ours, ref):
        print(
            f"{r['method']:<10} {r['pairs_per_second']:9.2f} {r['seconds']:9.2f} {r['peak_rss_mib']:13.0f} "
            f"{r['peak_over_setup_mib']:17.0f}"
        )
    print(f"speed-up (pairs/s ours / reference): {ours['pairs_per_second'] / ref['pairs_per_second']:.2f}x")
    print(f"peak RSS ratio (ours / reference): {ours['peak_rss_mib'] / ref['peak_rss_mib']:.2f}")
    print(
        f"RSS after setup (ours / reference; the reference holds a second model copy): "
        f"{ours['rss_after_setup_mib']:.0f} / {ref['rss_after_setup_mib']:.0f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
