// A query conformance table, run with Google's official Node.js client
// (@google-cloud/firestore 8), printed as ONE JSON object on stdout.
//
// Test-only. crates/gateway/tests/firestore_conformance.rs runs it against
// Google's Firestore emulator straight and through Latchkey, and requires
// the two outputs to be identical query by query (issue 15, item 8).
//
// What it does:
//   1. seeds a fixed set of documents of mixed types under a run prefix:
//      every kind of value Firestore orders (null, booleans, NaN, integers
//      up to the 64-bit limits, doubles including -0, the infinities and
//      huge ones, an integer and a double that are numerically equal,
//      timestamps, strings by UTF-8 byte order, bytes, references,
//      geopoints, arrays, maps) in one field, documents that lack it, and a
//      subcollection id used at several depths (for collection groups);
//   2. generates queries from a seeded generator (the same list on every
//      run, whatever the prefix): field filters of every operator,
//      composite AND/OR, orders, implicit ordering, cursors by values and by
//      document snapshot, offset, limit, limitToLast, select, collection
//      groups, the all-descendants queries recursiveDelete sends, and
//      count/sum/average aggregations, several at once;
//   3. runs each and prints, per query, its id, a description and either
//      the result (document paths in order with their data in a typed,
//      comparable JSON form; aggregation values with their types) or the
//      error code.
//
// Options (flag, or environment variable):
//   --mode    CONFORMANCE_MODE    emulator | emulator-rest | latchkey-grpc |
//                                 latchkey-rest
//   --target  FIRESTORE_TARGET    host:port of the emulator or of Latchkey
//   --project FIRESTORE_PROJECT   project id (default `latchkey-test`)
//   --prefix  CONFORMANCE_PREFIX  prefix of every collection id (default: a
//                                 fresh one per run, always 10 characters,
//                                 so two runs order paths alike)
//   --count   CONFORMANCE_COUNT   generated queries (default 240)
//   --only    CONFORMANCE_ONLY    run only the queries whose id is listed
//                                 (comma-separated), to replay a difference
//             FIRESTORE_DATABASE  database id (default `(default)`)
//             LATCHKEY_TOKEN      the Latchkey bearer token (latchkey-* modes)
//             CONFORMANCE_QUERY_TIMEOUT_MS  per-query limit (default 20000)
//             CONFORMANCE_IN_FLIGHT  queries run at once (default 8)
//             CONFORMANCE_TRACE  set: each query's time on stderr
// The modes reach the server exactly as scenario.mjs's modes of the same
// name do (read the comment at its top for why each is wired so);
// `emulator-rest` is `latchkey-rest` against the emulator with its
// administrator token `owner`: the baseline of a REST run, because the
// client's REST transport itself changes what it writes (JSON has no -0,
// so a double -0 is stored as 0) and must be compared with itself.
//
// Output: {"client":"node","mode":...,"seed":[{"step","ok",("error")}],
//          "queries":[{"id":"q001","desc":"...","result":...} |
//                     {"id","desc","error":{"code","message"}}]}
// A query result is {"docs":[{"path","data"}]} (path relative to the
// prefix, data typed: {"int":"5"}, {"double":"-0"}, {"str":"a"}, ...) or,
// for an aggregation, {"aggregate":{alias: typed value}}. Exit 0 whenever
// the JSON was printed.

import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import path from 'node:path';

const require = createRequire(import.meta.url);

const MODES = ['emulator', 'emulator-rest', 'latchkey-grpc', 'latchkey-rest'];
const PREFIX_LEN = 10;

function log(...args) {
  console.error('[conformance]', ...args);
}

function parseArgs(argv) {
  const opts = {
    mode: process.env.CONFORMANCE_MODE,
    target: process.env.FIRESTORE_TARGET,
    project: process.env.FIRESTORE_PROJECT || 'latchkey-test',
    prefix: process.env.CONFORMANCE_PREFIX,
    count: process.env.CONFORMANCE_COUNT || '240',
    only: process.env.CONFORMANCE_ONLY || '',
    database: process.env.FIRESTORE_DATABASE || '(default)',
  };
  const flags = {
    '--mode': 'mode', '--target': 'target', '--project': 'project', '--prefix': 'prefix',
    '--count': 'count', '--only': 'only',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = flags[argv[i]];
    if (!key || argv[i + 1] === undefined) {
      throw new Error(`unknown or incomplete option \`${argv[i]}\`; see the top of conformance.mjs`);
    }
    opts[key] = argv[i + 1];
  }
  if (!MODES.includes(opts.mode)) {
    throw new Error(`\`--mode\` must be one of ${MODES.join(', ')}, not \`${opts.mode}\``);
  }
  if (!opts.target || !/^[^:]+:\d+$/.test(opts.target)) {
    throw new Error(`\`--target\` must be host:port, not \`${opts.target}\``);
  }
  if (!opts.prefix) {
    opts.prefix = `c${randomBytes(4).toString('hex')}_`;
  }
  if (opts.prefix.length !== PREFIX_LEN) {
    // Paths of two runs order alike only when their prefixes are as long.
    throw new Error(`\`--prefix\` must be ${PREFIX_LEN} characters, not \`${opts.prefix}\``);
  }
  opts.count = Number(opts.count);
  if (!Number.isInteger(opts.count) || opts.count < 1) {
    throw new Error(`\`--count\` must be a whole number above 0`);
  }
  opts.only = new Set(opts.only.split(',').map(s => s.trim()).filter(Boolean));
  if (opts.mode === 'emulator-rest') {
    process.env.LATCHKEY_TOKEN = 'owner';
  }
  if (opts.mode.startsWith('latchkey') && !process.env.LATCHKEY_TOKEN) {
    throw new Error(`mode \`${opts.mode}\` needs the Latchkey bearer token in LATCHKEY_TOKEN`);
  }
  return opts;
}

