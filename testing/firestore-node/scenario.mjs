// One Firestore scenario, run with Google's official Node.js client
// (@google-cloud/firestore 8), printed as ONE JSON object on stdout.
//
// Test-only. Latchkey's integration tests run it against the Firestore
// emulator directly and through Latchkey, and compare the results.
//
// Options (flag, or environment variable):
//   --mode    SCENARIO_MODE       emulator | latchkey-grpc | latchkey-rest |
//                                 latchkey-grpc-tls | latchkey-rest-tls
//   --target  FIRESTORE_TARGET    host:port of the emulator or of Latchkey
//   --project FIRESTORE_PROJECT   project id (default `latchkey-test`)
//   --prefix  SCENARIO_PREFIX     prefix of every collection id (default: a
//                                 fresh one per run, so runs never collide)
//             FIRESTORE_DATABASE  database id (default `(default)`)
//             LATCHKEY_TOKEN      the Latchkey bearer token (latchkey-* modes)
//             LATCHKEY_CA_FILE    PEM file of the CA that signed Latchkey's
//                                 certificate (the *-tls modes)
//             SCENARIO_STEP_TIMEOUT_MS  per-step time limit (default 20000)
//
// How each mode reaches the server, and why (read from the client's source):
//   emulator           The client's documented emulator switch:
//                      FIRESTORE_EMULATOR_HOST. It then uses cleartext gRPC
//                      and adds `Authorization: Bearer owner` itself.
//   latchkey-grpc      {host, port, ssl: false, customHeaders: {Authorization}}.
//                      With ssl false the client builds insecure channel
//                      credentials and never asks google-auth-library for a
//                      token; it adds `Authorization: Bearer owner` to its
//                      customHeaders *under* ours (the key must be spelled
//                      `Authorization` exactly to replace it), and sends
//                      customHeaders as call metadata on every RPC, streaming
//                      ones (Listen, RunQuery, Write...) included.
//   latchkey-rest      preferRest: true and ssl: false (so the REST fallback
//                      speaks http://), plus `authClient`: an OAuth2Client
//                      holding the token, which sets the Authorization header
//                      on every HTTP request. Listen has no REST form, so the
//                      client switches to gRPC for onSnapshot; that part gets
//                      the token through customHeaders, as in latchkey-grpc.
//   latchkey-grpc-tls  ssl on (the default) with `authClient`: gax asks that
//                      client for headers on every call. grpc-js trusts the
//                      CA in GRPC_DEFAULT_SSL_ROOTS_FILE_PATH, which this
//                      script sets from LATCHKEY_CA_FILE before loading it.
//   latchkey-rest-tls  REST over https with `authClient`; Node trusts the CA
//                      through NODE_EXTRA_CA_CERTS, which is read only at
//                      start-up, so the caller must set it (this script
//                      re-runs itself with it set when it is missing).
// `universeDomain` is set to its default in every mode so that the client
// never looks for Application Default Credentials (which would probe the
// GCE metadata server); METADATA_SERVER_DETECTION=none makes sure of it.
//
// Output: {"client":"node","mode":...,"steps":[{"step","ok","result"} |
// {"step","ok":false,"error":{"code","message"}}]}. Results hold no times,
// no run prefix and no server-chosen ids, so runs compare equal. A failing
// step does not stop the scenario. Exit 0 unless the script itself breaks.

import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

const MODES = [
  'emulator',
  'latchkey-grpc',
  'latchkey-rest',
  'latchkey-grpc-tls',
  'latchkey-rest-tls',
];

function log(...args) {
  console.error('[scenario]', ...args);
}

