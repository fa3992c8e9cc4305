#!/bin/sh
# Install the MCP Inspector CLI (npm @modelcontextprotocol/inspector 0.15.x), a third-party MCP
# client the end-to-end tests drive, into tests/.npm (git-ignored). ~12 s and ~150 MB on a fresh
# machine; a no-op once installed. Without node/npm it only says so: those tests then skip.
set -eu
cd "$(dirname "$0")/.."
PREFIX=tests/.npm
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "install_inspector: node/npm not found; the MCP Inspector tests will be skipped" >&2
    exit 0
fi
if [ -x "$PREFIX/node_modules/.bin/mcp-inspector" ]; then
    exit 0
fi
mkdir -p "$PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "@modelcontextprotocol/inspector@~0.15.0"
