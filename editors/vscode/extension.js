// The VS Code side of rbrlang: highlighting comes from syntaxes/ (declared in
// package.json); this starts `rbrc lsp` (the setting `rbrlang.server.command`)
// for .rbr files and stops it with the editor.
"use strict";
const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace.getConfiguration("rbrlang").get("server.command", ["rbrc", "lsp"]);
  client = new LanguageClient(
    "rbrlang",
    "rbrlang",
    { command, args },
    { documentSelector: [{ language: "rbr" }] },
  );
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
