"""grape-sft --policy: LoRA SFT of a local HF VLA checkpoint (the tiny Llava the tests build) on
real scripted demonstrations; the result loads in grape-eval / grape-train; bad input exits 2."""

import json
import shutil

import numpy as np
import pytest
import torch

from trainer.cli import eval_main
from trainer.policy import ActionTokenizer, add_lora, load_policy
from trainer.policy.hf_adapter import HFVLAPolicy
from trainer.policy.source import open_policy
from trainer.policy.tiny_hf import build_tiny_llava
from trainer.sft import SFTConfig, load_demonstrations, main, record_demonstrations, train_sft

torch.set_num_threads(1)
TASK = "push_to_target"
STATS = ActionTokenizer(q01=np.array([-0.02] * 3 + [-0.1] * 3 + [-1.0]), q99=np.array([0.02] * 3 + [0.1] * 3 + [1.0]))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(tiny Llava folder, its action statistics file, a store of 2 expert demonstrations)."""
    root = tmp_path_factory.mktemp("sft_hf")
    build_tiny_llava(root / "tiny_llava")
    STATS.save(root / "stats.json")
    record_demonstrations(SFTConfig(tasks=(TASK,), demos_per_task=2), root / "demos", progress=False)
    return root / "tiny_llava", root / "stats.json", root / "demos"


def sft_args(out, folder, stats, demos, *extra, policy=True):
    """A tiny recipe on the 2 demonstrations; with `policy`, fine-tuning the tiny Llava."""
    recipe = ["--out", str(out), "--demos-dir", str(demos), "--tasks", TASK, "--demos", "2", "--batch-size", "16"]
    recipe += ["--lr", "1e-2", "--warmup-steps", "1", "--device", "cpu", "--threads", "1", "-q"]
    source = ["--policy", str(folder), "--action-stats", str(stats), "--lora-rank", "4"] if policy else []
    return [*recipe, *source, *extra]


def mean_logprob(policy, demos, frames, rows=slice(0, 48)):
    tokens = torch.as_tensor(policy.action_tokenizer.tokenize(demos.actions[rows]))
    with torch.no_grad():
        obs = {"image": frames[rows], "state": demos.states[rows]}
        return float(policy.log_prob(obs, list(demos.instructions[rows]), tokens).mean())


def test_hf_checkpoint_is_fine_tuned_and_loads_in_eval_and_train(setup, tmp_path, capsys):
    folder, stats, demos_dir = setup
    out = tmp_path / "run"
    assert main(sft_args(out, folder, stats, demos_dir, "--steps", "12", "--json")) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    policy_dir = out / "policy"
    assert summary["policy"] == str(policy_dir)

    # One plain HF policy folder: merged weights, processor, statistics, the kind; no adapter.
    names = {path.name for path in policy_dir.iterdir()}
    assert {"config.json", "model.safetensors", "action_stats.json", "grape_policy.json"} <= names
    assert "adapter" not in names and "tokenizer.json" in names
    assert json.loads((policy_dir / "grape_policy.json").read_text())["policy_type"] == "hf_vla"
    assert json.loads((out / "sft_config.json").read_text())["base"]["policy"] == str(folder.resolve())
    # The checkpoint keeps the adapter's factors only, not a copy of the frozen base.
    saved = torch.load(out / "checkpoint.pt", weights_only=False)
    assert saved["step"] == 12 and saved["model"] and all("lora_" in name for name in saved["model"])

    # The demonstrations are fitted better than by the base: mean log-prob of 48 demonstrated steps.
    demos = load_demonstrations(demos_dir, [TASK], 2)
    frames = np.load(out / "demo_images_32.npy")
    assert frames.shape == (len(demos.actions), 32, 32, 3)
    base = HFVLAPolicy.from_pretrained(folder, action_stats=stats)
    tuned = load_policy(policy_dir)
    assert isinstance(tuned, HFVLAPolicy) and not tuned.has_adapter
    before, after = mean_logprob(base, demos, frames), mean_logprob(tuned, demos, frames)
    assert after > before + 10.0, f"SFT did not fit: {before:.2f} -> {after:.2f}"

    # grape-train attaches its own adapter to it (--policy-type hf), the fine-tuned policy as the reference.
    opened = open_policy(policy_dir, policy_type="hf")
    add_lora(opened, rank=4)
    assert opened.has_adapter

    # grape-eval runs it for one short episode.
    eval_argv = ["--policy", str(policy_dir), "--policy-type", "hf", "--tasks", TASK, "--splits", "in_domain"]
    eval_argv += ["--episodes", "1", "--max-steps", "4", "--gifs", "0", "--device", "cpu", "--no-progress", "--json"]
    assert eval_main(eval_argv) == 0, capsys.readouterr().err
    info = json.loads(capsys.readouterr().out)
    assert info["iterations"]["0"]["in_domain"][TASK]["episodes"] == 1

    # Resume continues the adapter; another adapter or the embedded recipe is refused.
    assert main(sft_args(out, folder, stats, demos_dir, "--steps", "14", "--resume")) == 0, capsys.readouterr().err
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 14
    assert main(sft_args(out, folder, stats, demos_dir, "--steps", "16", "--resume", "--lora-alpha", "4")) == 1
    error = capsys.readouterr().err
    assert "was trained from" in error and "Traceback" not in error
    assert main(sft_args(out, folder, stats, demos_dir, "--steps", "16", "--resume", policy=False)) == 1
    assert "pass that --policy" in capsys.readouterr().err


def test_a_checkpoint_with_its_own_model_code_keeps_it(setup, tmp_path, capsys):
    """OpenVLA's case: config.json's auto_map names a module in the folder; the output must carry it."""
    from transformers import LlavaForConditionalGeneration

    from trainer.policy.source import HFOptions

    folder, stats, demos_dir = setup
    remote = tmp_path / "remote"
    shutil.copytree(folder, remote)
    # Remote-code checkpoints get no key renaming from transformers: store the module's own names.
    LlavaForConditionalGeneration.from_pretrained(folder).save_pretrained(remote, save_original_format=False)
    (remote / "modeling_tiny_vla.py").write_text(
        "from transformers import LlavaForConditionalGeneration\n\n\n"
        "class TinyVLAForActionPrediction(LlavaForConditionalGeneration):\n    pass\n"
    )
    config = json.loads((remote / "config.json").read_text())
    config["model_type"] = "tiny_vla"
    config["auto_map"] = {"AutoModelForVision2Seq": "modeling_tiny_vla.TinyVLAForActionPrediction"}
    (remote / "config.json").write_text(json.dumps(config))
    out = tmp_path / "run"
    argv = sft_args(out, folder, stats, demos_dir, "--steps", "2")
    argv[argv.index(str(folder))] = str(remote)
    assert main(argv) == 2
    assert "trust_remote_code" in capsys.readouterr().err and not out.exists()
    assert main([*argv, "--trust-remote-code"]) == 0, capsys.readouterr().err
    assert (out / "policy" / "modeling_tiny_vla.py").is_file()
    tuned = open_policy(out / "policy", hf=HFOptions(trust_remote_code=True))
    assert type(tuned.model).__name__ == "TinyVLAForActionPrediction"


def test_an_embedded_policy_folder_is_fine_tuned_too(setup, tmp_path, capsys):
    _, _, demos_dir = setup
    tiny = dict(tasks=(TASK,), demos_per_task=2, steps=3, batch_size=16, hidden_size=32, num_layers=1, num_heads=2)
    first = train_sft(SFTConfig(**tiny, intermediate_size=64), tmp_path / "first", demos_dir=demos_dir, progress=False)
    argv = ["--out", str(tmp_path / "second"), "--demos-dir", str(demos_dir), "--tasks", TASK, "--demos", "2"]
    argv += ["--policy", str(first), "--steps", "4", "--batch-size", "16", "--lr", "1e-2", "--threads", "1", "-q"]
    assert main(argv) == 0, capsys.readouterr().err
    before, after = load_policy(first), load_policy(tmp_path / "second" / "policy")
    assert not after.has_adapter and after.config == before.config
    changed = [name for name, value in after.state_dict().items() if not torch.equal(value, before.state_dict()[name])]
    assert changed  # the merged adapter moved the weights it adapts


def usage_error(capsys, argv, expected, out):
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("grape-sft: error:")]
    assert len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err and not out.exists()


def test_bad_policy_flags_exit_2_with_one_error_and_nothing_written(setup, tmp_path, capsys):
    folder, stats, demos_dir = setup
    out = tmp_path / "out"
    common = ["--out", str(out), "--demos-dir", str(demos_dir), "--tasks", TASK, "--device", "cpu"]
    usage_error(capsys, [*common, "--policy", str(tmp_path / "nowhere")], "policy folder not found", out)
    (tmp_path / "empty").mkdir()
    usage_error(capsys, [*common, "--policy", str(tmp_path / "empty")], "is not a policy folder", out)
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(folder / "config.json", no_weights)
    usage_error(capsys, [*common, "--policy", str(no_weights), "--action-stats", str(stats)], "has no weights", out)
    usage_error(capsys, [*common, "--policy", str(folder)], "no action statistics", out)
    usage_error(capsys, [*common, "--policy", str(folder), "--action-stats", str(tmp_path / "x.json")], "x.json", out)
    usage_error(capsys, [*common, "--policy-type", "hf"], "--policy-type hf needs --policy", out)
    usage_error(capsys, [*common, "--lora-rank", "4"], "--lora-rank: only with --policy", out)
    usage_error(
        capsys,
        [*common, "--policy", str(folder), "--action-stats", str(stats), "--hidden-size", "64"],
        "--hidden-size: describe the embedded policy",
        out,
    )
    if not torch.cuda.is_available():
        usage_error(capsys, [*common, "--policy", str(folder), "--device", "cuda"], "--device cuda", out)


def test_the_default_recipe_is_untouched_by_the_policy_flags():
    """The default SFT policy is cached by its recipe hash; the --policy flags live outside it."""
    from trainer.sft import SFTRunConfig

    run = SFTRunConfig(out="x")
    assert run.recipe.cache_key() == SFTConfig().cache_key() == "9e48cb9e3908"
    assert run.policy.base_policy is None and run.policy.problems(run.recipe) == []