function parseArgs(argv) {
  const opts = {
    mode: process.env.SCENARIO_MODE,
    target: process.env.FIRESTORE_TARGET,
    project: process.env.FIRESTORE_PROJECT || 'latchkey-test',
    prefix: process.env.SCENARIO_PREFIX,
    database: process.env.FIRESTORE_DATABASE || '(default)',
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    const key = { '--mode': 'mode', '--target': 'target', '--project': 'project', '--prefix': 'prefix' }[flag];
    if (!key || value === undefined) {
      throw new Error(`unknown or incomplete option \`${flag}\`; see the top of scenario.mjs`);
    }
    opts[key] = value;
    i++;
  }
  if (!MODES.includes(opts.mode)) {
    throw new Error(`\`--mode\` (or SCENARIO_MODE) must be one of ${MODES.join(', ')}, not \`${opts.mode}\``);
  }
  if (!opts.target || !/^[^:]+:\d+$/.test(opts.target)) {
    throw new Error(`\`--target\` (or FIRESTORE_TARGET) must be host:port, not \`${opts.target}\``);
  }
  if (!opts.prefix) {
    opts.prefix = `run${randomBytes(4).toString('hex')}_`;
  }
  if (opts.mode.startsWith('latchkey') && !process.env.LATCHKEY_TOKEN) {
    throw new Error(`mode \`${opts.mode}\` needs the Latchkey bearer token in LATCHKEY_TOKEN`);
  }
  if (opts.mode.endsWith('-tls') && !process.env.LATCHKEY_CA_FILE) {
    throw new Error(`mode \`${opts.mode}\` needs the CA certificate file in LATCHKEY_CA_FILE`);
  }
  return opts;
}

// Environment that must be in place before the client libraries load.
function prepareEnvironment(opts) {
  process.env.METADATA_SERVER_DETECTION = 'none';
  if (opts.mode === 'emulator') {
    process.env.FIRESTORE_EMULATOR_HOST = opts.target;
  } else {
    if (process.env.FIRESTORE_EMULATOR_HOST) {
      log('ignoring FIRESTORE_EMULATOR_HOST: it would override the Latchkey endpoint and credentials');
    }
    delete process.env.FIRESTORE_EMULATOR_HOST;
  }
  delete process.env.FIRESTORE_PREFER_REST;
  if (opts.mode.endsWith('-tls')) {
    process.env.GRPC_DEFAULT_SSL_ROOTS_FILE_PATH = process.env.LATCHKEY_CA_FILE;
  }
}

function makeClient(opts) {
  const { Firestore } = require('@google-cloud/firestore');
  const [host, port] = [opts.target.replace(/:\d+$/, ''), Number(opts.target.split(':').pop())];
  const base = { projectId: opts.project, databaseId: opts.database, universeDomain: 'googleapis.com' };
  if (opts.mode === 'emulator') {
    return new Firestore(base);
  }
  const token = process.env.LATCHKEY_TOKEN;
  const { OAuth2Client } = require('google-auth-library');
  // The REST transport hands every HTTP exchange to authClient.fetch and
  // decodes error bodies (google.rpc.Status JSON) itself, but gaxios, under
  // OAuth2Client, throws on any non-2xx status first, so a refusal would
  // surface as a status-less GaxiosError. Accepting every status lets the
  // client map a 403 body to PERMISSION_DENIED exactly as over gRPC.
  class TokenClient extends OAuth2Client {
    fetch(input, init) {
      return super.fetch(input, { ...init, validateStatus: () => true });
    }
  }
  const authClient = new TokenClient();
  // A bare access token: no expiry and no refresh token, so it is never refreshed.
  authClient.setCredentials({ access_token: token });
  const bearer = { Authorization: `Bearer ${token}` };
  switch (opts.mode) {
    case 'latchkey-grpc':
      return new Firestore({ ...base, host, port, ssl: false, customHeaders: bearer });
    case 'latchkey-rest':
      return new Firestore({ ...base, host, port, ssl: false, preferRest: true, authClient, customHeaders: bearer });
    case 'latchkey-grpc-tls':
      return new Firestore({ ...base, host, port, authClient });
    case 'latchkey-rest-tls':
      return new Firestore({ ...base, host, port, preferRest: true, authClient });
    default:
      throw new Error(`unknown mode ${opts.mode}`);
  }
}

// ---------------------------------------------------------------------------
// Normalization: results must not depend on time, run prefix or ordering the
// API does not promise.

