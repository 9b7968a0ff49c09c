"""Reliability of the trainer commands against hostile input and a hostile machine.

Every numeric flag with NaN, inf, -1 and 0; corrupt checkpoint files; a second writer on a
locked run folder; a killed-and-resumed run's metrics; a file-size limit during a checkpoint;
the same seed with a warm or a cold SFT cache.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from trainer.bounds import DEFAULT_BOUND, Bound, dataclass_problems, namespace_problems
from trainer.cli import eval_main, train_main
from trainer.config import build_parser, config_from_args, validate
from trainer.loop import METRICS_FILE, completed_checkpoints, train
from trainer.policy import make_policy
from trainer.runfolder import LOCK_FILE, MANIFEST_FILE, RunLock, keep_metrics, verify_checkpoint

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[2]
HOSTILE = ["nan", "inf", "-inf", "-1", "0"]


def _exit_code(main, argv):
    try:
        return main(argv)
    except SystemExit as done:  # argparse refuses a non-integer for an int flag
        return done.code


def _numeric_flags(parser):
    return [
        (a.option_strings[0], a.dest, a.type) for a in parser._actions if a.option_strings and a.type in (int, float)
    ]


# ---------------------------------------------------------------------- the declarative bounds
def test_bound_messages_and_the_default_rule():
    assert Bound(low=1).problem("--x", 0) == "--x must be >= 1, got 0"
    assert Bound(low=0, low_open=True).problem("--x", 0.0) == "--x must be > 0, got 0.0"
    assert Bound(low=0, high=1).problem("--x", 2) == "--x must lie in [0, 1], got 2"
    assert Bound(low=0, high=1).problem("--x", float("nan")) == "--x must be a finite number, got nan"
    assert DEFAULT_BOUND.problem("--x", float("-inf")) == "--x must be a finite number, got -inf"
    assert DEFAULT_BOUND.problem("--x", -1) == "--x must be >= 0, got -1"
    assert DEFAULT_BOUND.problem("--x", None) is None and DEFAULT_BOUND.problem("--x", "text") is None

    import dataclasses

    @dataclasses.dataclass
    class Later:  # a field nobody declared a range for still gets checked
        new_weight: float = 1.0
        margin: float = dataclasses.field(default=0.0, metadata={"bounds": Bound(low=None)})
        sizes: list = dataclasses.field(default_factory=lambda: [1, 2])

    assert dataclass_problems(Later(new_weight=float("nan"))) == ["--new-weight must be a finite number, got nan"]
    assert dataclass_problems(Later(margin=-3.0)) == []
    assert dataclass_problems(Later(margin=float("inf"))) == ["--margin must be a finite number, got inf"]
    assert dataclass_problems(Later(sizes=[1, -2])) == ["--sizes must be >= 0, got -2"]
    assert namespace_problems({"k": [0, float("nan")]}) == ["--k must be a finite number, got nan"]


# ---------------------------------------------------------------------- every numeric flag
ZERO_IS_VALID = {
    "seed",
    "eval_episodes",
    "lambda_self",
    "lambda_ext",
    "lambda_success",
    "nll_weight",
    "weight_decay",
    "grad_clip",
    "min_gap",
    "kl_coef",
    "holdout_fraction",
    "rollout_workers",
}
ZERO_IS_REFUSED = {
    "iterations",
    "lora_rank",
    "lora_alpha",
    "states_per_task",
    "samples_per_state",
    "temperature",
    "max_steps",
    "m",
    "beta",
    "lr",
    "epochs",
    "pairs_per_step",
    "chunk_steps",
    "sft_demos",
    "sft_steps",
    "clip_eps",
    "max_rollouts",
}


@pytest.mark.parametrize("value", HOSTILE)
def test_every_numeric_grape_train_flag_refuses_hostile_values_before_writing(tmp_path, value, capsys):
    parser = build_parser()
    flags = _numeric_flags(parser)
    assert {dest for _, dest, _ in flags} >= ZERO_IS_VALID | ZERO_IS_REFUSED
    out = tmp_path / "run"
    for flag, dest, _kind in flags:
        argv = ["--constraints", "constraints/safety.grc", "--output-dir", str(out), flag, value]
        if value == "0":
            problems = validate(config_from_args(build_parser().parse_args(argv)))
            if dest in ZERO_IS_VALID or dest in ZERO_IS_REFUSED:
                assert (problems == []) == (dest in ZERO_IS_VALID), (flag, problems)
            if not problems:
                continue  # accepted (never run here: that would train)
        code = _exit_code(train_main, argv)
        err = capsys.readouterr().err
        assert code == 2, (flag, value, err)
        assert flag in err and "Traceback" not in err, (flag, value, err)
        assert not out.exists(), (flag, value)


def test_a_refused_flag_loads_no_model_and_no_torch(tmp_path):
    """Validation happens before the heavy imports: the process never loads torch."""
    code = (
        "import sys; from trainer.cli import train_main; "
        "code = train_main(['--constraints', 'constraints/safety.grc', '--lr', 'nan', "
        f"'--output-dir', {str(tmp_path / 'r')!r}]); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--lr must be a finite number, got nan" in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", HOSTILE)
def test_every_numeric_grape_sft_flag_refuses_hostile_values_before_writing(tmp_path, value, capsys):
    from trainer.sft import SFT_FIELD_BOUNDS, SFT_RUN_BOUNDS
    from trainer.sft import build_parser as sft_parser
    from trainer.sft import main as sft_main

    zero_ok = {"--expert-noise", "--seed", "--eval-episodes", "--warmup-steps", "--weight-decay"}
    out = tmp_path / "sft"
    flags = _numeric_flags(sft_parser())
    assert len(flags) >= 15
    for flag, dest, _ in flags:
        if value == "0" and not namespace_problems({dest: 0}, {**SFT_FIELD_BOUNDS, **SFT_RUN_BOUNDS}):
            assert flag in zero_ok, flag  # accepted (never run here: that would train)
            continue
        code = _exit_code(sft_main, ["--out", str(out), flag, value])
        err = capsys.readouterr().err
        assert code == 2 and flag in err and "Traceback" not in err, (flag, value, err)
        assert not out.exists()


def test_grape_sft_refuses_every_hostile_flag_value_without_loading_torch(tmp_path):
    """In a fresh process: every numeric flag of grape-sft with nan, inf, -1 and 0 (where 0 is
    out of range) exits 2 naming the flag, nothing is written, and torch is never imported (it
    takes seconds; the refusal must not wait for it). Then the real entry points."""
    out = tmp_path / "sft"
    script = (
        "import contextlib, io, json, sys\n"
        "from trainer.bounds import namespace_problems\n"
        "from trainer.sft import SFT_FIELD_BOUNDS, SFT_RUN_BOUNDS, build_parser, main\n"
        "bounds = {**SFT_FIELD_BOUNDS, **SFT_RUN_BOUNDS}\n"
        "flags = [(a.option_strings[0], a.dest) for a in build_parser()._actions\n"
        "         if a.option_strings and a.type in (int, float)]\n"
        "results = []\n"
        "for flag, dest in flags:\n"
        "    for value in ('nan', 'inf', '-1', '0'):\n"
        "        if value == '0' and not namespace_problems({dest: 0}, bounds):\n"
        "            continue\n"
        "        err = io.StringIO()\n"
        "        with contextlib.redirect_stderr(err):\n"
        "            try:\n"
        f"                code = main(['--out', {str(out)!r}, flag, value])\n"
        "            except SystemExit as done:\n"
        "                code = done.code\n"
        "        results.append([flag, value, code, err.getvalue()])\n"
        "print(json.dumps({'results': results, 'torch': 'torch' in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["results"]) >= 15 * 3 and not report["torch"]
    for flag, value, code, err in report["results"]:
        assert code == 2 and flag in err and "Traceback" not in err, (flag, value, err)
    assert not out.exists()
    for entry in ([sys.executable, "-m", "trainer.sft"], [shutil.which("grape-sft") or "grape-sft"]):
        done = subprocess.run(
            [*entry, "--out", str(out), "--lr", "nan"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2 and "--lr must be a finite number, got nan" in done.stderr, (entry, done.stderr)
        assert not out.exists()


@pytest.mark.parametrize("value", HOSTILE)
def test_every_numeric_grape_eval_flag_refuses_hostile_values_before_writing(tmp_path, value, capsys):
    from trainer.cli import _eval_parser
    from trainer.eval import EvalConfig

    policy = tmp_path / "missing-policy"
    for flag, dest, _ in _numeric_flags(_eval_parser()):
        code = _exit_code(eval_main, ["--policy", str(policy), flag, value])
        err = capsys.readouterr().err
        if value == "0" and not dataclass_problems(EvalConfig(**{dest: 0})):
            assert code == 1 and "not found" in err  # accepted; the missing policy is what stops it
            continue
        assert code == 2 and flag in err and "Traceback" not in err, (flag, value, err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", HOSTILE)
def test_every_numeric_grape_experiment_flag_refuses_hostile_values(tmp_path, value, capsys):
    from trainer.experiment import build_parser as experiment_parser
    from trainer.experiment import main as experiment_main

    sub = next(a for a in experiment_parser()._actions if a.dest == "command")
    out = tmp_path / "exp"
    for flag, dest, _ in _numeric_flags(sub.choices["paper"]):
        # --only names no run: a value that passes validation stops there (a usage error too) instead of
        # running the plan
        code = _exit_code(
            experiment_main, ["paper", "--out", str(out), "--quick", "--only", "no_such_run", flag, value]
        )
        err = capsys.readouterr().err
        if value == "0" and dest in ("seed", "eval_temperature", "nll_weight"):  # seed 0, greedy evaluation, pure TPO
            assert code == 2 and "unknown run 'no_such_run'" in err, (flag, err)  # --only is checked last
            continue
        assert code == 2 and flag in err and "Traceback" not in err, (flag, value, err)
        assert not out.exists()


# ---------------------------------------------------------------------- a tiny run to break
TINY = [
    "--constraints",
    "constraints/safety.grc",
    "--iterations",
    "2",
    "--lora-rank",
    "2",
    "--tasks",
    "stack",
    "--states-per-task",
    "2",
    "--samples-per-state",
    "3",
    "--max-steps",
    "8",
    "--m",
    "1",
    "--min-gap",
    "0",
    "--lr",
    "1e-2",
    "--pairs-per-step",
    "2",
    "--chunk-steps",
    "10",
    "--no-progress",
]


@pytest.fixture(scope="module")
def tiny_policy_dir(tmp_path_factory):
    from trainer.sim.env import STATE_DIM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("policy") / "tiny"
    make_policy(
        "embedded", state_dim=STATE_DIM, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    ).save_pretrained(folder)
    return folder


def _argv(policy_dir, run_dir, *extra):
    return [*TINY, "--policy", str(policy_dir), "--output-dir", str(run_dir), *extra]


def _config(policy_dir, run_dir):
    args = build_parser().parse_args([a for a in _argv(policy_dir, run_dir) if a != "--no-progress"])
    return config_from_args(args)


@pytest.fixture(scope="module")
def whole_run(tiny_policy_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("whole") / "run"
    assert train_main(_argv(tiny_policy_dir, run)) == 0
    # it trained: every iteration logged optimizer steps and changed the adapter
    assert {line.get("iteration") for line in _metric_lines(run) if "loss" in line} == {1.0, 2.0}
    assert not _same_adapters(run, run, 2, other_iteration=1)
    return run


def _adapter(run_dir, iteration):
    from safetensors.torch import load_file

    return load_file(
        str(run_dir / "checkpoints" / f"iter_{iteration:04d}" / "policy" / "adapter" / "adapter_model.safetensors")
    )


def _same_adapters(a, b, iteration, other_iteration=None):
    x, y = _adapter(a, iteration), _adapter(b, iteration if other_iteration is None else other_iteration)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _metric_lines(run_dir):
    """metrics.jsonl without the wall-clock fields (perf/...), which differ between any two runs."""
    lines = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    return [{k: v for k, v in line.items() if not k.startswith("perf/")} for line in lines]


def test_every_checkpoint_carries_a_manifest_that_verifies(whole_run):
    for folder in completed_checkpoints(whole_run).values():
        manifest = (folder / MANIFEST_FILE).read_text().splitlines()
        assert any(line.endswith("  trainer_state.pt") for line in manifest)
        assert any(line.endswith("  policy/model.safetensors") for line in manifest)
        assert verify_checkpoint(folder) is None
    assert any(
        line.endswith("  policy/adapter/adapter_model.safetensors")
        for line in (whole_run / "checkpoints" / "iter_0002" / MANIFEST_FILE).read_text().splitlines()
    )


CORRUPTIONS = {
    "model weights truncated": ("policy/model.safetensors", "truncate"),
    "adapter weights emptied": ("policy/adapter/adapter_model.safetensors", "empty"),
    "trainer state truncated": ("trainer_state.pt", "truncate"),
    "policy config emptied": ("policy/config.json", "empty"),
    "trainer state overwritten": ("trainer_state.pt", "flip"),
}


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # same size, one byte changed
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_corrupt_newest_checkpoint_is_named_and_the_suggested_command_finishes_the_run(
    kind, whole_run, tiny_policy_dir, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(whole_run, run)
    name, how = CORRUPTIONS[kind]
    _damage(run / "checkpoints" / "iter_0002" / name, how)
    argv = _argv(tiny_policy_dir, run)
    assert train_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "checkpoints/iter_0002 is corrupt" in err and name in err and "iter_0001" in err
    suggested = err.split("--resume-from previous: ", 1)[1].split()
    assert suggested[0] == "grape-train" and suggested[-2:] == ["--resume-from", "previous"]
    assert train_main(suggested[1:]) == 0
    capsys.readouterr()
    assert list(completed_checkpoints(run)) == [0, 1, 2]
    assert _same_adapters(run, whole_run, 2)  # the rerun iteration is the one the intact run computed
    assert _metric_lines(run) == _metric_lines(whole_run)
    assert [p.name.split("-")[0] for p in (run / "checkpoints" / ".corrupt").iterdir()] == ["iter_0002"]


def test_grape_eval_verifies_checkpoint_checksums_and_names_a_corrupt_one(whole_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(whole_run, run)
    _damage(run / "checkpoints" / "iter_0002" / "policy" / "adapter" / "adapter_model.safetensors", "flip")
    _damage(run / "checkpoints" / "iter_0001" / "trainer_state.pt", "truncate")  # not part of the policy
    quick = ["--episodes", "1", "--splits", "in_domain", "--max-steps", "4", "--no-progress"]
    out = tmp_path / "eval"
    assert eval_main(["--policy", str(run), "--output-dir", str(out), *quick]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"checkpoint {run / 'checkpoints' / 'iter_0002'} is corrupt" in err
    assert "policy/adapter/adapter_model.safetensors does not match its checksum" in err
    assert not (out / "eval_info.json").exists()  # refused before evaluating anything
    assert eval_main(["--policy", str(run / "checkpoints" / "iter_0002"), "--output-dir", str(out), *quick]) == 1
    assert "iter_0002 is corrupt" in capsys.readouterr().err
    # the message's suggestion evaluates the rest; a damaged optimizer state does not stop that
    suggested = err.split("evaluate the others with ", 1)[1].split()
    assert suggested == ["--iterations", "0", "1"]
    assert eval_main(["--policy", str(run), "--output-dir", str(out), *quick, *suggested]) == 0
    assert sorted(json.loads((out / "eval_info.json").read_text())["iterations"]) == ["0", "1"]


@pytest.mark.parametrize("how", ["empty", "truncate"])
def test_a_corrupt_run_config_is_restored_from_the_checkpoints(how, whole_run, tiny_policy_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(whole_run, run)
    _damage(run / "config.json", how)
    argv = _argv(tiny_policy_dir, run)
    assert train_main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json is corrupt" in err and "--resume-from previous" in err
    assert train_main([*argv, "--iterations", "3", "--resume-from", "previous"]) == 0
    assert json.loads((run / "config.json").read_text())["iterations"] == 3
    assert list(completed_checkpoints(run)) == [0, 1, 2, 3]


# ---------------------------------------------------------------------- one writer per run folder
HOLDER = """
import sys, time
from pathlib import Path
from trainer.runfolder import RunLock
with RunLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_run_on_a_locked_folder_exits_at_once_and_a_dead_owners_lock_is_taken_over(
    whole_run, tiny_policy_dir, tmp_path, capsys
):
    run = tmp_path / "run"
    shutil.copytree(whole_run, run)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        owner = json.loads((run / LOCK_FILE).read_text())
        assert owner["pid"] == holder.pid and owner["host"]
        before = (run / METRICS_FILE).read_bytes()
        assert train_main(_argv(tiny_policy_dir, run, "--iterations", "3")) == 1
        err = capsys.readouterr().err
        assert "in use by another grape-train run" in err and f"pid {holder.pid}" in err and "Traceback" not in err
        assert (run / METRICS_FILE).read_bytes() == before and list(completed_checkpoints(run)) == [0, 1, 2]
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: the file stays, naming a dead pid
        holder.wait()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == holder.pid
    lines = []
    with RunLock(run, echo=lines.append):
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert any("taking over" in line and str(holder.pid) in line for line in lines)
    assert train_main(_argv(tiny_policy_dir, run, "--iterations", "3")) == 0