// As scenario.mjs: environment first, then the client, per mode.
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
  // useBigInt: integers read back as BigInt and doubles as numbers, so the
  // output tells integerValue 1 from doubleValue 1.0.
  const base = {
    projectId: opts.project, databaseId: opts.database, universeDomain: 'googleapis.com', useBigInt: true,
  };
  if (opts.mode === 'emulator') {
    return new Firestore(base);
  }
  const token = process.env.LATCHKEY_TOKEN;
  const bearer = { Authorization: `Bearer ${token}` };
  if (opts.mode === 'latchkey-grpc') {
    return new Firestore({ ...base, host, port, ssl: false, customHeaders: bearer });
  }
  const { OAuth2Client } = require('google-auth-library');
  // See scenario.mjs: gaxios must hand every status to the client.
  class TokenClient extends OAuth2Client {
    fetch(input, init) {
      return super.fetch(input, { ...init, validateStatus: () => true });
    }
  }
  const authClient = new TokenClient();
  authClient.setCredentials({ access_token: token });
  return new Firestore({ ...base, host, port, ssl: false, preferRest: true, authClient, customHeaders: bearer });
}

const GRPC_CODES = [
  'OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND',
  'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION',
  'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS',
  'UNAUTHENTICATED',
];

// A client-side refusal (the client validates before sending) has no gRPC
// code; it is `CLIENT` so that it compares equal on both sides.
function errorOf(err) {
  let code = 'CLIENT';
  if (typeof err?.code === 'number' && GRPC_CODES[err.code]) {
    code = GRPC_CODES[err.code];
  } else if (typeof err?.code === 'string' && err.code) {
    code = err.code;
  }
  const details = typeof err?.details === 'string' && err.details ? err.details : null;
  return { code, message: details ?? String(err?.message || err) };
}

function withTimeout(promise, ms, what) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const e = new Error(`${what} did not finish within ${ms} ms`);
      e.code = 'CONFORMANCE_TIMEOUT';
      reject(e);
    }, ms);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// Values. Each has a label (for descriptions) and a maker, so specs hold
// labels only and do not depend on the run prefix.

function valueTable(F) {
  const { Timestamp, GeoPoint } = F;
  const v = (label, make) => ({ label, make });
  return [
    v('null', () => null),
    v('false', () => false),
    v('true', () => true),
    v('NaN', () => NaN),
    v('-Infinity', () => -Infinity),
    v('-1e300', () => -1e300),
    v('int -2^63', () => -(2n ** 63n)),
    v('int -5', () => -5n),
    v('-2.5', () => -2.5),
    v('-0.0', () => -0),
    v('int 0', () => 0n),
    v('1e-300', () => 1e-300),
    v('int 1', () => 1n),
    v('1.5', () => 1.5),
    v('int 2', () => 2n),
    v('2.5', () => 2.5),
    v('9007199254740992.0', () => 9007199254740992),
    v('int 2^53+1', () => 9007199254740993n),
    v('int 2^63-1', () => 2n ** 63n - 1n),
    v('1e300', () => 1e300),
    v('Infinity', () => Infinity),
    v('ts 0001-01-01', () => new Timestamp(-62135596800, 0)),
    v('ts 1970-01-01', () => new Timestamp(0, 0)),
    v('ts 2023-11-14.123456', () => new Timestamp(1700000000, 123456000)),
    v('ts 9999-12-31', () => new Timestamp(253402300799, 999999000)),
    v('""', () => ''),
    v('"A"', () => 'A'),
    v('"a"', () => 'a'),
    v('"ab"', () => 'ab'),
    v('"a\\u0000b"', () => 'a\u0000b'),
    v('"é"', () => 'é'),
    v('"\\uFF5E"', () => '\uFF5E'),
    v('"😀"', () => '😀'),
    v('bytes []', () => Buffer.alloc(0)),
    v('bytes [00]', () => Buffer.from([0])),
    v('bytes [01 02]', () => Buffer.from([1, 2])),
    v('bytes [ff]', () => Buffer.from([0xff])),
    v('ref items/d01', ctx => ctx.db.doc(`${ctx.p}items/d01`)),
    v('ref items/d01/sub/s1', ctx => ctx.db.doc(`${ctx.p}items/d01/${ctx.p}sub/s1`)),
    v('ref items/d02', ctx => ctx.db.doc(`${ctx.p}items/d02`)),
    v('geo (-10,20)', () => new GeoPoint(-10, 20)),
    v('geo (0,0)', () => new GeoPoint(0, 0)),
    v('geo (10,-20)', () => new GeoPoint(10, -20)),
    v('[]', () => []),
    v('[null]', () => [null]),
    v('[int 1]', () => [1n]),
    v('[int 1, "a"]', () => [1n, 'a']),
    v('["a"]', () => ['a']),
    v('{}', () => ({})),
    v('{a: int 1}', () => ({ a: 1n })),
    v('{a: int 1, b: int 2}', () => ({ a: 1n, b: 2n })),
    v('{b: int 0}', () => ({ b: 0n })),
  ];
}

