"""Random incremental edits, garbage included, sent to `grapec lsp` as an editor sends them.

After every edit the server must still answer requests, and the diagnostics it publishes for
that version must be exactly `check_source` on the same text (the same codes, severities,
messages and ranges as `grapec check`).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import pytest_lsp
from lsp_session import ROOT, as_tuples, expected_diagnostics, open_document, position, published, server_config, start
from lsprotocol import types
from pytest_lsp import LanguageClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

START = (ROOT / "constraints" / "tasks" / "pick_place.grc").read_text()
SNIPPETS = [
    "let ",
    "param ",
    "stage ",
    "subgoal ",
    "path ",
    "until ",
    "tag ",
    "over ",
    "weight ",
    "tol ",
    "keypoints {",
    "signals {",
    "{",
    "}",
    "(",
    ")",
    ",",
    ";",
    ":",
    "=",
    "<=",
    ">=",
    "+",
    "-",
    "*",
    "/",
    ".",
    "dist(",
    "norm(",
    "mean(",
    "gripper.",
    "gripper.tip",
    "object.top",
    "contact.table",
    "ee",
    "obj",
    "goal",
    "touching",
    "reach_tol",
    "grasped",
    "t",
    "0.5",
    "1e3",
    "-2",
    "\n",
    "\n\n",
    "    ",
    "# note\n",
    '"',
    '"text"',
    "task ",
    "objective ",
    'import "x.grc"\n',
    "true",
    "not ",
    "and ",
    "or ",
    ".z",
]
GARBAGE = ["\x00", "\x01", "\x7f", "\ufffd", "é", "ß", "中", "😀", "𝔘", "\t", "\f", "\\", "@", "$", "`", "~", "?"]


def random_edit(rng: random.Random, text: str) -> tuple[types.Range, str, str]:
    """(range, new text, the document after the edit) for one random edit."""
    a = rng.randrange(len(text) + 1)
    kind = rng.random()
    if kind < 0.35:
        b = a
    elif kind < 0.7:
        b = min(len(text), a + rng.randrange(1, 40))
    else:
        b = min(len(text), a + rng.randrange(0, 8))
    pieces = rng.choice([0, 1, 1, 2, 3]) if b > a else rng.choice([1, 1, 2, 3])
    new = "".join(rng.choice(GARBAGE if rng.random() < 0.25 else SNIPPETS) for _ in range(pieces))
    if rng.random() < 0.05:  # a position past the end: the server takes the document's end
        far = types.Position(position(text, len(text)).line + 5, 3)
        return types.Range(far, far), new, text + new
    return types.Range(position(text, a), position(text, b)), new, text[:a] + new + text[b:]


async def edit_session(client: LanguageClient, path: Path, steps: int, seed: int) -> None:
    rng = random.Random(seed)
    text = START
    uri = open_document(client, path, text, version=0)
    texts = {0: text}
    for version in range(1, steps + 1):
        rng_range, new, text = random_edit(rng, text)
        texts[version] = text
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(uri=uri, version=version),
                [types.TextDocumentContentChangePartial(range=rng_range, text=new)],
            )
        )
        burst = rng.random() < 0.3  # sometimes edit again before the server has checked
        if burst and version < steps:
            continue
        anywhere = types.Position(rng.randrange(0, 80), rng.randrange(0, 60))
        doc = types.TextDocumentIdentifier(uri=uri)
        await client.text_document_hover_async(types.HoverParams(doc, anywhere))
        await client.text_document_completion_async(types.CompletionParams(doc, anywhere))
        await client.text_document_document_symbol_async(types.DocumentSymbolParams(doc))
        got = await published(client, uri, version)
        assert as_tuples(got) == expected_diagnostics(text, str(path)), f"seed {seed}, version {version}"
    for params in client.published:  # every publication was right for its own version's text
        if params.uri == uri:
            assert as_tuples(list(params.diagnostics)) == expected_diagnostics(texts[params.version], str(path))


@pytest_lsp.fixture(config=server_config(), scope="module")
async def client(lsp_client: LanguageClient):
    await start(lsp_client, ROOT)
    yield
    await lsp_client.shutdown_session()


async def test_random_edits_keep_the_diagnostics_equal_to_grapec_check(client: LanguageClient, tmp_path: Path):
    await edit_session(client, tmp_path / "fuzz.grc", steps=60, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
async def test_many_random_edits(client: LanguageClient, tmp_path: Path, seed: int):
    await edit_session(client, tmp_path / f"fuzz{seed}.grc", steps=400, seed=seed)
