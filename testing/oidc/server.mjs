// Test-only OIDC provider for Latchkey's integration tests.
//
// Wraps the real `oidc-provider` package so that discovery, the JWKS endpoint,
// ID token signing and the interactive flows are exactly what a production
// OpenID Connect issuer serves. NEVER expose this server beyond loopback: it
// hands out private keys, accepts any password and registers any client.
//
// What a real IdP offers, all on (endpoints relative to the issuer; discovery
// at /.well-known/openid-configuration lists them):
//
//   /auth                   authorization endpoint, code flow only, PKCE (S256)
//                           required for every client
//   /interaction/:uid       oidc-provider's built-in login form (devInteractions:
//                           any login name, any password) and consent page
//   /token                  authorization_code, refresh_token, device_code grants
//   /device/auth            device authorization (RFC 8628); /device is the
//                           verification page where a browser enters the user code
//   /session/end            RP-initiated logout (end_session_endpoint), asks
//                           "Yes, sign me out"; post_logout_redirect_uri must be
//                           registered for the client
//   /token/revocation       token revocation (RFC 7009); revoking a refresh token
//                           revokes its whole grant
//   /token/introspection    token introspection (RFC 7662)
//   /reg                    dynamic client registration (RFC 7591), open: no
//                           initial access token
//   /me                     userinfo
//   /jwks                   public signing keys
//
// Accounts: the login name is the `sub`. Claims by scope: `profile` gives
// `name` and `preferred_username` (= login), `email` gives `email`
// (`<login>@example.com`) and `email_verified`, `groups` gives `groups` from
// ACCOUNTS below (anyone not listed is in ["developers"]). ID tokens carry the
// claims of the granted scopes (conformIdTokenClaims: false). Refresh tokens
// go to every client whose grant_types include `refresh_token`; they outlive
// the provider's browser session only when `offline_access` was granted, which
// oidc-provider (per OIDC Core) keeps only when the request has prompt=consent.
// Native clients (application_type "native") with a loopback redirect URI such
// as http://127.0.0.1/callback accept any port (RFC 8252 section 7.3).
//
// Test-only endpoints (not part of any standard):
//
//   POST /test/mint  {alg, sub, aud?, claims?, expires_in?}  -> {token}
//        a real ID token for a static client, without any flow
//   GET  /test/keys                                          -> {keys: [private JWKs]}
//   GET  /test/accounts                                      -> {accounts: {login: {...}}}
//   POST /test/accounts {sub, groups?, name?, email?}        -> {account}
//        sets (replaces) the claims of one login name for tokens issued from now on
//
// Static clients (besides those registered at /reg):
//   latchkey-rs256, -ps256, -es256, -es384, -eddsa  confidential (secret STATIC_SECRET
//       below), native, redirect http://127.0.0.1/callback (any port), signing
//       ID tokens with that algorithm; grants: code, refresh, device
//   latchkey-cli   public (no secret), native, same redirects and grants: what
//       `latchkey login` is, an installed app
//
// Usage: node server.mjs [--port N] [--id-token-ttl SECONDS] [--exit-on-stdin-close]
//        (or PORT=N; 0 or unset = pick a free port). --id-token-ttl sets the
//        lifetime of ID tokens and access tokens (default 3600), so tests can
//        watch a session renew.
// Prints one JSON line `{"issuer":"http://127.0.0.1:PORT","port":PORT}` on
// stdout once listening. Stops on SIGTERM/SIGINT or when stdin closes.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

import Provider from 'oidc-provider';

const ALGS = ['RS256', 'PS256', 'ES256', 'ES384', 'EdDSA'];
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const STATIC_SECRET = 'not-used-by-latchkey-tests-0000000000';

function argValue(name) {
  const i = process.argv.indexOf(name);
  return i !== -1 ? process.argv[i + 1] : undefined;
}

function argPort() {
  const v = argValue('--port') ?? process.env.PORT;
  return v === undefined ? 0 : Number(v);
}

function argSeconds(name, fallback) {
  const v = argValue(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) {
    process.stderr.write(`${name} \`${v}\` is not a whole number of seconds above zero\n`);
    process.exit(2);
  }
  return n;
}

const ID_TOKEN_TTL = argSeconds('--id-token-ttl', 3600);