// The double 1.0, which the client cannot write (JavaScript has one
// number 1, written as an integer): two increments of 0.5 from integer 0.
const DOUBLE_ONE = 'double 1.0 (0 + 0.5 + 0.5)';

// ---------------------------------------------------------------------------
// Documents. `items/dNN` hold one value each in `v` (in the table's order,
// with a few left without `v`), and fields derived from the index.

const TAGS = ['red', 'green', 'blue', 'x'];

function itemDoc(i, V, ctx) {
  const d = {};
  if (i < V.length) {
    d.v = V[i].make(ctx);
  }
  d.g = ['a', 'b', 'c'][i % 3];
  d.x = BigInt(i % 4);
  if (i % 5 !== 4) {
    d.n = i % 7 === 3 ? i + 0.25 : i % 11 === 5 ? 'not a number' : BigInt(i);
  }
  if (i % 8 !== 7) {
    const t = [TAGS[i % 4], TAGS[(i * 3 + 1) % 4]];
    d.tags = i % 6 === 0 ? [...new Set(t), 1n] : [...new Set(t)];
  }
  if (i % 9 !== 0) {
    d.m = { k: BigInt(i % 3), s: `k${i % 2}` };
  }
  if (i % 10 < 3) {
    d['a b'] = BigInt(i % 10);
  }
  return d;
}

function seedPlan(V, ctx) {
  const P = ctx.p;
  const docs = [];
  const count = V.length + 3; // three documents without `v`
  for (let i = 0; i < count; i++) {
    docs.push([`${P}items/d${String(i).padStart(2, '0')}`, itemDoc(i, V, ctx)]);
  }
  // The subcollection id `sub` at several depths, under documents that
  // exist and one that does not, and a look-alike id that must not match.
  const sub = (pathStr, i) => [pathStr, { ...itemDoc((i * 7) % count, V, ctx), k: `s${i}` }];
  docs.push(
    sub(`${P}items/d01/${P}sub/s1`, 1),
    sub(`${P}items/d01/${P}sub/s2`, 2),
    sub(`${P}items/d02/${P}sub/s1`, 3),
    sub(`${P}items/d02/${P}sub/s1/${P}sub/t1`, 4),
    sub(`${P}items/d02/${P}sub/s1/${P}sub/t2`, 5),
    sub(`${P}items/ghost/${P}sub/s9`, 6),
    sub(`${P}other/o1/${P}sub/s1`, 7),
    sub(`${P}sub/r1`, 8),
    sub(`${P}sub/r2`, 9),
    sub(`${P}items/d03/${P}subx/s1`, 10),
    sub(`${P}items/d03/${P}su/s1`, 11),
  );
  return docs;
}

// Ids the client and Firestore treat specially (numeric `__id7__`), and
// ones that sort by bytes: kept apart so a refusal cannot spoil the rest.
const ODD_IDS = ['__id7__', '__id-3__', '__id12__', 'a b', 'é', 'Z', 'a', '_', '0'];

// ---------------------------------------------------------------------------
// A seeded generator (mulberry32): the same queries on every run.

function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = n => Math.floor(next() * n);
  const pick = xs => xs[int(xs.length)];
  const chance = p => next() < p;
  const some = (xs, lo, hi) => {
    const n = lo + int(hi - lo + 1);
    const out = [];
    for (let i = 0; i < n; i++) {
      out.push(pick(xs));
    }
    return out;
  };
  return { int, pick, chance, some };
}

const OPS = ['==', '!=', '<', '<=', '>', '>=', 'in', 'not-in', 'array-contains', 'array-contains-any'];
const LIST_OPS = new Set(['in', 'not-in', 'array-contains-any']);
const FIELDS = ['v', 'v', 'v', 'n', 'g', 'x', 'm', 'm.k', 'tags', 'a b'];
const ORDER_FIELDS = ['v', 'v', 'n', 'g', 'x', 'm.k', 'tags', 'a b', '__name__'];

