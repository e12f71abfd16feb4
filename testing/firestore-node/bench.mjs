// A document benchmark with Google's official Node.js client
// (@google-cloud/firestore 8): point reads, single-document writes and a
// 100-result query, each for a fixed time at a bounded number of calls in
// flight, reported as ONE JSON object on stdout (logs on stderr).
//
// Bench-only. bench/documents.sh runs it against Google's emulator straight
// and against Latchkey, interleaved, and prints the ratios (issue 15,
// item 9). It can also run alone:
//
//   node bench.mjs --mode MODE --target HOST:PORT --phase seed
//   node bench.mjs --mode MODE --target HOST:PORT --op get --seconds 5
//
// Options (flag, or environment variable):
//   --mode        BENCH_MODE         emulator | latchkey-grpc | latchkey-rest
//                                    (wired as scenario.mjs's modes)
//   --target      FIRESTORE_TARGET   host:port
//   --project     FIRESTORE_PROJECT  default `latchkey-bench`
//   --prefix      BENCH_PREFIX       collection prefix (default `bench_`)
//   --phase       BENCH_PHASE        `seed` (write the documents the
//                                    operations read, then exit) or `run`
//   --op          BENCH_OP           get | set | query (with --phase run)
//   --seconds     BENCH_SECONDS      timed length (default 5)
//   --warmup      BENCH_WARMUP       untimed seconds first (default 2)
//   --concurrency BENCH_CONCURRENCY  calls in flight (default 8)
//                 LATCHKEY_TOKEN     the Latchkey bearer token (latchkey-*)
//
// The operations:
//   get    `doc.get()` of one of 1,024 seeded ~200-byte documents
//          (BatchGetDocuments, the call the client makes for a get);
//   set    `doc.set()` of a ~200-byte document, one of 1,024 ids (Commit);
//   query  a `where k >= 0 orderBy k limit 100` query over 150 seeded
//          documents, 100 results each (RunQuery).
// Every call must succeed: an error stops the run with exit status 3 (a
// fast refusal is not a result).
//
// Output: {"mode","op","concurrency","seconds","calls","calls_per_s",
//          "p50_us","p90_us","p99_us","max_us","errors":0}
// or, for --phase seed: {"mode","phase":"seed","documents":N}.

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const MODES = ['emulator', 'latchkey-grpc', 'latchkey-rest'];
const OPS = ['get', 'set', 'query'];
const READ_DOCS = 1024;
const QUERY_DOCS = 150;
const QUERY_LIMIT = 100;

function log(...args) {
  console.error('[bench]', ...args);
}

function parseArgs(argv) {
  const env = process.env;
  const opts = {
    mode: env.BENCH_MODE,
    target: env.FIRESTORE_TARGET,
    project: env.FIRESTORE_PROJECT || 'latchkey-bench',
    prefix: env.BENCH_PREFIX || 'bench_',
    phase: env.BENCH_PHASE || 'run',
    op: env.BENCH_OP,
    seconds: env.BENCH_SECONDS || '5',
    warmup: env.BENCH_WARMUP || '2',
    concurrency: env.BENCH_CONCURRENCY || '8',
  };
  const keys = ['mode', 'target', 'project', 'prefix', 'phase', 'op', 'seconds', 'warmup', 'concurrency'];
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].startsWith('--') ? argv[i].slice(2) : null;
    if (!keys.includes(key) || argv[i + 1] === undefined) {
      throw new Error(`unknown or incomplete option \`${argv[i]}\`; see the top of bench.mjs`);
    }
    opts[key] = argv[i + 1];
  }
  if (!MODES.includes(opts.mode)) throw new Error(`\`--mode\` must be one of ${MODES.join(', ')}`);
  if (!/^[^:]+:\d+$/.test(opts.target || '')) throw new Error('`--target` must be host:port');
  if (!['seed', 'run'].includes(opts.phase)) throw new Error('`--phase` must be `seed` or `run`');
  if (opts.phase === 'run' && !OPS.includes(opts.op)) throw new Error(`\`--op\` must be one of ${OPS.join(', ')}`);
  for (const k of ['seconds', 'warmup', 'concurrency']) {
    const n = Number(opts[k]);
    if (!Number.isFinite(n) || n < 0 || (k !== 'warmup' && n <= 0)) throw new Error(`\`--${k}\` must be a number above 0`);
    opts[k] = n;
  }
  if (opts.mode.startsWith('latchkey') && !process.env.LATCHKEY_TOKEN) {
    throw new Error(`mode \`${opts.mode}\` needs the Latchkey bearer token in LATCHKEY_TOKEN`);
  }
  return opts;
}