def test_a_lock_released_by_a_refused_new_run_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "run"
    code = train_main(["--constraints", str(tmp_path / "missing.grc"), "--output-dir", str(out), "--no-progress"])
    assert code == 1 and "file not found" in capsys.readouterr().err
    assert not out.exists()


def test_a_run_that_never_started_does_not_block_a_corrected_command(tiny_policy_dir, tmp_path):
    from trainer.loop import open_run_dir, write_run_config

    config = _config(tiny_policy_dir, tmp_path / "run")
    write_run_config(tmp_path / "run", config)  # what a process killed before its first checkpoint leaves
    corrected = _config(tiny_policy_dir, tmp_path / "run")
    corrected.optim.lr = 0.5
    assert open_run_dir(corrected)[1] == -1


# ---------------------------------------------------------------------- metrics across a kill
class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


def test_metrics_of_a_killed_and_resumed_run_equal_the_uninterrupted_runs(
    whole_run, tiny_policy_dir, tmp_path, monkeypatch
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from trainer import loop

    run = tmp_path / "run"
    real_log = loop.MetricLogger.log

    def log_then_die(self, step, metrics, line=None):
        real_log(self, step, metrics, line)
        if metrics.get("iteration") == 2.0:  # killed mid-iteration 2, one training step logged
            self.writer.flush()
            with open(self.path, "a") as f:
                f.write('{"step": 99, "loss": 0.')  # and a line cut short
            raise Killed

    monkeypatch.setattr(loop.MetricLogger, "log", log_then_die)
    with pytest.raises(Killed):
        train(_config(tiny_policy_dir, run), progress=False, echo=lambda _: None)
    monkeypatch.undo()
    assert list(completed_checkpoints(run)) == [0, 1]
    assert len(_metric_lines_raw(run)) > len(_metric_lines(whole_run)) // 2
    # A real resume is a later process. TensorBoard orders event files by name (timestamp in whole
    # seconds, then pid and a per-process counter compared as text), so a resume within the same
    # second in the same process could sort before the killed writer's file; wait out the second.
    time.sleep(1.1)
    train(_config(tiny_policy_dir, run), progress=False, echo=lambda _: None)
    assert _metric_lines(run) == _metric_lines(whole_run)

    def steps(folder):
        events = EventAccumulator(str(folder / "tb"))
        events.Reload()
        return [e.step for e in events.Scalars("loss")]

    assert steps(run) == steps(whole_run)


def _metric_lines_raw(run_dir):
    return (run_dir / METRICS_FILE).read_bytes().split(b"\n")


def test_metrics_of_a_checkpoint_without_a_line_count_are_cut_by_step(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in (1, 2, 2, 3, 4)) + '{"step": 5')
    keep_metrics(path, None, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 2]
    keep_metrics(path, 1, 0)
    assert path.read_text().count("\n") == 1