// Labels of values to filter with, per field: the mixed table for `v`, and
// values that match something for the others (plus a few of other types).
function valuePool(field, V) {
  switch (field) {
    case 'g': return ['"a"', '"b"', '"c"', '"z"', 'null', 'int 1'];
    case 'tags': return ['"red"', '"green"', '"blue"', '"x"', 'int 1', 'null', '"nope"'];
    case 'n': case 'x': case 'm.k': case 'a b':
      return ['int 0', 'int 1', 'int 2', 'int 3', 'int 7', 'int 20', '1.5', '7.25', '"not a number"', 'null', 'NaN', 'int -5'];
    case 'm': return ['{}', '{a: int 1}', '{k: int 1, s: "k1"}', '{k: int 0, s: "k0"}', 'null'];
    default: return V.map(x => x.label).concat([DOUBLE_ONE]);
  }
}

// Extra values the pools name that are not in the table.
function extraValue(label, F) {
  const strs = { '"b"': 'b', '"c"': 'c', '"z"': 'z', '"red"': 'red', '"green"': 'green', '"blue"': 'blue', '"x"': 'x',
    '"nope"': 'nope', '"not a number"': 'not a number', '"k1"': 'k1', '"d10"': 'd10', '"d20"': 'd20' };
  if (label in strs) {
    return { make: () => strs[label] };
  }
  const ints = /^int (-?\d+)$/.exec(label);
  if (ints) {
    return { make: () => BigInt(ints[1]) };
  }
  const m = {
    '7.25': () => 7.25,
    [DOUBLE_ONE]: () => 1,
    '{k: int 1, s: "k1"}': () => ({ k: 1n, s: 'k1' }),
    '{k: int 0, s: "k0"}': () => ({ k: 0n, s: 'k0' }),
  };
  if (label in m) {
    return { make: m[label] };
  }
  return null;
}

// `state` keeps a composite filter within what Firestore accepts (one
// `!=`/`not-in` per query, `not-in` never beside a disjunction, one array
// operator per disjunction), so that generated queries test results; the
// refusals are fixed cases at the end.
function filterSpec(r, V, state = { composite: false }) {
  const ops = OPS.filter(op => {
    if ((op === '!=' || op === 'not-in') && state.neq) return false;
    if (op === 'not-in' && state.composite) return false;
    if (op.startsWith('array-contains') && state.arr) return false;
    return true;
  });
  const op = r.pick(ops);
  // Array operators mostly where arrays are (`tags`, and some `v`).
  const f = op.startsWith('array-contains') && r.chance(0.8) ? r.pick(['tags', 'tags', 'v']) : r.pick(FIELDS);
  if (op === '!=' || op === 'not-in') state.neq = true;
  if (op.startsWith('array-contains')) state.arr = true;
  const pool = valuePool(f, V);
  const val = LIST_OPS.has(op) ? [...new Set(r.some(pool, 1, 3))] : r.pick(pool);
  // The client allows only `==` and `!=` with null and NaN (it sends them
  // as IS_NULL, IS_NAN and their negations).
  if ((val === 'null' || val === 'NaN') && op !== '==' && op !== '!=') {
    return { f, op: '==', val };
  }
  return { f, op, val };
}

// `__name__` only last (Firestore refuses fields after it), and rarely
// descending: the emulator refuses descending key scans (a fixed case
// below keeps that refusal compared).
function orderSpec(r, n) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const f = r.pick(ORDER_FIELDS.filter(x => !out.some(o => o[0] === x) && (x !== '__name__' || i === n - 1)));
    const desc = r.chance(f === '__name__' ? 0.1 : 0.5);
    out.push([f, desc ? 'desc' : 'asc']);
  }
  return out;
}

const CURSORS = ['startAt', 'startAfter', 'endAt', 'endBefore'];

// A cursor by values (labels, one per order field or fewer) or by the
// snapshot of an item.
function cursorSpec(r, V, order, nItems) {
  const type = r.pick(CURSORS);
  // Without an order only a snapshot can be a cursor (its name).
  if (!order.length || r.chance(0.35)) {
    return { type, doc: `d${String(r.int(nItems)).padStart(2, '0')}` };
  }
  const n = 1 + r.int(Math.max(1, order.length));
  const values = [];
  for (let i = 0; i < n && i < Math.max(1, order.length); i++) {
    const f = order[i]?.[0] ?? 'v';
    values.push(f === '__name__' ? `"d${String(r.int(nItems)).padStart(2, '0')}"` : r.pick(valuePool(f, V)));
  }
  return { type, values };
}

