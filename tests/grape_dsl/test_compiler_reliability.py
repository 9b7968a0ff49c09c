"""Pathological input as a hostile user or model would write it: every file checks and compiles
or ends in one diagnostic, never a traceback, never a hang (each subprocess has a timeout).

Long let chains, delta chains, many stages, deep import chains, devices, pipes, directories,
NUL bytes, CR-only line endings, lying .npz headers, and a server that trickles its answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from chat_server import chat_server  # noqa: F401  (a fixture: the real scripted server)

from grape_dsl.api import check_file, check_source, load_task
from grape_dsl.diagnostics import GrcError
from grape_dsl.ir.blocks import MAX_BLOCK_VALUES
from grape_dsl.ir.lower import MAX_STAGES

ROOT = Path(__file__).resolve().parents[2]
STOCK_TASK = ROOT / "constraints" / "tasks" / "pick_place.grc"
HEADER = "task big\nsignals { x = x }\n"
# A hang or a runaway compile fails here; the budgets keep real runs to a few seconds.
SUBPROCESS_TIMEOUT_S = 120


def grapec(*args: str, cwd: Path, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRAPE_DSL_CACHE": str(cwd / "cache"), **(env_extra or {})}
    done = subprocess.run(
        [sys.executable, "-m", "grape_dsl.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def let_chain(n: int, step: str = "a{prev} + 1") -> str:
    lets = "".join(f"let a{i} = {step.format(prev=i - 1)}\n" for i in range(1, n))
    return HEADER + "let a0 = x\n" + lets + f"stage s {{ subgoal c: a{n - 1} <= 1 }}\n"


def delta_chain(n: int) -> str:
    lets = "".join(f"let d{i} = delta(d{i - 1})\n" for i in range(1, n))
    return HEADER + "let d0 = x\n" + lets + f"stage s {{ path c: d{n - 1} <= 1 }}\n"


def empty_stages(n: int) -> str:
    stages = "".join(f"stage s{i} until t > {i} {{}}\n" for i in range(n - 1))
    return HEADER + stages + "stage last { subgoal c: x <= 1 }\n"


@pytest.mark.parametrize(
    "name, text, budget_error",
    [
        ("lets3000", let_chain(3000), True),
        ("tree60", let_chain(60, "a{prev} * a{prev} + a{prev}"), False),  # a DAG: 3 operations a let
        ("delta200", delta_chain(200), True),
        ("stages6000", empty_stages(6000), True),
    ],
)
def test_pathological_programs_compile_or_stop_with_a_budget_diagnostic(
    tmp_path: Path,
    name: str,
    text: str,
    budget_error: bool,
) -> None:
    path = tmp_path / f"{name}.grc"
    path.write_text(text)
    assert grapec("check", path.name, cwd=tmp_path).returncode == 0
    done = grapec("compile", path.name, cwd=tmp_path)
    if budget_error:
        assert done.returncode == 1 and "GRC402" in done.stderr
        assert f"{name}.grc:" in done.stderr  # with the line:col of what went over
        emitted = grapec("compile", path.name, "--emit", "python", cwd=tmp_path)
        assert emitted.returncode == 1 and "GRC402" in emitted.stderr
    else:
        assert done.returncode == 0, done.stderr
    assert grapec("compile", path.name, "--emit", "ir", cwd=tmp_path).returncode == int(budget_error)
    # lowering, the IR listing and the cache key never recurse through lets or expand them as
    # a tree, whatever the budgets then say
    from grape_dsl.ir.lower import dump, fingerprint, lower

    if name == "stages6000":
        return  # refused before lowering, by count
    program = lower(load_task(str(path)))
    assert len(dump(program)) < 200 * len(text) and len(fingerprint(program)) < 200 * len(text)


def test_budget_diagnostics_point_at_the_cause(tmp_path: Path) -> None:
    path = tmp_path / "stages.grc"
    path.write_text(empty_stages(MAX_STAGES + 5))
    from grape_dsl.compiler import check_budgets

    with pytest.raises(GrcError) as err:
        check_budgets(load_task(str(path)))
    (diag,) = err.value.diagnostics
    assert diag.code == "GRC402" and "stages" in diag.message
    assert diag.span.line == 3 + MAX_STAGES  # the first stage over the limit
    path.write_text(let_chain(MAX_BLOCK_VALUES + 10))
    with pytest.raises(GrcError, match="GRC402|operations"):
        check_budgets(load_task(str(path)))


def test_cr_only_line_endings_check_like_lf(tmp_path: Path) -> None:
    text = STOCK_TASK.read_text()
    for name, ending in (("cr", "\r"), ("crlf", "\r\n")):
        path = tmp_path / f"{name}.grc"
        path.write_bytes(text.replace("\n", ending).encode())
        diagnostics = check_file(str(path))
        assert not [d for d in diagnostics if d.severity == "error"], diagnostics
    broken = tmp_path / "broken.grc"
    broken.write_bytes(text.replace("stage grasp", "stage grasp grasp", 1).replace("\n", "\r").encode())
    (error,) = [d for d in check_file(str(broken)) if d.severity == "error"]
    assert error.span.line > 1  # lines counted at each CR


def test_negative_unreached_is_grc224_with_its_position(tmp_path: Path) -> None:
    path = tmp_path / "u.grc"
    path.write_text(HEADER + "unreached -1\nstage s { subgoal c: x >= 1 }\n")
    done = grapec("compile", path.name, cwd=tmp_path)
    assert done.returncode == 1
    assert "u.grc:3:1: error[GRC224]" in done.stderr and "GRC308" not in done.stderr


def _objective_importing(path: Path, target: str) -> None:
    path.write_text(f'objective o\nimport "{target}"\n')


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need POSIX")
def test_import_targets_that_are_not_files_are_diagnostics(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.grc")
    (tmp_path / "folder.grc").mkdir()
    cases = {"pipe.grc": "not a regular file", "folder.grc": "directory", "/dev/zero": "not a regular file"}
    for target, words in cases.items():
        objective = tmp_path / "o.grc"
        _objective_importing(objective, target)
        errors = [d for d in check_file(str(objective)) if d.severity == "error"]
        assert len(errors) == 1 and errors[0].code == "GRC302" and words in errors[0].message
        assert errors[0].span is not None and errors[0].span.line == 2
        done = grapec("check", "o.grc", cwd=tmp_path)
        assert done.returncode == 1 and words in done.stderr
    # the task itself given as a device or a pipe
    for target in ("/dev/zero", str(tmp_path / "pipe.grc")):
        assert grapec("compile", target, cwd=tmp_path).returncode == 1


def test_nul_bytes_in_import_paths_are_diagnostics(tmp_path: Path) -> None:
    diagnostics = check_source('objective o\nimport "a\0b.grc"\n', str(tmp_path / "o.grc"))
    errors = [d for d in diagnostics if d.severity == "error"]
    assert errors and all(d.code.startswith("GRC") for d in errors)
    with pytest.raises(GrcError):
        load_task(str(tmp_path / "t\0.grc"))


def test_files_over_the_size_limit_are_not_read_whole(tmp_path: Path) -> None:
    big = tmp_path / "big.grc"
    with open(big, "wb") as out:
        out.truncate(50 * 2**20)  # 50 MiB of NUL bytes, sparse
    (error,) = check_file(str(big))
    assert error.code == "GRC302" and "too large" in error.message


@pytest.mark.parametrize("depth, ok", [(10, True), (60, False)])
def test_import_chains_deeper_than_the_limit_are_one_diagnostic(tmp_path: Path, depth: int, ok: bool) -> None:
    for i in range(depth):
        body = f'import "o{i + 1}.grc"\n' if i + 1 < depth else "unreached 2\n"
        (tmp_path / f"o{i}.grc").write_text(f"objective o{i}\n{body}")
    errors = [d for d in check_file(str(tmp_path / "o0.grc")) if d.severity == "error"]
    assert (errors == []) == ok
    if not ok:
        assert [d.code for d in errors] == ["GRC309"]


def _npz_with_header_only(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """An .npz whose .npy members claim `shapes` but hold (almost) no data."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, shape in shapes.items():
            dtype = (
                np.dtype("<U16") if name.endswith("names") else np.dtype(np.int64 if name == "lengths" else np.float32)
            )
            header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array_header_1_0(member, header)


