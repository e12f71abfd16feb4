// FAKE gateway, test-only: a stand-in for Latchkey's Firestore front end that
// checks the credential the official clients send and forwards to the
// Firestore emulator. It exists to prove that the `latchkey-*` modes of
// scenario.mjs and ../firestore-py/scenario.py carry exactly
// `authorization: Bearer <LATCHKEY_TOKEN>` on every call (never the
// emulator's `Bearer owner`), over every transport they use, before Latchkey
// itself is pointed at them. It is not Latchkey and decides nothing else.
//
//   node fake-gateway.mjs --upstream 127.0.0.1:PORT --token TOKEN [--tls]
//
// Prints one JSON line on stdout once listening:
//   {"plain": "127.0.0.1:P1", "tls": "localhost:P2" | null, "ca_file": PATH | null}
// `plain` serves cleartext HTTP/2 (gRPC, prior knowledge) and HTTP/1.1 (REST)
// on one port; `tls` serves both over TLS (ALPN h2 and http/1.1) with a
// certificate for localhost and 127.0.0.1 signed by a throw-away CA whose
// certificate is `ca_file` (made with the openssl command). A call without
// the exact bearer token is refused (gRPC UNAUTHENTICATED, or HTTP 401) and
// counted; an accepted one goes to the emulator with `Bearer owner`. Exits
// when its stdin closes, printing as its last stderr line
// {"accepted": N, "refused": N, "refused_auth": [the first 20 refused values]}.

import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => {
    if (a === '--tls') acc.push(['tls', true]);
    else if (a.startsWith('--') && all[i + 1] !== undefined) acc.push([a.slice(2), all[i + 1]]);
    return acc;
  }, []),
);
if (!args.upstream || !args.token) {
  console.error('usage: node fake-gateway.mjs --upstream HOST:PORT --token TOKEN [--tls]');
  process.exit(2);
}
const expected = `Bearer ${args.token}`;
const stats = { accepted: 0, refused: 0, refused_auth: [] };

// Connection-level headers that HTTP/2 forbids or that must not be relayed.
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'http2-settings']);

// `raw` is the flat [name, value, ...] list as received, so a second
// authorization header cannot hide behind the first.
function authorized(raw) {
  const values = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    if (String(raw[i]).toLowerCase() === 'authorization') values.push(String(raw[i + 1]));
  }
  const v = values.length === 1 ? values[0] : values;
  const ok = v === expected;
  if (ok) {
    stats.accepted++;
  } else {
    stats.refused++;
    if (stats.refused_auth.length < 20) {
      stats.refused_auth.push(values.length === 0 ? '<none>' : values.join(' | '));
    }
  }
  return ok;
}

// ---- HTTP/2 (gRPC) ---------------------------------------------------------

let upstream2 = null;
function upstreamSession() {
  if (!upstream2 || upstream2.closed || upstream2.destroyed) {
    upstream2 = http2.connect(`http://${args.upstream}`);
    upstream2.on('error', e => console.error('[fake-gateway] upstream h2:', e.message));
  }
  return upstream2;
}

function onStream(stream, headers, _flags, rawHeaders) {
  if (!authorized(rawHeaders ?? Object.entries(headers).flat())) {
    stream.respond(
      { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '16', 'grpc-message': 'fake gateway: wrong or missing bearer token' },
      { endStream: true },
    );
    return;
  }
  const out = {};
  for (const [k, v] of Object.entries(headers)) {
    if (!HOP.has(k) && k !== ':scheme' && k !== ':authority') out[k] = v;
  }
  out.authorization = 'Bearer owner';
  const req = upstreamSession().request(out);
  stream.pipe(req);
  req.on('response', h => {
    const resp = {};
    for (const [k, v] of Object.entries(h)) if (!HOP.has(k)) resp[k] = v;
    if ('grpc-status' in resp) {
      stream.respond(resp, { endStream: true });
    } else {
      stream.respond(resp, { waitForTrailers: true });
      req.pipe(stream);
    }
  });
  let trailers = {};
  req.on('trailers', t => {
    trailers = t;
  });
  stream.on('wantTrailers', () => stream.sendTrailers(trailers));
  req.on('error', () => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
  stream.on('error', () => req.close(http2.constants.NGHTTP2_CANCEL));
  stream.on('close', () => {
    if (!req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
  });
}

// ---- HTTP/1.1 (REST) -------------------------------------------------------

function onRequest(req, res) {
  if (!authorized(req.rawHeaders)) {
    res.writeHead(401, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: { code: 401, message: 'fake gateway: wrong or missing bearer token', status: 'UNAUTHENTICATED' } }));
    return;
  }
  const [host, port] = [args.upstream.replace(/:\d+$/, ''), Number(args.upstream.split(':').pop())];
  const headers = { ...req.headers, authorization: 'Bearer owner', host: args.upstream };
  const up = http.request({ host, port, method: req.method, path: req.url, headers }, upRes => {
    res.writeHead(upRes.statusCode, upRes.headers);
    upRes.pipe(res);
  });
  up.on('error', e => {
    res.writeHead(502);
    res.end(String(e.message));
  });
  req.pipe(up);
}

// ---- listeners -------------------------------------------------------------

const h2plain = http2.createServer();
h2plain.on('stream', onStream);
const h1plain = http.createServer(onRequest);
const PREFACE = Buffer.from('PRI * HTTP/2.0');
const plain = net.createServer(socket => {
  socket.once('readable', function sniff() {
    const head = socket.read(PREFACE.length) ?? socket.read();
    if (head === null) {
      socket.once('readable', sniff);
      return;
    }
    socket.unshift(head);
    (head.equals(PREFACE) ? h2plain : h1plain).emit('connection', socket);
  });
});

function makeCerts() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'latchkey-fake-gateway-'));
  const f = n => path.join(dir, n);
  const ssl = a => execFileSync('openssl', a, { stdio: ['ignore', 'ignore', 'pipe'] });
  ssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', '/CN=latchkey fake gateway test CA', '-keyout', f('ca.key'), '-out', f('ca.pem')]);
  ssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=localhost',
    '-keyout', f('leaf.key'), '-out', f('leaf.csr')]);
  fs.writeFileSync(f('ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  ssl(['x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
    '-days', '2', '-extfile', f('ext.cnf'), '-out', f('leaf.pem')]);
  return { dir, ca: f('ca.pem'), key: fs.readFileSync(f('leaf.key')), cert: fs.readFileSync(f('leaf.pem')) };
}

const listen = server => new Promise(resolve => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));

const plainPort = await listen(plain);
let tlsAddr = null;
let certs = null;
if (args.tls) {
  certs = makeCerts();
  // TLS terminates here; ALPN picks which of the cleartext servers gets the
  // decrypted connection.
  const secure = tls.createServer({ key: certs.key, cert: certs.cert, ALPNProtocols: ['h2', 'http/1.1'] }, socket =>
    (socket.alpnProtocol === 'h2' ? h2plain : h1plain).emit('connection', socket),
  );
  tlsAddr = `localhost:${await listen(secure)}`;
}
process.stdout.write(JSON.stringify({ plain: `127.0.0.1:${plainPort}`, tls: tlsAddr, ca_file: certs?.ca ?? null }) + '\n');

function shutdown() {
  console.error(JSON.stringify(stats));
  if (certs) fs.rmSync(certs.dir, { recursive: true, force: true });
  process.exit(0);
}
process.stdin.on('end', shutdown);
process.stdin.on('close', shutdown);
process.stdin.resume();
process.on('SIGTERM', shutdown);
