#!/usr/bin/env bash
# Installs the Backstage test backend's npm packages into
# testing/backstage/node_modules, unless the install there already matches
# package-lock.json (a stamp holds the lock file's SHA-256; the Rust test
# kit, crates/testkit/src/backstage.rs, reads the same stamp).
#
# better-sqlite3 has no prebuilt binary reachable here, so npm compiles it
# (needs python3, make and g++; a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")"
stamp=node_modules/.latchkey-package-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
printf '%s\n' "$want" >"$stamp"