function generate(V, count, nItems) {
  const r = rng(0x15c0ffee);
  const specs = [];
  const add = spec => specs.push(spec);
  const families = [
    // One field filter, sometimes ordered or limited: implicit ordering.
    [0.22, () => {
      const s = { base: 'items', where: filterSpec(r, V) };
      if (r.chance(0.3)) s.orderBy = orderSpec(r, 1);
      if (r.chance(0.3)) s.limit = 1 + r.int(5);
      return s;
    }],
    // AND of filters (several inequality fields included).
    [0.1, () => {
      const st = { composite: true };
      const parts = [filterSpec(r, V, st), filterSpec(r, V, st)];
      if (r.chance(0.3)) parts.push(filterSpec(r, V, st));
      return { base: 'items', where: { and: parts }, ...(r.chance(0.3) ? { limit: 1 + r.int(8) } : {}) };
    }],
    // OR of filters, with an AND inside sometimes.
    [0.1, () => {
      const st = { composite: true };
      const parts = [filterSpec(r, V, st), filterSpec(r, V, st)];
      if (r.chance(0.4)) parts.push({ and: [filterSpec(r, V, st), filterSpec(r, V, st)] });
      const s = { base: 'items', where: { or: parts } };
      if (r.chance(0.3)) s.orderBy = orderSpec(r, 1);
      return s;
    }],
    // Orders with offset and limit.
    [0.1, () => {
      const s = { base: 'items', orderBy: orderSpec(r, 1 + r.int(3)) };
      if (r.chance(0.5)) s.offset = r.int(12);
      if (r.chance(0.6)) s.limit = 1 + r.int(10);
      return s;
    }],
    // Cursors by values and by snapshot.
    [0.16, () => {
      const orderBy = r.chance(0.2) ? [] : orderSpec(r, 1 + r.int(2));
      const s = { base: 'items', orderBy, cursors: [cursorSpec(r, V, orderBy, nItems)] };
      if (r.chance(0.4)) s.cursors.push(cursorSpec(r, V, orderBy, nItems));
      if (r.chance(0.3)) s.where = filterSpec(r, V);
      if (r.chance(0.3)) s.limit = 1 + r.int(6);
      if (r.chance(0.2) && orderBy.length) {
        delete s.limit;
        s.limitToLast = 1 + r.int(6);
      }
      return s;
    }],
    // limitToLast (the client reverses the order and the result).
    [0.05, () => ({ base: 'items', orderBy: orderSpec(r, 1 + r.int(2)), limitToLast: 1 + r.int(6),
      ...(r.chance(0.5) ? { where: filterSpec(r, V) } : {}) })],
    // Projections.
    [0.04, () => ({ base: 'items', select: r.some(['v', 'g', 'm.k', 'm', 'nope', 'a b', 'tags'], 0, 3),
      orderBy: orderSpec(r, 1), limit: 1 + r.int(8) })],
    // Collection groups.
    [0.1, () => {
      const s = { base: 'group' };
      if (r.chance(0.6)) s.where = r.chance(0.7) ? filterSpec(r, V) : { f: 'g', op: '==', val: '"a"' };
      if (r.chance(0.5)) s.orderBy = orderSpec(r, 1);
      if (r.chance(0.3)) s.limit = 1 + r.int(5);
      if (r.chance(0.2)) s.limitToLast = 1 + r.int(4), s.orderBy = s.orderBy ?? [['__name__', 'asc']], delete s.limit;
      return s;
    }],
    // Aggregations, one or several at once.
    [0.13, () => {
      const fields = ['n', 'v', 'x', 'm.k', 'g', 'nope'];
      const aggs = [];
      const k = 1 + r.int(3);
      for (let i = 0; i < k; i++) {
        const kind = r.pick(['count', 'sum', 'avg']);
        aggs.push(kind === 'count' ? ['count'] : [kind, r.pick(fields)]);
      }
      const s = { base: r.chance(0.2) ? 'group' : 'items', agg: aggs };
      if (r.chance(0.5)) s.where = filterSpec(r, V);
      if (r.chance(0.25)) s.limit = 1 + r.int(10);
      return s;
    }],
  ];
  const total = families.reduce((a, [w]) => a + w, 0);
  while (specs.length < count) {
    let x = r.int(1e6) / 1e6 * total;
    let fam = families[families.length - 1][1];
    for (const [w, f] of families) {
      if (x < w) { fam = f; break; }
      x -= w;
    }
    add(fam());
  }
  // Fixed cases the generator would reach only by chance.
  const fixed = [
    { base: 'items', where: { f: '__name__', op: '>', val: '"d20"' }, limit: 5 },
    { base: 'items', where: { f: '__name__', op: 'in', val: ['"d10"', '"d01"', '"d20"'] } },
    { base: 'items', where: { f: '__name__', op: 'not-in', val: ['"d10"', '"d01"'] }, limit: 4 },
    { base: 'items', orderBy: [['__name__', 'desc']], limit: 3 },
    { base: 'items', where: { f: 'v', op: '==', val: 'null' } },
    { base: 'items', where: { f: 'v', op: '!=', val: 'null' }, limit: 5 },
    { base: 'items', where: { f: 'v', op: '==', val: 'NaN' } },
    { base: 'items', where: { f: 'v', op: '!=', val: 'NaN' }, limit: 5 },
    { base: 'items', where: { f: 'v', op: '==', val: 'int 1' } },
    { base: 'items', where: { f: 'v', op: '==', val: DOUBLE_ONE } },
    { base: 'items', where: { f: 'v', op: 'in', val: ['int 1', '-0.0', '"a"'] } },
    { base: 'items', where: { f: 'v', op: '>=', val: 'int 0' }, orderBy: [['v', 'desc']] },
    { base: 'items', where: { f: 'v', op: '<', val: '""' }, orderBy: [['v', 'asc']] },
    { base: 'items', orderBy: [['v', 'asc']] },
    { base: 'items', orderBy: [['v', 'desc']] },
    { base: 'items', where: { f: 'n', op: '>', val: 'int 3' } },
    { base: 'items', where: { f: 'tags', op: 'array-contains-any', val: ['"red"', 'int 1'] } },
    { base: 'items', where: { and: [{ f: 'v', op: '>', val: 'int 0' }, { f: 'n', op: '<', val: 'int 30' }] } },
    { base: 'items', where: { or: [{ f: 'g', op: '==', val: '"a"' }, { f: 'v', op: '==', val: 'null' }] }, limit: 6 },
    { base: 'items', agg: [['count'], ['sum', 'n'], ['avg', 'n']] },
    { base: 'items', agg: [['sum', 'v'], ['avg', 'v']] },
    { base: 'items', agg: [['sum', 'x'], ['avg', 'x'], ['count']] },
    { base: 'items', where: { f: 'g', op: '==', val: '"c"' }, agg: [['sum', 'n'], ['avg', 'n']] },
    { base: 'items', where: { f: 'v', op: '>', val: 'int 2' }, agg: [['sum', 'v']], limit: 3 },
    { base: 'group', agg: [['count'], ['sum', 'n'], ['avg', 'n']] },
    { base: 'group', orderBy: [['__name__', 'desc']] },
    { base: 'group', where: { f: '__name__', op: '>=', val: 'ref items/d02' }, orderBy: [['__name__', 'asc']] },
    { base: 'items', select: [], orderBy: [['v', 'asc']], limit: 4 },
    { base: 'items', orderBy: [['v', 'asc']], offset: 40 },
    { base: 'items', orderBy: [['g', 'asc'], ['x', 'desc']], cursors: [{ type: 'startAfter', values: ['"a"', 'int 2'] }], limit: 6 },
    { base: 'items', orderBy: [['v', 'asc']], cursors: [{ type: 'startAt', doc: 'd12' }, { type: 'endBefore', doc: 'd20' }] },
    { base: 'items', orderBy: [['v', 'desc']], cursors: [{ type: 'startAfter', doc: 'd30' }], limitToLast: 3 },
    // Refused by the client or by Firestore: must be refused alike.
    { base: 'items', where: { f: 'v', op: 'in', val: [] } },
    { base: 'items', orderBy: [['v', 'asc']], cursors: [{ type: 'startAt', values: ['int 1', 'int 2', 'int 3'] }] },
    { base: 'items', where: { f: 'tags', op: 'array-contains-any', val: ['"red"'] }, orderBy: [['__name__', 'asc']], cursors: [{ type: 'startAt', values: ['"no/such/sub/doc"'] }] },
    { base: 'items', where: { and: [{ f: 'v', op: 'not-in', val: ['int 1'] }, { f: 'g', op: '!=', val: '"a"' }] } },
    { base: 'items', where: { and: [{ f: 'tags', op: 'array-contains', val: '"red"' }, { f: 'tags', op: 'array-contains-any', val: ['"x"'] }] } },
    // The all-descendants queries recursiveDelete sends (kindless, names only).
    { base: 'descendants:items/d02' },
    { base: 'descendants:items/d01/sub' },
    { base: 'descendants:items' },
    { base: 'descendants:items/ghost' },
    // Ids Firestore treats specially, ordered by name.
    { base: 'names', orderBy: [['__name__', 'asc']] },
    { base: 'names', orderBy: [['__name__', 'desc']], limit: 4 },
    { base: 'names', where: { f: '__name__', op: '>', val: '"__id12__"' } },
  ];
  return [...specs, ...fixed];
}