@pytest.mark.parametrize(
    "shapes",
    [
        {"keypoints": (100_000, 10_000, 8, 3)},
        {"lengths": (10**10,)},
    ],
)
def test_score_refuses_npz_headers_bigger_than_their_data(tmp_path: Path, shapes: dict) -> None:
    full = {
        "keypoints": (1, 1, 1, 3),
        "keypoint_names": (1,),
        "signals": (1, 1, 1),
        "signal_names": (1,),
        "lengths": (1,),
        **shapes,
    }
    _npz_with_header_only(tmp_path / "batch.npz", full)
    done = grapec("score", str(STOCK_TASK), "--batch", "batch.npz", cwd=tmp_path)
    assert done.returncode == 1
    assert "claims shape" in done.stderr and "MemoryError" not in done.stderr


def test_generate_request_deadline_against_a_trickling_server(chat_server, tmp_path: Path) -> None:
    """A real server on 127.0.0.1 sending its answer one byte every 0.3 s: each attempt ends at
    --timeout, however often bytes arrive."""
    from grape_dsl.llm import ChatClient, LLMError, resolve_endpoint

    chat_server.trickle(0.3)
    chat_server.trickle(0.3)
    endpoint = resolve_endpoint(chat_server.url, "k", "m", timeout=1.0, retries=1, backoff=0.1)
    client = ChatClient(endpoint)
    started = time.monotonic()
    with pytest.raises(LLMError, match="timed out after 1 s"):
        client.complete([{"role": "user", "content": "hi"}])
    elapsed = time.monotonic() - started
    # two attempts of 1 s and 0.1 s of backoff; a per-read timeout alone would take ~80 s
    assert elapsed < 20, elapsed


