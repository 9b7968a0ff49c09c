"""The .grc language server (`grapec lsp`): diagnostics, completion, hover, navigation,
rename, formatting and outline for editors, over the Language Server Protocol on stdio.

Modules: `text` (positions and edits), `symbols` (a layout index that works on files that
do not parse), `schema` (which environment names a file may bind to), `features` (the
answers), `server` (pygls wiring). See docs/editor.md.
"""