// ---------------------------------------------------------------------------
// Specs to descriptions and to queries.

function describeValue(val) {
  return Array.isArray(val) ? `[${val.join(', ')}]` : val;
}

function describeFilter(w) {
  if (w.and) return `(${w.and.map(describeFilter).join(' AND ')})`;
  if (w.or) return `(${w.or.map(describeFilter).join(' OR ')})`;
  return `${w.f} ${w.op} ${describeValue(w.val)}`;
}

function describe(s) {
  const parts = [s.base === 'group' ? 'group(sub)' : s.base];
  if (s.where) parts.push(`where ${describeFilter(s.where)}`);
  if (s.orderBy?.length) parts.push(`orderBy ${s.orderBy.map(([f, d]) => `${f} ${d}`).join(', ')}`);
  for (const c of s.cursors ?? []) {
    parts.push(c.doc ? `${c.type}(snapshot items/${c.doc})` : `${c.type}(${c.values.join(', ')})`);
  }
  if (s.offset !== undefined) parts.push(`offset ${s.offset}`);
  if (s.limit !== undefined) parts.push(`limit ${s.limit}`);
  if (s.limitToLast !== undefined) parts.push(`limitToLast ${s.limitToLast}`);
  if (s.select) parts.push(`select(${s.select.join(', ')})`);
  if (s.agg) parts.push(`aggregate ${s.agg.map(a => (a[1] ? `${a[0]}(${a[1]})` : a[0])).join(', ')}`);
  return parts.join(' ');
}

