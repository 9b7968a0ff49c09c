"""Check the device path on a GPU: bfloat16 sampling, scoring and one GRAPE iteration on cuda.

Run through bench/gpu_check.sh. For the embedded policy and the HF VLA adapter (a tiny Llava
built locally, no download) it checks that

  1. log-probs of the same tokens on the device in bfloat16 match the CPU float32 ones within
     0.05 + 0.5% of their size (nats per step, a sum over the 7 action tokens),
  2. sampling on the device reports the log-probs its own log_prob computes (same tolerance),
  3. one grape-train iteration runs on the device in bfloat16 and changes the adapter.

Exit 0 when every check passes or when no GPU is visible (nothing to check; the message says
so), 1 when a check fails. `--device cpu` runs the same checks with bfloat16 on the CPU (how
the script itself is tested on machines without a GPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ABSOLUTE_TOLERANCE, RELATIVE_TOLERANCE = 0.05, 0.005
"""A step's bfloat16 log-prob (nats, a sum over the 7 action tokens) may differ from the float32 one
by 0.05 + 0.5% of its size: bfloat16 keeps 8 mantissa bits (a relative error of 0.4% per logit,
which a sharp policy's large logits turn into large log-prob differences). Measured with
bfloat16 on the CPU: at most 0.005 for the embedded policy (log-probs near -39), 0.077 for the
sharp tiny Llava."""
INSTRUCTIONS = ["put the red cube in the box", "stack the cube on the base", "push the block to the target"] * 4


def _report(name: str, ok: bool, detail: str) -> bool:
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


def _compare(name: str, reference: torch.Tensor, candidate: torch.Tensor) -> bool:
    reference, candidate = reference.detach().float().cpu(), candidate.detach().float().cpu()
    diff = (candidate - reference).abs()
    allowed = ABSOLUTE_TOLERANCE + RELATIVE_TOLERANCE * reference.abs()
    return _report(
        name,
        bool((diff <= allowed).all()),
        f"max |difference| {float(diff.max()):.4f} nats per step (allowed there {float(allowed[diff.argmax()]):.3f})",
    )


def _logprob_checks(label: str, cpu_policy, device: torch.device, obs: dict) -> bool:
    from trainer.device import place_policy

    rows = len(obs["state"])
    instructions = INSTRUCTIONS[:rows]
    tokens = cpu_policy.sample(obs, instructions, generator=torch.Generator().manual_seed(0)).tokens
    reference = cpu_policy.log_prob(obs, instructions, tokens)
    policy = place_policy(copy.deepcopy(cpu_policy), device, torch.bfloat16)
    ok = _compare(
        f"{label}: bfloat16 on {device} vs float32 on cpu, log_prob",
        reference,
        policy.log_prob(obs, instructions, tokens),
    )
    uniforms = torch.rand(rows, 7, generator=torch.Generator().manual_seed(1))
    out = policy.sample(obs, instructions, uniforms=uniforms)
    ok &= _compare(
        f"{label}: bfloat16 on {device}, sampled vs recomputed",
        out.logprobs,
        policy.log_prob(obs, instructions, out.tokens),
    )
    ok &= _report(f"{label}: log-prob dtype", out.logprobs.dtype == torch.float32, str(out.logprobs.dtype))
    return ok


def _adapter_changed(run: Path) -> bool:
    from safetensors.torch import load_file

    def adapter(k: int) -> dict:
        return load_file(
            str(run / "checkpoints" / f"iter_{k:04d}" / "policy" / "adapter" / "adapter_model.safetensors")
        )

    before, after = adapter(0), adapter(1)
    return any(not torch.equal(before[name], after[name]) for name in after)


def _one_iteration(label: str, policy_dir: Path, run: Path, device: str, extra: list[str]) -> bool:
    from trainer.cli import train_main

    argv = [
        "--constraints",
        str(REPO / "constraints" / "safety.grc"),
        "--policy",
        str(policy_dir),
        "--tasks",
        "stack",
        "--states-per-task",
        "2",
        "--samples-per-state",
        "3",
        "--m",
        "1",
        "--min-gap",
        "0",
        "--max-steps",
        "6",
        "--iterations",
        "1",
        "--lr",
        "0.05",
        "--output-dir",
        str(run),
        "--device",
        device,
        "--dtype",
        "bfloat16",
        "--no-progress",
        "--json",
        *extra,
    ]
    started = time.perf_counter()
    code = train_main(argv)
    seconds = time.perf_counter() - started
    ok = code == 0 and _adapter_changed(run)
    return _report(f"{label}: one grape-train iteration on {device} in bfloat16", ok, f"exit {code}, {seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device", default="cuda", help="device to check (default: cuda; cpu checks the script itself)"
    )
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        print(
            f"gpu_check: nothing to check on this machine ({why}; torch {torch.__version__}). "
            "Run bench/gpu_check.sh on a machine with a GPU."
        )
        return 0
    from trainer.device import resolve_device
    from trainer.policy import ActionTokenizer, add_lora, make_policy
    from trainer.policy.hf_adapter import HFVLAPolicy
    from trainer.policy.tiny_hf import build_tiny_llava
    from trainer.sim.env import STATE_DIM

    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_check on {device} ({name}), torch {torch.__version__}", flush=True)
    torch.set_num_threads(1)
    ok = True
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as scratch:
        root = Path(scratch)
        # embedded policy (state only), with a non-zero LoRA adapter so the float32 factors matter
        torch.manual_seed(0)
        embedded = make_policy(
            "embedded", state_dim=STATE_DIM, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128
        )
        embedded.set_state_statistics(rng.normal(0.0, 0.3, size=(256, STATE_DIM)))
        embedded.save_pretrained(root / "embedded")
        add_lora(embedded, rank=4)
        with torch.no_grad():
            for pname, p in embedded.named_parameters():
                if "lora_B" in pname:
                    p.normal_(0, 0.05)
        obs = {"state": rng.normal(0.0, 0.3, size=(12, STATE_DIM)).astype(np.float32)}
        ok &= _logprob_checks("embedded", embedded, device, obs)
        ok &= _one_iteration("embedded", root / "embedded", root / "run_embedded", args.device, [])

        # HF VLA adapter on the tiny Llava
        build_tiny_llava(root / "llava")
        stats = ActionTokenizer(
            q01=np.array([-0.02] * 3 + [-0.1] * 3 + [-1.0]), q99=np.array([0.02] * 3 + [0.1] * 3 + [1.0])
        )
        stats.save(root / "stats.json")
        hf = HFVLAPolicy.from_pretrained(root / "llava", action_stats=root / "stats.json")
        add_lora(hf, rank=4)
        images = {"state": obs["state"][:6], "image": rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)}
        ok &= _logprob_checks("hf adapter", hf, device, images)
        ok &= _one_iteration(
            "hf adapter", root / "llava", root / "run_hf", args.device, ["--action-stats", str(root / "stats.json")]
        )
    print(
        json.dumps(
            {
                "device": str(device),
                "passed": bool(ok),
                "absolute_tolerance": ABSOLUTE_TOLERANCE,
                "relative_tolerance": RELATIVE_TOLERANCE,
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