# ---------------------------------------------------------------------- a full disk
LIMITED = """
import resource, signal, sys
from trainer.cli import train_main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(train_main(sys.argv[2:]))
"""


def test_a_file_size_limit_during_a_checkpoint_is_one_line_and_the_run_resumes(whole_run, tiny_policy_dir, tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    limit = (tiny_policy_dir / "model.safetensors").stat().st_size // 2  # the first checkpoint's weights do not fit
    done = subprocess.run(
        [sys.executable, "-c", LIMITED, str(limit), *_argv(tiny_policy_dir, run)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in done.stderr
    assert "checkpoints/iter_0000" in err[0] and "[Errno 27] EFBIG" in err[0]
    assert completed_checkpoints(run) == {}
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    assert train_main(_argv(tiny_policy_dir, run)) == 0
    assert _same_adapters(run, whole_run, 2)


# ---------------------------------------------------------------------- seeds
@pytest.mark.slow
def test_one_seed_gives_bit_identical_checkpoints_with_a_cold_or_a_warm_sft_cache(tmp_path):
    """The default SFT policy trained in this process (cold cache) or loaded (warm): same run."""
    argv = [a for a in TINY if a != "--no-progress"] + [
        "--sft-cache",
        str(tmp_path / "sft"),
        "--sft-demos",
        "1",
        "--sft-steps",
        "5",
    ]
    cold = config_from_args(build_parser().parse_args([*argv, "--output-dir", str(tmp_path / "cold")]))
    warm = config_from_args(build_parser().parse_args([*argv, "--output-dir", str(tmp_path / "warm")]))
    train(cold, progress=False, echo=lambda _: None)
    assert any((tmp_path / "sft").iterdir())
    torch.manual_seed(12345)  # whatever else the process did before
    train(warm, progress=False, echo=lambda _: None)
    for iteration in (0, 1, 2):
        a = tmp_path / "cold" / "checkpoints" / f"iter_{iteration:04d}"
        b = tmp_path / "warm" / "checkpoints" / f"iter_{iteration:04d}"
        for name in ("policy/model.safetensors", "policy/adapter/adapter_model.safetensors"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), (iteration, name)