function build(s, ctx) {
  const { F, db, p, values, snapshots } = ctx;
  const { FieldPath, Filter, AggregateField, Query } = F;
  const fieldOf = f => (f === '__name__' ? FieldPath.documentId() : new FieldPath(...f.split('.')));
  const valueOf = (label, f) => {
    // `__name__` compares with document names: an id in this collection,
    // a path, or a reference.
    if (f === '__name__' && label.startsWith('"')) {
      const id = JSON.parse(label);
      return s.base === 'group' ? db.doc(`${p}items/${id}`) : id;
    }
    const entry = values.get(label) ?? extraValue(label, F);
    if (!entry) throw new Error(`no value labelled \`${label}\``);
    return entry.make(ctx);
  };
  const filterOf = w => {
    if (w.and) return Filter.and(...w.and.map(filterOf));
    if (w.or) return Filter.or(...w.or.map(filterOf));
    const val = Array.isArray(w.val) ? w.val.map(l => valueOf(l, w.f)) : valueOf(w.val, w.f);
    return Filter.where(fieldOf(w.f), w.op, val);
  };
  if (s.base.startsWith('descendants:')) {
    // As RecursiveDelete.getAllDescendants builds it (internal API).
    const { QueryOptions } = require(path.join(path.dirname(require.resolve('@google-cloud/firestore')), 'reference', 'query-options.js'));
    const { REFERENCE_NAME_MIN_ID } = require(path.join(path.dirname(require.resolve('@google-cloud/firestore')), 'recursive-delete.js'));
    const rel = s.base.slice('descendants:'.length).split('/').map((seg, i) => (i % 2 === 0 ? `${p}${seg}` : seg)).join('/');
    const isCollection = rel.split('/').length % 2 === 1;
    const ref = isCollection ? db.collection(rel) : db.doc(rel);
    const parentPath = isCollection ? ref._resourcePath.popLast() : ref._resourcePath;
    const collectionId = isCollection ? ref.id : ref.parent.id;
    let q = new Query(db, QueryOptions.forKindlessAllDescendants(parentPath, collectionId, false));
    q = q.select(FieldPath.documentId()).limit(1000);
    if (isCollection) {
      q = q.where(FieldPath.documentId(), '>=', `${collectionId}/${REFERENCE_NAME_MIN_ID}`)
        .where(FieldPath.documentId(), '<', `${collectionId}\u0000/${REFERENCE_NAME_MIN_ID}`);
    }
    return q;
  }
  let q = s.base === 'group' ? db.collectionGroup(`${p}sub`) : db.collection(`${p}${s.base}`);
  if (s.where) q = q.where(filterOf(s.where));
  for (const [f, d] of s.orderBy ?? []) q = q.orderBy(fieldOf(f), d);
  for (const c of s.cursors ?? []) {
    const args = c.doc ? [snapshots.get(c.doc)] : c.values.map((l, i) => valueOf(l, s.orderBy?.[i]?.[0] ?? 'v'));
    q = q[c.type](...args);
  }
  if (s.offset !== undefined) q = q.offset(s.offset);
  if (s.limit !== undefined) q = q.limit(s.limit);
  if (s.limitToLast !== undefined) q = q.limitToLast(s.limitToLast);
  if (s.select) q = q.select(...s.select.map(fieldOf));
  if (s.agg) {
    const spec = {};
    s.agg.forEach((a, i) => {
      const alias = `a${i}_${a[0]}${a[1] ? `_${a[1].replace(/\W/g, '_')}` : ''}`;
      spec[alias] = a[0] === 'count' ? AggregateField.count()
        : a[0] === 'sum' ? AggregateField.sum(fieldOf(a[1])) : AggregateField.average(fieldOf(a[1]));
    });
    return q.aggregate(spec);
  }
  return q;
}

// ---------------------------------------------------------------------------
// Typed, comparable JSON of what the client read.

function makeNormalizer(prefix, F) {
  const unprefix = s => s.split(prefix).join('');
  const norm = v => {
    if (v === null || v === undefined) return null;
    if (typeof v === 'boolean') return v;
    if (typeof v === 'bigint') return { int: v.toString() };
    if (typeof v === 'number') return { double: Object.is(v, -0) ? '-0' : String(v) };
    if (typeof v === 'string') return { str: v };
    if (Buffer.isBuffer(v) || v instanceof Uint8Array) return { bytes: Buffer.from(v).toString('base64') };
    if (Array.isArray(v)) return { array: v.map(norm) };
    if (v instanceof F.Timestamp) return { ts: `${v.seconds}.${String(v.nanoseconds).padStart(9, '0')}` };
    if (v instanceof F.GeoPoint) return { geo: [v.latitude, v.longitude] };
    if (v instanceof F.DocumentReference) return { ref: unprefix(v.path) };
    const out = {};
    for (const k of Object.keys(v).sort()) out[k] = norm(v[k]);
    return { map: out };
  };
  return { norm, unprefix };
}

