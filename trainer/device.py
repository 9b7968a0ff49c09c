"""Where a policy runs and in which precision: `--device auto|cpu|cuda`, `--dtype float32|bfloat16`.

`resolve_device` and `resolve_dtype` turn the flags into torch objects, or raise `DeviceError`
with one line naming the problem (the CLIs print it and exit 2). `place_policy` moves a policy
there: its weights take the dtype, except LoRA factors, which stay float32 (they are what the
optimizer updates; bfloat16 steps of size lr * grad would mostly round away). Log-probs and
losses are float32 whatever the weights' dtype: the policies cast logits to float32 before the
softmax, and the loss functions only ever see those log-probs.
"""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class DeviceError(ValueError):
    """A device or dtype the machine cannot provide."""


def resolve_device(name: str) -> torch.device:
    """ "auto": cuda when a GPU is usable, else cpu; "cuda" and "cuda:N" need that GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            built = (
                "torch was built without CUDA"
                if torch.version.cuda is None
                else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)"
            )
            raise DeviceError(f"--device {name}: {built}; use --device cpu (or auto)")
        index = 0 if name == "cuda" else _gpu_index(name)
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA GPU(s) visible "
                f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
            )
        return torch.device("cuda", index)
    raise DeviceError(f"--device {name!r}: expected one of {', '.join(DEVICES)} (or cuda:N)")


def _gpu_index(name: str) -> int:
    suffix = name[len("cuda:") :]
    if not suffix.isdigit():
        raise DeviceError(f"--device {name!r}: expected cuda:N with N a GPU number")
    return int(suffix)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The weights' dtype; bfloat16 on a GPU needs one that computes in it (Ampere or newer)."""
    if name not in DTYPES:
        raise DeviceError(f"--dtype {name!r}: expected one of {', '.join(DTYPES)}")
    dtype = DTYPES[name]
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(
            f"--dtype bfloat16: the GPU {torch.cuda.get_device_name(device)} does not support bfloat16; "
            "use --dtype float32"
        )
    return dtype


def resolve(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    resolved = resolve_device(device)
    return resolved, resolve_dtype(dtype, resolved)


def place_policy(policy: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move `policy` to `device` and its weights to `dtype`, in place.

    LoRA factors stay float32 (the optimizer's steps would round away in bfloat16), and so do
    buffers: state normalisation statistics and rotary frequencies are not weights, and
    rounding them would shift every input rather than add noise.
    """
    policy.to(device=device)
    for name, parameter in policy.named_parameters():
        wanted = torch.float32 if "lora_" in name else dtype
        if parameter.is_floating_point() and parameter.dtype != wanted:
            parameter.data = parameter.data.to(wanted)
    return policy


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)
