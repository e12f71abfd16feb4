// TEST-ONLY: a minimal real Backstage backend (catalog + auth with the
// oauth2Proxy provider) on 127.0.0.1, for Latchkey's integration tests.
// Never expose it: it trusts X-Forwarded-User from anyone who can reach it,
// which is exactly what a backend behind an identity-aware proxy does.
//
//   node index.mjs --port N [--base-url URL] [--exit-on-stdin-close]   (or PORT=N)
//
// Once the backend serves requests AND the catalog has ingested catalog.yaml
// (so a sign-in as alice can succeed at once), it prints one JSON line on
// stdout:
//
//   {"latchkey_backstage_ready":true,"url":"http://127.0.0.1:N",
//    "base_url":"URL","port":N,"static_token":"...","start_ms":...}
//
// Backstage's own log lines go to stdout too, so the reader looks for the
// `latchkey_backstage_ready` key rather than taking the first line.

import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const started = Date.now();
const here = dirname(fileURLToPath(import.meta.url));

function arg(name) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const portText = arg('--port') ?? process.env.PORT;
const port = Number(portText);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(
    `error: the port \`${portText ?? ''}\` is not a TCP port; pass \`--port N\` with N in 1..65535 ` +
      '(Backstage needs its real port up front for its own base URL, so 0 is not accepted)',
  );
  process.exit(2);
}
const exitOnStdinClose = process.argv.includes('--exit-on-stdin-close');

const url = `http://127.0.0.1:${port}`;
// The URL people reach Backstage at, when a proxy (Latchkey) stands in
// front: Backstage builds its external URLs from it, the `iss` of the user
// tokens it signs among them. Requests still arrive on `url`.
const baseUrlText = arg('--base-url') ?? url;
let baseUrl;
try {
  baseUrl = new URL(baseUrlText);
} catch {
  baseUrl = undefined;
}
if (!baseUrl || !['http:', 'https:'].includes(baseUrl.protocol) || baseUrl.search || baseUrl.hash) {
  console.error(
    `error: the base URL \`${baseUrlText}\` is not an http(s) URL without query or fragment; ` +
      'pass e.g. `--base-url http://127.0.0.1:8080`',
  );
  process.exit(2);
}
const publicUrl = baseUrl.href.replace(/\/+$/, '');
// A per-run secret for index.mjs's readiness probe and for tests that call
// the catalog as a service; never reused across runs.
const staticToken = randomBytes(24).toString('base64url');

// What changes per run goes into a second config file that Backstage merges
// over app-config.yaml.
const runDir = mkdtempSync(join(tmpdir(), 'latchkey-backstage-'));
const runConfig = join(runDir, 'app-config.run.json');
writeFileSync(
  runConfig,
  JSON.stringify({
    app: { baseUrl: publicUrl },
    backend: {
      baseUrl: publicUrl,
      listen: { port },
      auth: {
        externalAccess: [
          {
            type: 'static',
            options: { token: staticToken, subject: 'latchkey-testkit' },
          },
        ],
      },
    },
    catalog: {
      locations: [{ type: 'file', target: join(here, 'catalog.yaml') }],
    },
  }),
  { mode: 0o600 },
);

const { createBackend } = await import('@backstage/backend-defaults');
const { rootConfigServiceFactory } = await import('@backstage/backend-defaults/rootConfig');

const backend = createBackend();
backend.add(
  rootConfigServiceFactory({
    argv: ['--config', join(here, 'app-config.yaml'), '--config', runConfig],
    watch: false,
  }),
);
backend.add(import('@backstage/plugin-catalog-backend'));
backend.add(import('@backstage/plugin-auth-backend'));
backend.add(import('@backstage/plugin-auth-backend-module-oauth2-proxy-provider'));

let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  // Backstage's shutdown can hang on a stuck plugin; the harness must not.
  setTimeout(() => process.exit(code), 5000).unref();
  try {
    await backend.stop();
  } catch (e) {
    console.error(`error: stopping Backstage: ${e?.message ?? e}`);
  }
  rmSync(runDir, { recursive: true, force: true });
  process.exit(code);
}
process.on('SIGTERM', () => stop(0));
process.on('SIGINT', () => stop(0));
if (exitOnStdinClose) {
  process.stdin.on('end', () => stop(0));
  process.stdin.on('close', () => stop(0));
  process.stdin.resume();
}

try {
  await backend.start();
} catch (e) {
  console.error(`error: Backstage did not start: ${e?.stack ?? e}`);
  await stop(1);
}
// The config is read once (watch: false): the file holding the static token
// goes now, so a harness killed later leaves nothing behind.
rmSync(runDir, { recursive: true, force: true });

// Ready means a sign-in can succeed: the catalog must hold the users first.
const deadline = Date.now() + 120_000;
for (;;) {
  try {
    const res = await fetch(`${url}/api/catalog/entities/by-name/user/default/alice`, {
      headers: { authorization: `Bearer ${staticToken}` },
    });
    if (res.ok) break;
  } catch {
    // not listening yet
  }
  if (Date.now() > deadline) {
    console.error('error: the catalog did not ingest catalog.yaml within 120 s (user `alice` missing)');
    await stop(1);
  }
  await new Promise((r) => setTimeout(r, 250));
}

process.stdout.write(
  `${JSON.stringify({
    latchkey_backstage_ready: true,
    url,
    base_url: publicUrl,
    port,
    static_token: staticToken,
    start_ms: Date.now() - started,
  })}\n`,
);
