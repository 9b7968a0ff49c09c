"""Config dataclasses as command lines: one flag per field, the field's docstring as its help.

Every trainer command (grape-train, grape-sft, grape-eval, grape-sim's subcommands,
grape-experiment) declares what it takes as a dataclass; this module turns that dataclass into
argparse flags and the parsed flags back into the dataclass. So a flag is defined in exactly
one place, the dataclass field, and its `--help` text is the docstring written under the field
(read from the source, so help and code cannot drift apart).

The rules, for any dataclass (nested ones included):
- a field `samples_per_state` becomes `--samples-per-state`; `field(metadata={"flag": "--policy"})`
  picks another name and `metadata={"aliases": ("--layers",)}` keeps older spellings working;
- a field whose type is itself a dataclass is a group of flags (its fields' names must not clash);
- `Literal[...]` fields take one of their values (`choices`), `bool` fields `--x/--no-x`,
  `list[T]`/`tuple[T, ...]` fields one or more values (`metadata={"repeatable": True}`: the flag
  is given once per value instead), `T | None` fields a T;
- `metadata={"required": True}`: the command stops with a usage error when neither a flag nor
  the `--config` file gives a value; `metadata={"positional": True}`: an argument without a flag.

`--config FILE` replays a saved config: the file's values replace the defaults and flags given
on the command line override the file (argparse is told to leave unset flags out of the
namespace, so "given" and "defaulted" are told apart). Unknown keys in a file are errors that
name the key.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import json
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

from grape_dsl.util.atomic import atomic_write_text
from grape_dsl.util.nearname import did_you_mean

T = TypeVar("T")

CONFIG_FLAG = "--config"


class ConfigFileError(Exception):
    """A --config file that cannot be read or does not fit the command's config (a usage error)."""


# ---------------------------------------------------------------------- reading the dataclass
@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The string literal right after each annotated field in the class body (its docstring)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for stmt, following in zip(body, body[1:]):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(following.value.value.split())
    return docs


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _nested(hint: Any) -> type | None:
    hint = _strip_optional(hint)
    return hint if dataclasses.is_dataclass(hint) and isinstance(hint, type) else None


def literal_values(cls: type, name: str) -> tuple[Any, ...]:
    """The allowed values of a `Literal[...]` field (`T | None` unwrapped), e.g. for another command's choices."""
    hint = _strip_optional(_hints(cls)[name])
    if typing.get_origin(hint) is not Literal:
        raise TypeError(f"{cls.__name__}.{name} is not a Literal field")
    return typing.get_args(hint)


def flag_name(f: dataclasses.Field) -> str:
    """The command-line spelling of a field."""
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _leaves(
    cls: type, prefix: tuple[str, ...] = ()
) -> typing.Iterator[tuple[tuple[str, ...], type, dataclasses.Field]]:
    """(path, owning class, field) of every non-dataclass field, depth first in declaration order."""
    for f in dataclasses.fields(cls):
        inner = _nested(_hints(cls)[f.name])
        if inner is not None:
            yield from _leaves(inner, (*prefix, f.name))
        else:
            yield (*prefix, f.name), cls, f


# ---------------------------------------------------------------------- dataclass -> argparse
def _dest(path: tuple[str, ...]) -> str:
    """The argparse name of a field: its own name (leaf names are unique within one config, as
    flags must be), so code reading the namespace finds `lr`, not `optim.lr`."""
    return path[-1]