def test_audit_log_is_bounded_whatever_the_answer_size(tmp_path: Path) -> None:
    from grape_dsl.llm import MAX_AUDIT_TEXT_CHARS, AuditLog

    audit = AuditLog(tmp_path / "out.grc.generate.jsonl")
    huge = "x" * (20 * 2**20)
    for round_number in range(3):
        audit.add({"event": "answer", "round": round_number, "content": huge, "body": huge})
        audit.add({"event": "check", "round": round_number, "grc": huge})
    size = audit.path.stat().st_size
    assert size < 10 * MAX_AUDIT_TEXT_CHARS
    assert "sha256" in audit.path.read_text()


@pytest.mark.slow
@pytest.mark.parametrize("n", [10, 100, 400, 1000, 2000, 3000])
def test_fuzz_let_and_delta_chain_lengths(tmp_path: Path, n: int) -> None:
    for name, text in (("lets", let_chain(n)), ("deltas", delta_chain(min(n, 400))), ("stages", empty_stages(n))):
        path = tmp_path / f"{name}{n}.grc"
        path.write_text(text)
        done = grapec("compile", path.name, cwd=tmp_path)
        assert done.returncode in (0, 1)
        assert done.returncode == 0 or "GRC402" in done.stderr, done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["\n", "\r", "\r\n", "\n\r"])
def test_fuzz_line_endings_of_every_stock_file(tmp_path: Path, ending: str) -> None:
    for source in sorted((ROOT / "constraints").rglob("*.grc")):
        path = tmp_path / source.name
        path.write_bytes(source.read_text().replace("\n", ending).encode())
        done = grapec("check", path.name, cwd=tmp_path)
        assert done.returncode in (0, 1)