function privateJwk(type, options, extra = {}) {
  // The key leaves the generator as DER and is imported anew before the JWK
  // export: Node 20 can deadlock exporting the generator's own key object
  // (a garbage collection during the export runs the generator job's
  // destructor, which waits for the lock the export holds), which hung
  // about one start in thirty on a loaded machine.
  const { privateKey: der } = crypto.generateKeyPairSync(type, {
    ...options,
    publicKeyEncoding: { type: 'spki', format: 'der' },
    privateKeyEncoding: { type: 'pkcs8', format: 'der' },
  });
  const jwk = crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ format: 'jwk' });
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

// Loopback redirects: as native clients, any port matches (RFC 8252).
const LOOPBACK = {
  application_type: 'native',
  redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback'],
  post_logout_redirect_uris: ['http://127.0.0.1/', 'http://localhost/'],
  grant_types: ['authorization_code', 'refresh_token', DEVICE_GRANT],
  response_types: ['code'],
};

const clients = [
  ...ALGS.map((alg) => ({
    ...LOOPBACK,
    client_id: clientId(alg),
    client_secret: STATIC_SECRET,
    id_token_signed_response_alg: alg,
  })),
  { ...LOOPBACK, client_id: 'latchkey-cli', token_endpoint_auth_method: 'none' },
];

// The groups of known people; anyone else is in DEFAULT_GROUPS.
// /test/accounts changes or adds entries while the server runs.
const DEFAULT_GROUPS = ['developers'];
const ACCOUNTS = new Map([
  ['alice', { groups: ['developers'] }],
  ['maria', { groups: ['maintainers', 'developers'] }],
  ['mallory', { groups: [] }],
]);

function accountClaims(login) {
  const entry = ACCOUNTS.get(login) ?? {};
  return {
    sub: login,
    preferred_username: login,
    name: entry.name ?? login.charAt(0).toUpperCase() + login.slice(1),
    email: entry.email ?? `${login}@example.com`,
    email_verified: true,
    groups: entry.groups ?? DEFAULT_GROUPS,
  };
}

const port = argPort();
const server = http.createServer();
await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
const actualPort = server.address().port;
const issuer = `http://127.0.0.1:${actualPort}`;

const provider = new Provider(issuer, {
  jwks: { keys },
  clients,
  enabledJWA: { idTokenSigningAlgValues: ALGS },
  // The authorization code flow only: no implicit or hybrid tokens in URLs.
  responseTypes: ['code'],
  // Quiet start-up: this is a throwaway test issuer.
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // Claims of the granted scopes go into the ID token too, as most
  // providers do, so a relying party needs no userinfo call.
  conformIdTokenClaims: false,
  async findAccount(_ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return accountClaims(sub);
      },
    };
  },
  // Every client allowed the grant gets one (the default wants
  // offline_access as well, which needs prompt=consent).
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  pkce: { required: () => true },
  ttl: {
    AccessToken: ID_TOKEN_TTL,
    IdToken: ID_TOKEN_TTL,
    AuthorizationCode: 60,
    DeviceCode: 600,
    Grant: 14 * 24 * 3600,
    Interaction: 3600,
    RefreshToken: 14 * 24 * 3600,
    Session: 14 * 24 * 3600,
  },
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
    registration: { enabled: true, initialAccessToken: false },
  },
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

function setAccount(body) {
  const { sub } = body;
  if (typeof sub !== 'string' || sub === '') throw new Error('`sub` must be a non-empty string');
  const entry = {};
  if (body.groups !== undefined) {
    if (!Array.isArray(body.groups) || !body.groups.every((g) => typeof g === 'string')) {
      throw new Error('`groups` must be an array of strings');
    }
    entry.groups = body.groups;
  }
  for (const k of ['name', 'email']) {
    if (body[k] !== undefined) {
      if (typeof body[k] !== 'string') throw new Error(`\`${k}\` must be a string`);
      entry[k] = body[k];
    }
  }
  ACCOUNTS.set(sub, entry);
  return accountClaims(sub);
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
  if (ctx.path === '/test/accounts' && ctx.method === 'GET') {
    ctx.body = {
      accounts: Object.fromEntries([...ACCOUNTS.keys()].map((k) => [k, accountClaims(k)])),
      default_groups: DEFAULT_GROUPS,
    };
    return;
  }
  if (ctx.path === '/test/accounts' && ctx.method === 'POST') {
    try {
      ctx.body = { account: setAccount(await readJson(ctx.req)) };
    } catch (err) {
      ctx.status = 400;
      ctx.body = { error: String(err && err.message ? err.message : err) };
    }
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
