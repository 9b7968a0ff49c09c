"""`grapec lsp` driven over stdio by pytest-lsp, as an editor drives it."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_lsp
from lsp_session import (
    ROOT,
    apply_edits,
    as_tuples,
    expected_diagnostics,
    open_document,
    position,
    published,
    server_config,
    start,
)
from lsprotocol import types
from pytest_lsp import LanguageClient

from grape_dsl.fmt import format_source

pytestmark = pytest.mark.asyncio(loop_scope="module")

PICK_PLACE = (ROOT / "constraints" / "tasks" / "pick_place.grc").read_text()


@pytest_lsp.fixture(config=server_config(), scope="module")
async def client(lsp_client: LanguageClient):
    await start(lsp_client, ROOT)
    yield
    await lsp_client.shutdown_session()


def at(text: str, needle: str, delta: int = 0, nth: int = 0) -> types.Position:
    """The position of the `nth` occurrence of `needle` (plus `delta` characters)."""
    start = -1
    for _ in range(nth + 1):
        start = text.index(needle, start + 1)
    return position(text, start + delta)


def doc_id(uri: str) -> types.TextDocumentIdentifier:
    return types.TextDocumentIdentifier(uri=uri)


async def test_misspelled_keypoint_gets_the_checkers_diagnostic(client: LanguageClient, tmp_path: Path):
    text = PICK_PLACE.replace("ee = gripper.tip", "ee = gripper.tipp").replace("dist(ee, obj)", "dist(eee, obj)")
    path = tmp_path / "typo.grc"
    uri = open_document(client, path, text)
    got = await published(client, uri, 1)
    by_code = {d.code: d for d in got}
    source = by_code["GRC225"]  # the environment of task pick_place has no `gripper.tipp`
    assert source.severity == types.DiagnosticSeverity.Error
    assert "gripper.tipp" in source.message and "did you mean 'gripper.tip'" in source.message
    assert (source.range.start, source.range.end) == (at(text, "gripper.tipp"), at(text, "gripper.tipp", 12))
    name = by_code["GRC201"]  # `eee` is no declared name
    assert (name.range.start, name.range.end) == (at(text, "eee"), at(text, "eee", 3))
    assert as_tuples(got) == expected_diagnostics(text, str(path))  # exactly what `grapec check` says


async def test_warnings_stay_warnings_and_syntax_errors_are_reported(client: LanguageClient, tmp_path: Path):
    text = PICK_PLACE.replace("let touching = table_hit + other_hit", "let touching = table_hit +\nlet spare = 1")
    uri = open_document(client, tmp_path / "broken.grc", text)
    got = await published(client, uri, 1)
    assert got and all(d.code.startswith("GRC1") for d in got)
    assert as_tuples(got) == expected_diagnostics(text, str(tmp_path / "broken.grc"))
    unused = PICK_PLACE.replace("param horizon = 60", "param horizon = 60\nparam unused = 1")
    uri = open_document(client, tmp_path / "unused.grc", unused)
    got = await published(client, uri, 1)
    assert [(d.code, d.severity) for d in got] == [("GRC903", types.DiagnosticSeverity.Warning)]


async def test_completion_after_gripper_dot(client: LanguageClient, tmp_path: Path):
    text = PICK_PLACE.replace("ee = gripper.tip\n", "ee = gripper.\n")
    uri = open_document(client, tmp_path / "complete.grc", text)
    where = at(text, "gripper.", 8)
    result = await client.text_document_completion_async(types.CompletionParams(doc_id(uri), where))
    items = {item.label: item for item in result.items}
    assert {"gripper.tip", "gripper.opening"} <= set(items)
    tip, opening = items["gripper.tip"], items["gripper.opening"]
    assert tip.sort_text < opening.sort_text  # in keypoints { }, keypoints come first
    assert "signal" in opening.detail
    assert tip.text_edit.range.start == at(text, "gripper.")  # replaces the whole dotted prefix
    assert apply_edits(text, [tip.text_edit]) == PICK_PLACE


async def test_completion_in_expressions_offers_names_builtins_and_components(client: LanguageClient, tmp_path: Path):
    text = PICK_PLACE.replace("subgoal reach: dist(ee, obj)", "subgoal reach: dist(e, obj)")
    uri = open_document(client, tmp_path / "expr.grc", text)
    result = await client.text_document_completion_async(types.CompletionParams(doc_id(uri), at(text, "dist(e,", 6)))
    labels = {item.label: item for item in result.items}
    assert {"ee", "obj", "touching", "reach_tol", "t", "dist", "norm", "mean"} <= set(labels)
    assert labels["dist"].detail == "dist(vec3, vec3) -> scalar"
    assert labels["reach_tol"].detail == "param = 0.03"
    result = await client.text_document_completion_async(
        types.CompletionParams(doc_id(uri), at(text, "obj_bottom.z", 11))
    )
    assert {item.label for item in result.items} == {"x", "y", "z"}
    result = await client.text_document_completion_async(types.CompletionParams(doc_id(uri), at(text, "tag grasp", 4)))
    assert {"grasp", "collision", "path", "task"} <= {item.label for item in result.items}


async def test_hover_a_builtin_a_let_and_a_source(client: LanguageClient, tmp_path: Path):
    uri = open_document(client, tmp_path / "hover.grc", PICK_PLACE)
    await published(client, uri, 1)
    hover = await client.text_document_hover_async(types.HoverParams(doc_id(uri), at(PICK_PLACE, "dist(ee", 2)))
    assert "dist(vec3, vec3) -> scalar" in hover.contents.value and "Euclidean distance" in hover.contents.value
    hover = await client.text_document_hover_async(types.HoverParams(doc_id(uri), at(PICK_PLACE, "touching <= 0", 3)))
    assert "let touching: scalar = table_hit + other_hit" in hover.contents.value
    hover = await client.text_document_hover_async(
        types.HoverParams(doc_id(uri), at(PICK_PLACE, "reach_tol weight", 1))
    )
    assert "param reach_tol: scalar = 0.03" in hover.contents.value
    hover = await client.text_document_hover_async(types.HoverParams(doc_id(uri), at(PICK_PLACE, "container.top", 11)))
    assert "centre of the container's opening" in hover.contents.value


async def test_definition_and_references_of_a_let(client: LanguageClient, tmp_path: Path):
    uri = open_document(client, tmp_path / "nav.grc", PICK_PLACE)
    use = at(PICK_PLACE, "touching <= 0", 2, nth=1)
    found = await client.text_document_definition_async(types.DefinitionParams(doc_id(uri), use))
    assert len(found) == 1 and found[0].uri == uri
    assert found[0].range.start == at(PICK_PLACE, "touching = table_hit")
    refs = await client.text_document_references_async(
        types.ReferenceParams(
            text_document=doc_id(uri), position=use, context=types.ReferenceContext(include_declaration=True)
        )
    )
    assert len(refs) == 1 + PICK_PLACE.count("touching <= 0")


async def test_definition_across_an_objectives_imports(client: LanguageClient, tmp_path: Path):
    (tmp_path / "base.grc").write_text("objective base\nparam horizon = 80\n")
    text = 'objective quick\nimport "base.grc"\nparam horizon = 40\n'
    uri = open_document(client, tmp_path / "quick.grc", text)
    found = await client.text_document_definition_async(types.DefinitionParams(doc_id(uri), at(text, "horizon", 2)))
    assert sorted(loc.uri for loc in found) == sorted([uri, (tmp_path / "base.grc").as_uri()])


async def test_format(client: LanguageClient, tmp_path: Path):
    messy = "task t   # a comment\nparam   a=1\nkeypoints{ee=gripper.tip}\nstage s{subgoal g:dist(ee,ee)<=a}\n"
    uri = open_document(client, tmp_path / "messy.grc", messy)
    edits = await client.text_document_formatting_async(
        types.DocumentFormattingParams(doc_id(uri), types.FormattingOptions(tab_size=4, insert_spaces=True))
    )
    assert edits and apply_edits(messy, edits) == format_source(messy)
    broken = "task t\nstage s {\n"
    uri = open_document(client, tmp_path / "unformattable.grc", broken)
    edits = await client.text_document_formatting_async(
        types.DocumentFormattingParams(doc_id(uri), types.FormattingOptions(tab_size=4, insert_spaces=True))
    )
    assert not edits  # syntax errors: nothing to do, the diagnostics say why


async def test_rename_a_let_and_a_param(client: LanguageClient, tmp_path: Path):
    uri = open_document(client, tmp_path / "rename.grc", PICK_PLACE)
    edit = await client.text_document_rename_async(
        types.RenameParams(doc_id(uri), at(PICK_PLACE, "touching <= 0", 1), "contacts")
    )
    renamed = apply_edits(PICK_PLACE, edit.changes[uri])
    assert renamed == PICK_PLACE.replace("touching", "contacts")
    edit = await client.text_document_rename_async(
        types.RenameParams(doc_id(uri), at(PICK_PLACE, "param near", 6), "close")
    )
    assert apply_edits(PICK_PLACE, edit.changes[uri]) == PICK_PLACE.replace("near =", "close =").replace(
        "<= near", "<= close"
    )
    with pytest.raises(Exception, match="reserved"):
        await client.text_document_rename_async(
            types.RenameParams(doc_id(uri), at(PICK_PLACE, "param near", 6), "dist")
        )


async def test_document_symbols_list_stages_and_constraints(client: LanguageClient, tmp_path: Path):
    uri = open_document(client, tmp_path / "outline.grc", PICK_PLACE)
    symbols = await client.text_document_document_symbol_async(types.DocumentSymbolParams(doc_id(uri)))
    stages = [s for s in symbols if s.kind == types.SymbolKind.Class]
    assert [s.name for s in stages] == ["grasp", "transport", "place"]
    assert [c.name for c in stages[0].children] == ["reach", "bump", "upright", "travel"]


async def test_bad_input_never_kills_the_server(client: LanguageClient, tmp_path: Path):
    uri = open_document(client, tmp_path / "binary.grc", "task \x00\x01\ufffd \udc80 stage {{{ ]]]\x7f")
    assert await published(client, uri, 1)
    huge = PICK_PLACE * 120  # past the parser's size limit
    uri_huge = open_document(client, tmp_path / "huge.grc", huge)
    assert [d.code for d in await published(client, uri_huge, 1)] == ["GRC100"]
    far = types.Position(10_000, 10_000)
    for request in (
        client.text_document_hover_async(types.HoverParams(doc_id(uri), far)),
        client.text_document_completion_async(types.CompletionParams(doc_id(uri), far)),
        client.text_document_definition_async(types.DefinitionParams(doc_id(uri), far)),
        client.text_document_hover_async(types.HoverParams(doc_id(uri_huge), types.Position(3, 5))),
        client.text_document_completion_async(types.CompletionParams(doc_id("file:///never/opened.grc"), far)),
    ):
        await request  # answered (possibly with nothing), not an error
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            [types.TextDocumentContentChangePartial(types.Range(far, types.Position(0, 3)), "task ok\n")],
        )
    )
    assert await published(client, uri, 2) is not None
    symbols = await client.text_document_document_symbol_async(types.DocumentSymbolParams(doc_id(uri)))
    assert symbols is not None


async def test_a_scene_setting_checks_ones_own_environment(client: LanguageClient, tmp_path: Path):
    scene = tmp_path / "kitchen.json"
    scene.write_text(
        '{"objects": [{"name": "pot", "keypoints": {"rim": "the pot\'s rim"}}], '
        '"keypoints": {"robot.hand": "the hand"}, "signals": ["robot.closed"]}'
    )
    text = (
        "task kitchen\nkeypoints {\n    hand = robot.hnd\n    rim = pot.rim\n}\n"
        "stage s {\n    subgoal near: dist(hand, rim) <= 0.01\n}\n"
    )
    uri = open_document(client, tmp_path / "kitchen.grc", text)
    assert await published(client, uri, 1) == []  # not a stock task: no names to check against
    client.published.clear()
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"grapec": {"scene": str(scene)}})
    )
    try:
        got = await published(client, uri, 1)
        assert [d.code for d in got] == ["GRC225"] and "did you mean 'robot.hand'" in got[0].message
        result = await client.text_document_completion_async(
            types.CompletionParams(doc_id(uri), at(text, "robot.hnd", 6))
        )
        assert {"robot.hand", "pot.rim", "robot.closed"} <= {item.label for item in result.items}
        hover = await client.text_document_hover_async(types.HoverParams(doc_id(uri), at(text, "pot.rim", 5)))
        assert "the pot's rim" in hover.contents.value
    finally:
        client.published.clear()
        client.workspace_did_change_configuration(
            types.DidChangeConfigurationParams(settings={"grapec": {"scene": ""}})
        )
        assert await published(client, uri, 1) == []