const GRPC_CODES = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND',
  'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION',
  'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS',
  'UNAUTHENTICATED',
];
const SERVER_TIME = '<serverTimestamp>';

function makeNormalizer(prefix, startedAt) {
  const unprefix = s => s.split(prefix).join('');
  const norm = v => {
    if (typeof v === 'string') {
      return unprefix(v);
    }
    if (v === null || typeof v !== 'object') {
      return v;
    }
    if (Array.isArray(v)) {
      return v.map(norm);
    }
    if (typeof v.toMillis === 'function' && typeof v.nanoseconds === 'number') {
      // Timestamps the scenario writes are fixed and long past; anything
      // from this run's lifetime was chosen by the server.
      return v.toMillis() >= startedAt - 60_000 ? SERVER_TIME : { timestamp: v.toDate().toISOString() };
    }
    if (typeof v.path === 'string' && typeof v.firestore === 'object') {
      return { ref: unprefix(v.path) };
    }
    const out = {};
    for (const k of Object.keys(v).sort()) {
      out[k] = norm(v[k]);
    }
    return out;
  };
  return { norm, unprefix };
}

function errorOf(err) {
  let code = 'UNKNOWN';
  if (typeof err?.code === 'number' && GRPC_CODES[err.code]) {
    code = GRPC_CODES[err.code];
  } else if (typeof err?.code === 'string' && err.code) {
    code = err.code;
  }
  // gRPC errors carry the server's text in `details`; REST errors in `message`.
  const details = typeof err?.details === 'string' && err.details ? err.details : null;
  return { code, message: details ?? String(err?.message || err) };
}

function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const e = new Error(`${what} did not finish within ${ms} ms`);
      e.code = 'SCENARIO_TIMEOUT';
      reject(e);
    }, ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// The scenario. Step names are shared with testing/firestore-py/scenario.py.