def _add_field(group: argparse._ActionsContainer, path: tuple[str, ...], cls: type, f: dataclasses.Field) -> None:
    hint = _strip_optional(_hints(cls)[f.name])
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    doc = field_docs(cls).get(f.name, "")
    default = _default(f)
    shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
    tail = "(required)" if f.metadata.get("required") else "" if "(default" in doc else f"(default: {shown})"
    help_text = f"{doc} {tail}".strip().replace("%", "%%")  # argparse formats help with %
    kwargs: dict[str, Any] = {"dest": _dest(path), "help": help_text}
    if origin is Literal:
        kwargs.update(choices=list(args), type=type(args[0]))
    elif origin in (list, tuple):
        item = args[0]
        if f.metadata.get("repeatable"):
            kwargs.update(action="append", type=item, metavar=f.name.upper())
        else:
            kwargs.update(nargs="+", type=item, metavar=f.name.upper().rstrip("S") or f.name.upper())
    elif hint is bool:
        kwargs.update(action=argparse.BooleanOptionalAction)
    else:
        kwargs.update(type=hint, metavar=f.metadata.get("metavar", f.name.upper()))
    if f.metadata.get("positional"):  # optional on the command line, so that --config may give it
        dest = kwargs.pop("dest")
        kwargs["metavar"] = f.metadata.get("metavar", dest.upper())
        group.add_argument(_dest(path), nargs="?", default=argparse.SUPPRESS, **kwargs)
        return
    group.add_argument(flag_name(f), *f.metadata.get("aliases", ()), default=argparse.SUPPRESS, **kwargs)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, title: str | None = None) -> None:
    """One flag per field of `cls`; the fields of a nested dataclass field form a group named after it.

    Every flag defaults to "not given" (argparse.SUPPRESS): `config_from_args` fills in the rest.
    """
    names = [path[-1] for path, _, _ in _leaves(cls)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TypeError(
            f"{cls.__name__}: field names {repeated} occur in more than one nested config; flags must be unique"
        )

    def add(container: argparse._ActionsContainer, owner: type, prefix: tuple[str, ...]) -> None:
        for f in dataclasses.fields(owner):
            inner = _nested(_hints(owner)[f.name])
            if inner is None:
                _add_field(container, (*prefix, f.name), owner, f)
        for f in dataclasses.fields(owner):
            inner = _nested(_hints(owner)[f.name])
            if inner is not None:
                add(parser.add_argument_group(".".join((*prefix, f.name))), inner, (*prefix, f.name))

    add(parser.add_argument_group(title) if title else parser, cls, ())


def add_config_file_argument(parser: argparse.ArgumentParser, saved_as: str | None) -> None:
    """`--config FILE`; `saved_as` is the file name the command saves its config under (None: it saves none)."""
    where = f"a JSON file, or a folder holding {saved_as}" if saved_as else "a JSON file of these settings"
    parser.add_argument(
        CONFIG_FLAG,
        metavar="FILE",
        default=None,
        help=f"replay a saved config ({where}); flags given as well override its values",
    )


# ---------------------------------------------------------------------- argparse / JSON -> dataclass
def _coerce(hint: Any, value: Any, where: str) -> Any:
    """A JSON value as the field's type (lists become tuples for tuple fields); wrong kinds are errors."""
    if value is None:
        return None
    hint = _strip_optional(hint)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise ConfigFileError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigFileError(f"{where}: expected a list, got {value!r}")
        items = [_coerce(args[0], v, where) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (
        isinstance(value, hint) and (hint is bool or not isinstance(value, bool))
    ):
        raise ConfigFileError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def config_from_dict(
    cls: type[T], data: dict[str, Any], where: str = "config", missing: dict[str, Any] | None = None
) -> T:
    """`cls` from nested plain data (as `dataclasses.asdict` makes it); unknown keys are errors.

    `missing` gives values for leaf fields the data lacks (e.g. what an older version did),
    looked up by field name; otherwise a missing field takes its default.
    """
    if not isinstance(data, dict):
        raise ConfigFileError(f"{where}: expected an object, got {data!r}")
    known = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in known:
            raise ConfigFileError(f"{where}: unknown setting {key!r}{did_you_mean(key, known)}")
    kwargs = {}
    for name in known:
        hint = _hints(cls)[name]
        inner = _nested(hint)
        if inner is not None:
            kwargs[name] = config_from_dict(inner, data.get(name, {}), f"{where}.{name}", missing)
        elif name in data:
            kwargs[name] = _coerce(hint, data[name], f"{where}.{name}")
        elif missing and name in missing:
            kwargs[name] = missing[name]
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def config_from_args(cls: type[T], args: argparse.Namespace, base: dict[str, Any] | None = None) -> T:
    """The flags given on the command line placed over `base` (a saved config) or the defaults."""
    data = json.loads(json.dumps(base or {}))  # a deep copy
    given = vars(args)
    for path, owner, f in _leaves(cls):
        if _dest(path) in given:
            hint = _strip_optional(_hints(owner)[f.name])
            value = given[_dest(path)]
            _set_path(data, path, tuple(value) if typing.get_origin(hint) is tuple else value)
    return config_from_dict(cls, data)


def missing_required(cls: type, config: Any) -> list[str]:
    """Flags marked required whose value is still empty."""
    problems = []
    for path, _, f in _leaves(cls):
        value = config
        for key in path:
            value = getattr(value, key)
        if f.metadata.get("required") and value in (None, "", [], ()):
            problems.append(f.metadata.get("metavar", f.name.upper()) if f.metadata.get("positional") else flag_name(f))
    return problems


def read_config_file(path: str | Path, saved_as: str | None) -> dict[str, Any]:
    """The JSON object in `path`, or in `path/saved_as` when `path` is a folder."""
    file = Path(path)
    if file.is_dir() and saved_as:
        file = file / saved_as
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigFileError(
            f"{CONFIG_FLAG} {path}: no such file" + (f" (looked for {file})" if file != Path(path) else "")
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigFileError(f"{CONFIG_FLAG} {file}: unreadable config ({error})") from None
    if not isinstance(data, dict):
        raise ConfigFileError(f"{CONFIG_FLAG} {file}: expected a JSON object")
    return data


def parse_config(
    parser: argparse.ArgumentParser,
    cls: type[T],
    argv: list[str] | None,
    saved_as: str | None,
    missing: dict[str, Any] | None = None,
) -> tuple[T, argparse.Namespace]:
    """Parse `argv` into `cls` (over a `--config` file's values) and the remaining, non-config flags.

    A bad flag, file or missing required value ends in `parser.error` (exit status 2).
    """
    args = parser.parse_args(argv)
    return config_and_rest(parser, cls, args, saved_as, missing)


def config_and_rest(
    parser: argparse.ArgumentParser,
    cls: type[T],
    args: argparse.Namespace,
    saved_as: str | None,
    missing: dict[str, Any] | None = None,
) -> tuple[T, argparse.Namespace]:
    """`parse_config` for an already parsed namespace (e.g. from a subcommand's parser)."""
    base: dict[str, Any] = {}
    config_file = getattr(args, "config", None)
    try:
        if config_file is not None:
            saved = read_config_file(config_file, saved_as)
            # checked and completed: a file from an older version lacks newer fields, which take
            # the values in `missing` (what that version did) or else their defaults
            base = config_to_dict(config_from_dict(cls, saved, f"{CONFIG_FLAG} {config_file}", missing))
        config = config_from_args(cls, args, base)
    except ConfigFileError as error:
        parser.error(str(error))
    except (TypeError, ValueError) as error:  # a dataclass's own check (__post_init__) refused a value
        parser.error(str(error))
    required = missing_required(cls, config)
    if required:
        parser.error(f"the following arguments are required: {', '.join(required)}")
    dests = {_dest(path) for path, _, _ in _leaves(cls)}
    rest = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in dests and k != "config"})
    return config, rest


def save_config(config: Any, path: Path) -> None:
    """The config a command ran with, as JSON (atomically), for `--config` to replay."""
    atomic_write_text(path, json.dumps(config_to_dict(config), indent=2) + "\n")


def config_to_argv(config: Any, default: Any | None = None) -> list[str]:
    """The flags that reproduce `config` (fields equal to `default`'s omitted)."""
    default = default if default is not None else type(config)()
    argv: list[str] = []
    for path, _, f in _leaves(type(config)):
        value, base = config, default
        for key in path:
            value, base = getattr(value, key), getattr(base, key)
        if value == base:
            continue
        flag = flag_name(f)
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, (list, tuple)) and f.metadata.get("repeatable"):
            for item in value:
                argv.extend([flag, str(item)])
        elif isinstance(value, (list, tuple)):
            argv.extend([flag, *map(str, value)])
        elif value is not None:
            argv.extend([flag, str(value)])
    return argv
