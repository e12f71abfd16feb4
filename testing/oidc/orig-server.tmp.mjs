// Test-only OIDC provider for Latchkey's integration tests.
//
// Wraps the real `oidc-provider` package so that discovery, the JWKS endpoint
// and ID token signing are exactly what a production OIDC issuer serves.
// Adds two test-only endpoints (never expose this server beyond loopback):
//
//   POST /test/mint  {alg, sub, aud?, claims?, expires_in?}  -> {token}
//   GET  /test/keys                                          -> {keys: [private JWKs]}
//
// Usage: node server.mjs [--port N] [--exit-on-stdin-close]
//        (or PORT=N; 0 or unset = pick a free port)
// Prints one JSON line `{"issuer":"http://127.0.0.1:PORT","port":PORT}` on
// stdout once listening. Stops on SIGTERM/SIGINT or when stdin closes.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const ALGS = ['RS256', 'PS256', 'ES256', 'ES384', 'EdDSA'];

function argPort() {
  const i = process.argv.indexOf('--port');
  if (i !== -1 && process.argv[i + 1] !== undefined) return Number(process.argv[i + 1]);
  if (process.env.PORT) return Number(process.env.PORT);
  return 0;
}

function privateJwk(type, options, extra = {}) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  const jwk = privateKey.export({ format: 'jwk' });
  const pub = { ...jwk };
  for (const k of ['d', 'p', 'q', 'dp', 'dq', 'qi']) delete pub[k];
  return { ...jwk, ...extra, kid: thumbprint(pub), use: 'sig' };
}

// RFC 7638 thumbprint, the same kid derivation oidc-provider uses.
function thumbprint(jwk) {
  let members;
  if (jwk.kty === 'RSA') members = { e: jwk.e, kty: 'RSA', n: jwk.n };
  else if (jwk.kty === 'EC') members = { crv: jwk.crv, kty: 'EC', x: jwk.x, y: jwk.y };
  else members = { crv: jwk.crv, kty: 'OKP', x: jwk.x };
  return crypto.createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

// One RSA key serves RS256 and PS256 (no `alg` member, as most issuers do).
const keys = [
  privateJwk('rsa', { modulusLength: 2048 }),
  privateJwk('ec', { namedCurve: 'P-256' }),
  privateJwk('ec', { namedCurve: 'P-384' }),
  privateJwk('ed25519', {}),
];

const clientId = (alg) => `latchkey-${alg.toLowerCase()}`;

const clients = ALGS.map((alg) => ({
  client_id: clientId(alg),
  client_secret: 'not-used-by-latchkey-tests-0000000000',
  redirect_uris: ['http://127.0.0.1/callback'],
  id_token_signed_response_alg: alg,
}));

const port = argPort();
const server = http.createServer();
await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
const actualPort = server.address().port;
const issuer = `http://127.0.0.1:${actualPort}`;

const provider = new Provider(issuer, {
  jwks: { keys },
  clients,
  enabledJWA: { idTokenSigningAlgValues: ALGS },
  // Quiet start-up: this is a throwaway test issuer.
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  features: { devInteractions: { enabled: false } },
});

async function readJson(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 1024 * 1024) throw new Error('body too large');
    chunks.push(chunk);
  }
  return chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
}

async function mint(body) {
  const alg = body.alg || 'RS256';
  if (!ALGS.includes(alg)) throw new Error(`unsupported alg ${alg}`);
  const id = body.aud || clientId(alg);
  const client = await provider.Client.find(id);
  if (!client) throw new Error(`unknown client/audience ${id}; use one of ${ALGS.map(clientId).join(', ')}`);
  if (client.idTokenSignedResponseAlg !== alg) {
    throw new Error(`client ${id} signs with ${client.idTokenSignedResponseAlg}, not ${alg}`);
  }
  const token = new provider.IdToken({ sub: body.sub }, { client });
  token.scope = 'openid';
  for (const [k, v] of Object.entries(body.claims || {})) token.set(k, v);
  const now = Math.floor(Date.now() / 1000);
  const expiresIn = body.expires_in ?? 600;
  // `issue` treats a zero lifetime as "use the default"; keep it non-zero.
  const expiresAt = now + (expiresIn === 0 ? -1 : expiresIn);
  return token.issue({ use: 'idtoken', expiresAt });
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/test/mint' && ctx.method === 'POST') {
    try {
      const body = await readJson(ctx.req);
      ctx.body = { token: await mint(body) };
    } catch (err) {
      ctx.status = 400;
      ctx.body = { error: String(err && err.message ? err.message : err) };
    }
    return;
  }
  if (ctx.path === '/test/keys' && ctx.method === 'GET') {
    ctx.body = { keys };
    return;
  }
  await next();
});

server.on('request', provider.callback());

process.stdout.write(`${JSON.stringify({ issuer, port: actualPort })}\n`);

const stop = () => {
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (process.argv.includes('--exit-on-stdin-close')) {
  // Test runners pass this so an orphaned harness dies with its parent.
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
}