async function runScenario(db, opts) {
  const { FieldValue, Timestamp } = require('@google-cloud/firestore');
  const { norm } = makeNormalizer(opts.prefix, Date.now());
  const stepTimeout = Number(process.env.SCENARIO_STEP_TIMEOUT_MS || 20000);
  const steps = [];
  const step = async (name, fn) => {
    try {
      const result = await withTimeout(Promise.resolve().then(fn), stepTimeout, `step \`${name}\``);
      steps.push({ step: name, ok: true, result: norm(result === undefined ? null : result) });
    } catch (err) {
      log(`step ${name} failed:`, err?.stack || err);
      steps.push({ step: name, ok: false, error: errorOf(err) });
    }
  };

  const cities = db.collection(`${opts.prefix}cities`);
  const landmarksId = `${opts.prefix}landmarks`;
  const sf = cities.doc('sf');
  const snapData = s => (s.exists ? s.data() : null);

  await step('set', async () => {
    await sf.set({
      name: 'San Francisco',
      state: 'CA',
      population: 860000,
      area_km2: 121.5,
      capital: false,
      tags: ['west'],
      founded: Timestamp.fromMillis(Date.UTC(1776, 5, 29)),
      mayor: null,
      location: { lat: 37.75, lng: -122.5 },
    });
    return { id: sf.id };
  });

  await step('get', async () => {
    const s = await sf.get();
    return { exists: s.exists, id: s.id, data: snapData(s) };
  });

  await step('update_transforms', async () => {
    await sf.update({
      population: FieldValue.increment(1000),
      tags: FieldValue.arrayUnion('coast', 'west'),
      updated_at: FieldValue.serverTimestamp(),
      capital: FieldValue.delete(),
      'location.lat': 37.77,
    });
    const s = await sf.get();
    return { data: snapData(s) };
  });

  await step('batch', async () => {
    const batch = db.batch();
    batch.set(cities.doc('la'), { name: 'Los Angeles', state: 'CA', population: 3900000, tags: ['west'] });
    batch.set(cities.doc('sd'), { name: 'San Diego', state: 'CA', population: 1400000, tags: ['west', 'coast'] });
    batch.set(cities.doc('nyc'), { name: 'New York', state: 'NY', population: 8300000, tags: ['east', 'coast'] });
    batch.set(cities.doc('tmp'), { name: 'Temporary', state: 'XX', population: 1 });
    batch.update(sf, { nickname: 'Fog City' });
    batch.delete(cities.doc('tmp'));
    batch.set(sf.collection(landmarksId).doc('ggb'), { name: 'Golden Gate Bridge', type: 'bridge' });
    batch.set(sf.collection(landmarksId).doc('alcatraz'), { name: 'Alcatraz', type: 'island' });
    batch.set(cities.doc('nyc').collection(landmarksId).doc('bb'), { name: 'Brooklyn Bridge', type: 'bridge' });
    batch.set(sf.collection(`${opts.prefix}neighborhoods`).doc('mission'), { name: 'Mission' });
    const results = await batch.commit();
    const tmp = await cities.doc('tmp').get();
    return { writes: results.length, tmp_exists: tmp.exists };
  });

  await step('query', async () => {
    const q = await cities
      .where('state', '==', 'CA')
      .where('population', '>', 1000000)
      .orderBy('population', 'desc')
      .limit(2)
      .get();
    return q.docs.map(d => ({ id: d.id, population: d.get('population') }));
  });

  await step('query_array_contains', async () => {
    const q = await cities.where('tags', 'array-contains', 'coast').orderBy('name').get();
    return q.docs.map(d => d.id);
  });

  await step('count', async () => {
    const s = await cities.where('state', '==', 'CA').count().get();
    return { count: s.data().count };
  });

  await step('transaction', async () => {
    const moved = await db.runTransaction(async tx => {
      const a = await tx.get(cities.doc('la'));
      const b = await tx.get(sf);
      const n = 5000;
      tx.update(cities.doc('la'), { population: a.get('population') - n });
      tx.update(sf, { population: b.get('population') + n });
      return n;
    });
    const [a, b] = await Promise.all([cities.doc('la').get(), sf.get()]);
    return { moved, la: a.get('population'), sf: b.get('population') };
  });

  await step('collection_group', async () => {
    const q = await db.collectionGroup(landmarksId).where('type', '==', 'bridge').get();
    return q.docs.map(d => ({ path: d.ref.path, name: d.get('name') })).sort((x, y) => cmp(x.path, y.path));
  });

  await step('list_collections', async () => {
    const cols = await sf.listCollections();
    return cols.map(c => c.id).sort();
  });

  await step('listen', async () => {
    const expected = ['la', 'sd', 'sf'];
    let unsubscribe = () => {};
    const seen = await new Promise((resolve, reject) => {
      unsubscribe = cities.where('state', '==', 'CA').onSnapshot(
        snap => {
          const ids = snap.docs.map(d => d.id).sort();
          if (JSON.stringify(ids) === JSON.stringify(expected)) {
            resolve(ids);
          }
        },
        reject,
      );
    }).finally(() => unsubscribe());
    return { ids: seen };
  });

  await step('delete', async () => {
    await sf.delete();
    const s = await sf.get();
    return { exists: s.exists };
  });

  return steps;
}

function cmp(a, b) {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.mode === 'latchkey-rest-tls' && process.env.NODE_EXTRA_CA_CERTS !== process.env.LATCHKEY_CA_FILE) {
    // Node reads NODE_EXTRA_CA_CERTS only at start-up: run again with it.
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
      env: { ...process.env, NODE_EXTRA_CA_CERTS: process.env.LATCHKEY_CA_FILE },
      stdio: 'inherit',
    });
    process.exit(r.status ?? 1);
  }
  prepareEnvironment(opts);
  const db = makeClient(opts);
  const steps = await runScenario(db, opts);
  process.stdout.write(JSON.stringify({ client: 'node', mode: opts.mode, steps }) + '\n');
  await withTimeout(db.terminate(), 5000, 'terminate').catch(e => log('terminate:', e?.message));
}

main().then(
  () => process.exit(0),
  err => {
    log(err?.stack || err);
    process.exit(2);
  },
);