// As scenario.mjs (see the comment at its top for why each mode is so).
function makeClient(opts) {
  process.env.METADATA_SERVER_DETECTION = 'none';
  delete process.env.FIRESTORE_PREFER_REST;
  if (opts.mode === 'emulator') {
    process.env.FIRESTORE_EMULATOR_HOST = opts.target;
  } else {
    delete process.env.FIRESTORE_EMULATOR_HOST;
  }
  const { Firestore } = require('@google-cloud/firestore');
  const [host, port] = [opts.target.replace(/:\d+$/, ''), Number(opts.target.split(':').pop())];
  const base = { projectId: opts.project, universeDomain: 'googleapis.com' };
  if (opts.mode === 'emulator') return new Firestore(base);
  const token = process.env.LATCHKEY_TOKEN;
  const bearer = { Authorization: `Bearer ${token}` };
  if (opts.mode === 'latchkey-grpc') return new Firestore({ ...base, host, port, ssl: false, customHeaders: bearer });
  const { OAuth2Client } = require('google-auth-library');
  class TokenClient extends OAuth2Client {
    fetch(input, init) {
      return super.fetch(input, { ...init, validateStatus: () => true });
    }
  }
  const authClient = new TokenClient();
  authClient.setCredentials({ access_token: token });
  return new Firestore({ ...base, host, port, ssl: false, preferRest: true, authClient, customHeaders: bearer });
}

// A ~200-byte document: a few typed fields and a filler string.
function body(i) {
  return { i, name: `document ${i}`, active: i % 2 === 0, score: i * 1.5, tags: ['a', 'b'], pad: 'x'.repeat(120) };
}

async function seed(db, p) {
  let batch = db.batch();
  let n = 0;
  const flush = async () => {
    if (n % 400 !== 0) return;
    await batch.commit();
    batch = db.batch();
  };
  for (let i = 0; i < READ_DOCS; i++) {
    batch.set(db.doc(`${p}read/r${String(i).padStart(4, '0')}`), body(i));
    n++;
    await flush();
  }
  for (let i = 0; i < QUERY_DOCS; i++) {
    batch.set(db.doc(`${p}query/q${String(i).padStart(4, '0')}`), { ...body(i), k: i });
    n++;
    await flush();
  }
  await batch.commit();
  return n;
}

function operation(db, opts) {
  const p = opts.prefix;
  let next = 0;
  const id = () => String(next++ % READ_DOCS).padStart(4, '0');
  switch (opts.op) {
    case 'get':
      return async () => {
        const s = await db.doc(`${p}read/r${id()}`).get();
        if (!s.exists) throw new Error(`${s.ref.path} does not exist; run --phase seed first`);
      };
    case 'set':
      return async () => {
        const n = next;
        await db.doc(`${p}write/w${id()}`).set(body(n));
      };
    case 'query': {
      const q = db.collection(`${p}query`).where('k', '>=', 0).orderBy('k').limit(QUERY_LIMIT);
      return async () => {
        const s = await q.get();
        if (s.size !== QUERY_LIMIT) throw new Error(`the query gave ${s.size} documents, not ${QUERY_LIMIT}; run --phase seed first`);
      };
    }
    default:
      throw new Error(`unknown op ${opts.op}`);
  }
}

// `concurrency` loops, each calling `op` until `until` (ns); latencies in
// microseconds of the calls that started before it.
async function drive(op, concurrency, until, latencies) {
  const worker = async () => {
    while (process.hrtime.bigint() < until) {
      const t0 = process.hrtime.bigint();
      await op();
      if (latencies) latencies.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

function percentile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const db = makeClient(opts);
  let out;
  try {
    if (opts.phase === 'seed') {
      out = { mode: opts.mode, phase: 'seed', documents: await seed(db, opts.prefix) };
    } else {
      const op = operation(db, opts);
      await op(); // the channel is up before anything is timed
      const sec = n => BigInt(Math.round(n * 1e9));
      if (opts.warmup > 0) await drive(op, opts.concurrency, process.hrtime.bigint() + sec(opts.warmup), null);
      const latencies = [];
      const start = process.hrtime.bigint();
      await drive(op, opts.concurrency, start + sec(opts.seconds), latencies);
      const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
      latencies.sort((a, b) => a - b);
      const r = x => (x === null ? null : Math.round(x));
      out = {
        mode: opts.mode, op: opts.op, concurrency: opts.concurrency, seconds: Number(elapsed.toFixed(3)),
        calls: latencies.length, calls_per_s: Number((latencies.length / elapsed).toFixed(1)),
        p50_us: r(percentile(latencies, 0.5)), p90_us: r(percentile(latencies, 0.9)),
        p99_us: r(percentile(latencies, 0.99)), max_us: r(latencies[latencies.length - 1] ?? null), errors: 0,
      };
    }
  } catch (err) {
    log(`${opts.mode} ${opts.phase} ${opts.op ?? ''} failed:`, err?.stack || err);
    process.exitCode = 3;
  }
  if (out) {
    const text = JSON.stringify(out) + '\n';
    await new Promise((resolve, reject) => process.stdout.write(text, e => (e ? reject(e) : resolve())));
  }
  await Promise.race([db.terminate(), new Promise(res => setTimeout(res, 5000))]).catch(() => {});
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  err => {
    log(err?.stack || err);
    process.exit(2);
  },
);
