// Starts `grapec lsp` for .grc files. All language features live in the server; this file
// only launches it and passes the grapec.* settings along.
"use strict";

const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("grapec");
  const server = { command: config.get("path", "grapec"), args: ["lsp"] };
  client = new LanguageClient(
    "grapec",
    "grapec lsp",
    { run: server, debug: server },
    {
      documentSelector: [{ language: "grc" }],
      initializationOptions: {
        scene: config.get("scene", "") || undefined,
        debounceMs: config.get("debounceMs", 30),
      },
      synchronize: { configurationSection: "grapec" },
    }
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