async function runQuery(q, ctx) {
  const snap = await q.get();
  if (snap.docs === undefined) {
    // An aggregate query snapshot.
    const data = snap.data();
    const out = {};
    for (const k of Object.keys(data).sort()) out[k] = ctx.norm(data[k]);
    return { aggregate: out };
  }
  return { docs: snap.docs.map(d => ({ path: ctx.unprefix(d.ref.path), data: ctx.norm(d.data()).map })) };
}

async function seed(ctx, V) {
  const { db, p, F } = ctx;
  const steps = [];
  const step = async (name, fn) => {
    try {
      await withTimeout(Promise.resolve().then(fn), ctx.timeout, `seed step \`${name}\``);
      steps.push({ step: name, ok: true });
    } catch (err) {
      log(`seed step ${name} failed:`, err?.stack || err);
      steps.push({ step: name, ok: false, error: errorOf(err) });
    }
  };
  const plan = seedPlan(V, ctx);
  await step('items', async () => {
    const batch = db.batch();
    for (const [docPath, data] of plan) batch.set(db.doc(docPath), data);
    await batch.commit();
  });
  // The double 1.0 in item V.length (a document without `v` otherwise).
  const one = db.doc(`${p}items/d${String(V.length).padStart(2, '0')}`);
  await step('double_one', async () => {
    await one.update({ v: F.FieldValue.increment(0) });
    await one.update({ v: F.FieldValue.increment(0.5) });
    await one.update({ v: F.FieldValue.increment(0.5) });
    const got = (await one.get()).get('v');
    if (typeof got !== 'number' || got !== 1) throw new Error(`expected the double 1.0, read ${String(got)} (${typeof got})`);
  });
  await step('names', async () => {
    const batch = db.batch();
    ODD_IDS.forEach((id, i) => batch.set(db.collection(`${p}names`).doc(id), { i: BigInt(i) }));
    await batch.commit();
  });
  await step('snapshots', async () => {
    const refs = plan.filter(([d]) => d.startsWith(`${p}items/`) && d.split('/').length === 2).map(([d]) => db.doc(d));
    const snaps = await db.getAll(...refs);
    for (const s of snaps) ctx.snapshots.set(s.id, s);
  });
  return steps;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const db = makeClient(opts);
  const F = require('@google-cloud/firestore');
  const V = valueTable(F);
  const { norm, unprefix } = makeNormalizer(opts.prefix, F);
  const ctx = {
    F, db, p: opts.prefix, norm, unprefix, snapshots: new Map(),
    values: new Map(V.map(v => [v.label, v])),
    timeout: Number(process.env.CONFORMANCE_QUERY_TIMEOUT_MS || 20000),
  };
  const seedSteps = await seed(ctx, V);
  const nItems = V.length + 3;
  const specs = generate(V, opts.count, nItems);
  // Queries only read, so they run a few at a time (the emulator answers
  // a refused query over gRPC only after several seconds); the output
  // keeps the generated order.
  const jobs = specs
    .map((s, i) => ({ s, id: `q${String(i + 1).padStart(3, '0')}` }))
    .filter(j => !opts.only.size || opts.only.has(j.id));
  const queries = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const k = next++;
      const { s, id } = jobs[k];
      const desc = describe(s);
      const t0 = Date.now();
      try {
        const result = await withTimeout(Promise.resolve().then(() => runQuery(build(s, ctx), ctx)), ctx.timeout, `query ${id}`);
        queries[k] = { id, desc, result };
      } catch (err) {
        const error = errorOf(err);
        if (error.code !== 'CLIENT') log(`${id} (${desc}) failed: ${error.code}: ${error.message}`);
        queries[k] = { id, desc, error };
      }
      if (process.env.CONFORMANCE_TRACE) log(`${id} ${Date.now() - t0} ms`);
    }
  };
  const inFlight = Number(process.env.CONFORMANCE_IN_FLIGHT || 8);
  await Promise.all(Array.from({ length: inFlight }, worker));
  // Written to the end before the process exits: to a pipe, a large
  // write is asynchronous and process.exit would cut it at 64 KiB.
  const text = JSON.stringify({ client: 'node', mode: opts.mode, seed: seedSteps, queries }) + '\n';
  await new Promise((resolve, reject) => process.stdout.write(text, e => (e ? reject(e) : resolve())));
  await withTimeout(db.terminate(), 5000, 'terminate').catch(e => log('terminate:', e?.message));
}

main().then(
  () => process.exit(0),
  err => {
    log(err?.stack || err);
    process.exit(2);
  },
);
