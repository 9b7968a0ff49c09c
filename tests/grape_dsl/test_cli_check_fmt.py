"""`grapec check` and `grapec fmt` as a user runs them: exit codes, stderr/stdout, files."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import types
from pathlib import Path

import pytest

from grape_dsl import cli

ROOT = Path(__file__).resolve().parents[2]
GRAPEC = Path(sys.executable).parent / "grapec"

CLEAN = """task demo

param lift = 0.1

keypoints {
    ee = gripper.tip
    obj = object.center
}

stage grab {
    subgoal near: dist(ee, obj) <= lift
}
"""
MESSY = (
    "task demo  # keep me\nparam lift=0.10\nkeypoints{ee=gripper.tip;obj=object.center}\n"
    "stage grab{subgoal near:dist(ee,obj)<=(lift)}\n"
)
UNUSED_PARAM = CLEAN.replace("param lift = 0.1\n", "param lift = 0.1\nparam spare = 2\n")


def grapec(*argv: str | Path) -> int:
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit:  # argparse usage errors
        return int(exit.code)


def run_grapec(*argv: str | Path, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(GRAPEC), *map(str, argv)], input=stdin, capture_output=True, cwd=cwd, timeout=120)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "clean.grc").write_text(CLEAN)
    (tmp_path / "messy.grc").write_text(MESSY)
    (tmp_path / "bad.grc").write_text("task demo\nlet x = 1 @ 2\nstage s {\n    subgoal a: x <= 1\n")
    return tmp_path


# ---------------------------------------------------------------------------- check


def test_check_stock_library_from_another_directory(tmp_path: Path) -> None:
    done = run_grapec("check", ROOT / "constraints", cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert b"checked 7 files: 0 error(s), 0 warning(s)" in done.stderr


def test_check_reports_every_syntax_error_with_caret(files: Path, capsys: pytest.CaptureFixture) -> None:
    assert grapec("check", files / "bad.grc") == 1
    err = capsys.readouterr().err
    bad = str(files / "bad.grc")
    assert f"{bad}:2:11: error[GRC101]: unexpected character '@'" in err
    assert "2 | let x = 1 @ 2\n              ^\n" in err
    assert f"{bad}:4:22: error[GRC107]: stage 's' opened at line 3 is not closed" in err
    assert "hint: add `}` to close stage 's'" in err
    assert "Traceback" not in err


def test_check_json(files: Path, capsys: pytest.CaptureFixture) -> None:
    assert grapec("check", "--json", files / "bad.grc", files / "clean.grc") == 1
    out = json.loads(capsys.readouterr().out)
    assert [(d["code"], d["line"], d["column"]) for d in out] == [("GRC101", 2, 11), ("GRC107", 4, 22)]
    assert out[1]["expected"].startswith("a constraint (`subgoal` or `path`)")
    assert out[0]["path"] == str(files / "bad.grc")


def test_check_clean_json_is_an_empty_list(files: Path, capsys: pytest.CaptureFixture) -> None:
    assert grapec("check", "--json", files / "clean.grc") == 0
    assert json.loads(capsys.readouterr().out) == []


def test_warnings_fail_only_with_strict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "warn.grc"
    path.write_text(UNUSED_PARAM)
    assert grapec("check", path) == 0
    assert "warning[GRC903]" in capsys.readouterr().err
    assert grapec("check", "--strict", path) == 1


def test_check_directories_and_globs(files: Path, capsys: pytest.CaptureFixture) -> None:
    (files / "sub").mkdir()
    (files / "sub" / "deep.grc").write_text(CLEAN)
    assert grapec("check", files / "sub") == 0
    assert grapec("check", str(files / "**" / "clean.grc"), str(files / "sub" / "*.grc")) == 0
    assert "checked 2 files" in capsys.readouterr().err


@pytest.mark.parametrize("argument", ["missing.grc", "empty_dir", "nomatch*.grc"])
def test_user_mistakes_in_paths_exit_1_without_traceback(tmp_path: Path, argument: str) -> None:
    (tmp_path / "empty_dir").mkdir()
    done = run_grapec("check", argument, cwd=tmp_path)
    assert done.returncode == 1
    assert f"grapec check: {argument}: ".encode() in done.stderr
    assert b"Traceback" not in done.stderr


def test_undecodable_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "latin1.grc").write_bytes(b"task demo\n# caf\xe9\n")
    assert grapec("check", tmp_path / "latin1.grc") == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'latin1.grc'}:2:6: error[GRC105]" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert grapec() == 2
    assert grapec("check") == 2
    assert grapec("check", "--no-such-flag", "x.grc") == 2
    assert grapec("frobnicate") == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["check", "--help"], ["fmt", "--help"]])
def test_help_has_examples(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert grapec(*argv) == 0
    assert "examples:" in capsys.readouterr().out


def test_a_new_command_needs_only_its_module_and_name(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    module = types.ModuleType("grape_dsl.commands.hello")

    def add_parser(subparsers) -> None:
        subparsers.add_parser("hello").add_argument("who")

    module.add_parser = add_parser
    module.run = lambda args: print(f"hello {args.who}") or 0
    monkeypatch.setitem(sys.modules, "grape_dsl.commands.hello", module)
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "hello"))
    assert grapec("hello", "world") == 0
    assert capsys.readouterr().out == "hello world\n"


def test_every_listed_command_has_its_module() -> None:
    for name in cli.COMMANDS:
        module = cli._command_module(name)
        assert callable(module.add_parser) and callable(module.run)


# ---------------------------------------------------------------------------- fmt


def test_fmt_rewrites_in_place_keeping_mode(files: Path, capsys: pytest.CaptureFixture) -> None:
    messy = files / "messy.grc"
    messy.chmod(0o640)
    assert grapec("fmt", messy, files / "clean.grc") == 0
    assert messy.read_text() == CLEAN.replace("task demo\n", "task demo  # keep me\n")
    assert stat.S_IMODE(messy.stat().st_mode) == 0o640
    assert capsys.readouterr().err == f"reformatted {messy}\n"
    assert sorted(p.name for p in files.iterdir()) == ["bad.grc", "clean.grc", "messy.grc"]  # no temp files


def test_fmt_check_lists_files_and_writes_nothing(files: Path, capsys: pytest.CaptureFixture) -> None:
    assert grapec("fmt", "--check", files / "messy.grc", files / "clean.grc") == 1
    assert capsys.readouterr().err == f"would reformat {files / 'messy.grc'}\n"
    assert (files / "messy.grc").read_text() == MESSY
    assert grapec("fmt", "--check", files / "clean.grc") == 0


def test_fmt_check_stock_library() -> None:
    done = run_grapec("fmt", "--check", ROOT / "constraints")
    assert done.returncode == 0, done.stderr.decode()


def test_fmt_diff(files: Path, capsys: pytest.CaptureFixture) -> None:
    assert grapec("fmt", "--diff", files / "messy.grc") == 0
    out = capsys.readouterr().out
    assert "-param lift=0.10\n" in out and "+param lift = 0.1\n" in out
    assert (files / "messy.grc").read_text() == MESSY


def test_fmt_leaves_a_file_with_errors_alone(files: Path, capsys: pytest.CaptureFixture) -> None:
    before = (files / "bad.grc").read_text()
    assert grapec("fmt", files / "bad.grc", files / "messy.grc") == 1
    assert "error[GRC101]" in capsys.readouterr().err
    assert (files / "bad.grc").read_text() == before
    assert (files / "messy.grc").read_text() != MESSY  # the good file is still formatted


def test_fmt_stdin_to_stdout() -> None:
    done = run_grapec("fmt", "-", stdin=MESSY.encode())
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == CLEAN.replace("task demo\n", "task demo  # keep me\n")
    bad = run_grapec("fmt", "-", stdin=b"task demo\nlet = 1\n")
    assert bad.returncode == 1
    assert b"<stdin>:2:5: error[GRC102]" in bad.stderr
    assert bad.stdout == b""


def test_fmt_stdin_with_other_paths_is_usage(files: Path) -> None:
    assert grapec("fmt", "-", files / "clean.grc") == 2


def test_fmt_through_a_symlink_keeps_the_link(files: Path) -> None:
    link = files / "link.grc"
    link.symlink_to(files / "messy.grc")
    assert grapec("fmt", link) == 0
    assert link.is_symlink()
    assert (files / "messy.grc").read_text() == link.read_text() != MESSY


def test_fmt_writes_lf_for_a_crlf_file(files: Path) -> None:
    crlf = files / "crlf.grc"
    crlf.write_bytes(CLEAN.replace("\n", "\r\n").encode())
    assert grapec("fmt", "--check", crlf) == 1
    assert grapec("fmt", crlf) == 0
    assert crlf.read_bytes() == CLEAN.encode()


def test_check_objective_renders_import_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    objective = tmp_path / "mine.grc"
    objective.write_text('objective mine\n\nimport "nowhere.grc"\n')
    assert grapec("check", objective) == 1
    err = capsys.readouterr().err
    assert f"{objective}:3:1: error[GRC302]" in err
    assert '3 | import "nowhere.grc"' in err


def test_check_json_lists_missing_paths(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert grapec("check", "--json", tmp_path / "missing.grc") == 1
    out = json.loads(capsys.readouterr().out)
    assert [(d["code"], d["path"], d["line"]) for d in out] == [("GRC302", str(tmp_path / "missing.grc"), None)]
