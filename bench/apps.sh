#!/usr/bin/env bash
# A web app through Latchkey vs nginx and Apache + mod_auth_openidc, side by
# side in one run with wrk (issue 14, item 10). `bench/run apps` runs it
# after building target/release/latchkey; it can also run alone.
#
# What it does, on this machine, loopback only:
#   1. installs nginx, apache2, libapache2-mod-auth-openidc and wrk with
#      apt-get if they are missing (needs root);
#   2. ORIGIN: a private nginx (config and prefix in a temporary directory)
#      serving one small static page (BENCH_APPS_PAGE_BYTES, default 1024,
#      of HTML) and, over TLS, the JWKS Apache verifies tokens against;
#      every contestant below proxies to this same origin;
#   3. the contestants, each asked for GET /apps/bench/ (the origin's /):
#        nginx           a second private nginx, a plain reverse proxy
#                        (proxy_pass with a keepalive upstream): the cost of
#                        one hop and nothing else;
#        apache_oidc     Apache 2.4 (a private config: its own ServerRoot,
#                        PidFile and port, never the system one) with
#                        mod_auth_openidc validating a JWT Bearer token
#                        (`AuthType oauth20`, `OIDCOAuthVerifyJwksUri`) and
#                        mod_proxy_http to the origin. Debian 12's
#                        mod_auth_openidc (2.4.12, on cjose 0.6) has no
#                        EdDSA, so its token is RS256 from an RSA key made
#                        here, its JWKS served by the origin over TLS (the
#                        module takes only https JWKS URIs);
#        latchkey_session
#                        `latchkey serve` with `[[apps]] name = "bench"`
#                        (preset generic) in front of the origin, and a
#                        browser session made by signing in at /login with
#                        the dev identity provider's sign-in form (curl);
#        latchkey_bearer the same gateway with a Latchkey token (Ed25519)
#                        for audience `app:bench` from the token exchange;
#      each is checked with curl first: refused without its credential,
#      the origin's exact page with it;
#   4. wrk, BENCH_APPS_CONNECTIONS (16) connections on BENCH_APPS_THREADS (2)
#      threads, a BENCH_APPS_WARMUP (3) s warm-up and then a
#      BENCH_APPS_SECONDS (10) s timed run per contestant, in rounds
#      (BENCH_APPS_ROUNDS, default 3) whose order rotates; any non-2xx
#      answer or socket error stops the script (a fast refusal is not a
#      result). The CPU time of each server (and of the origin) during the
#      timed run is read from /proc.
#
# Output: one JSON line per contestant (median requests/s and p99 over the
# rounds, each round's figures, server CPU per request), then the ratios
# the issue sets targets for:
#   {"bench":"apps_session_vs_nginx","rps_ratio":..,"target_rps_ratio_min":0.9,
#    "p99_ratio":..,"target_p99_ratio_max":1.2,...}
#   {"bench":"apps_bearer_vs_apache_oidc","rps_ratio":..,"target_rps_ratio_min":2.0,...}
# The script reports what it measures and does not fail on a miss.
#
# wrk and every server share this machine's cores: nothing is pinned, so a
# figure is one machine's shared total, not a server's ceiling.
#
# Environment: LATCHKEY_BIN (default target/release/latchkey),
# BENCH_APPS_ROUNDS, BENCH_APPS_SECONDS, BENCH_APPS_WARMUP,
# BENCH_APPS_CONNECTIONS, BENCH_APPS_THREADS, BENCH_APPS_PAGE_BYTES,
# BENCH_APPS_ONLY (space-separated contestants to run, default all four),
# BENCH_APPS_KEEP=1 keeps the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${LATCHKEY_BIN:-$ROOT/target/release/latchkey}
ROUNDS=${BENCH_APPS_ROUNDS:-3}
DURATION=${BENCH_APPS_SECONDS:-10}
WARMUP=${BENCH_APPS_WARMUP:-3}
CONNS=${BENCH_APPS_CONNECTIONS:-16}
THREADS=${BENCH_APPS_THREADS:-2}
PAGE_BYTES=${BENCH_APPS_PAGE_BYTES:-1024}
ONLY=${BENCH_APPS_ONLY:-nginx apache_oidc latchkey_session latchkey_bearer}
# Breakdown contestants (not in the targets): the bearer path with the
# audit log on tmpfs, where fsync is free, and Latchkey's bare HTTP server.
[ "${BENCH_APPS_BREAKDOWN:-1}" = 1 ] && [ -z "${BENCH_APPS_ONLY:-}" ] && ONLY+=" latchkey_bearer_tmpfs latchkey_jwks"
APP_PATH=/apps/bench/

log() { printf 'apps.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
wants() { [[ " $ONLY " == *" $1 "* ]]; }
is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }

for v in ROUNDS:ROUNDS DURATION:SECONDS WARMUP:WARMUP CONNS:CONNECTIONS THREADS:THREADS PAGE_BYTES:PAGE_BYTES; do
  val=${v%%:*}; val=${!val}
  is_count "$val" || die "BENCH_APPS_${v#*:} is \`$val\`; give a whole number above 0"
done
(( THREADS <= CONNS )) || die "BENCH_APPS_THREADS ($THREADS) is above BENCH_APPS_CONNECTIONS ($CONNS); wrk needs a connection per thread"
for c in $ONLY; do
  case $c in nginx|apache_oidc|latchkey_session|latchkey_bearer|latchkey_bearer_tmpfs|latchkey_jwks) ;;
    *) die "BENCH_APPS_ONLY names \`$c\`; pick from nginx apache_oidc latchkey_session latchkey_bearer latchkey_bearer_tmpfs latchkey_jwks" ;;
  esac
done
if [[ "$ONLY" == *latchkey_* ]]; then
  [ -x "$BIN" ] || die "no latchkey binary at $BIN; build it first: cargo build --release -p latchkey (bench/run does)"
fi

# --- 1. packages --------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v apache2 >/dev/null || missing+=(apache2)
[ -f /usr/lib/apache2/modules/mod_auth_openidc.so ] || missing+=(libapache2-mod-auth-openidc)
command -v wrk >/dev/null || missing+=(wrk)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
  log "installing ${missing[*]}"
  # Debian's policy-rc.d usually keeps the system services from starting;
  # this script never uses them either way.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 \
    || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; }
fi
MODS=/usr/lib/apache2/modules

# --- helpers -------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-bench-apps.XXXXXX")
# Apache's children run as www-data when started by root and must read the
# config's files (the key stays root's: only the parent reads it).
chmod 755 "$TMP"
PIDS=()
SHM=""
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${BENCH_APPS_KEEP:-0}" = 1 ]; then log "kept $TMP ${SHM:-}"; else rm -rf "$TMP" ${SHM:+"$SHM"}; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nothing listens on (bind races are unlikely on loopback).
free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}

wait_http() { # URL what
  local i
  for i in $(seq 1 200); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    sleep 0.05
  done
  die "$2 did not answer at $1"
}

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
hex_to_bin() { local h; h=$(cat); printf '%b' "$(printf '%s' "$h" | sed 's/../\\x&/g')"; }

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{ if (NR%2) print v[(NR+1)/2]; else printf "%.1f", (v[NR/2]+v[NR/2+1])/2 }'; }

# User + system CPU ticks of every process in session SID (each server is
# started with setsid, so its workers share its session).
session_ticks() {
  local sid=$1 pid total=0 t
  for pid in $(pgrep -s "$sid" 2>/dev/null); do
    t=$(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null) || continue
    total=$(( total + ${t:-0} ))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)
# Connections the origin has accepted so far (its stub_status), to show
# whether a contestant keeps its upstream connections alive.
origin_accepts() { curl -sS "http://127.0.0.1:$ORIGIN_STATUS_PORT/status" | awk 'NR==3{print $1}'; }

user_line=""
[ "$(id -u)" = 0 ] && user_line="user root root;"
nginx_common() { # DIR
  cat <<EOF
$user_line
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 1024; }
EOF
}
nginx_temp_paths() { # DIR
  cat <<EOF
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
EOF
}

# --- 2. the origin and the JWKS -------------------------------------------------
mkdir -p "$TMP/origin/www" "$TMP/pki"
{
  printf '<!doctype html>\n<html><head><meta charset="utf-8"><title>bench</title></head><body>\n<p>'
  # Pad with a fixed filler to exactly PAGE_BYTES with the closing tags.
  tail_html='</p>\n</body></html>\n'
  used=$(( $(printf '<!doctype html>\n<html><head><meta charset="utf-8"><title>bench</title></head><body>\n<p>' | wc -c) + $(printf "$tail_html" | wc -c) ))
  (( PAGE_BYTES > used )) || die "BENCH_APPS_PAGE_BYTES is $PAGE_BYTES; give at least $(( used + 1 ))"
  head -c $(( PAGE_BYTES - used )) /dev/zero | tr '\0' 'x'
  printf "$tail_html"
} > "$TMP/origin/www/index.html"
PAGE_SHA=$(sha256sum < "$TMP/origin/www/index.html" | cut -d' ' -f1)

# A CA and a certificate for 127.0.0.1: the origin serves the JWKS over TLS
# and Apache checks it against this CA (OIDCCABundlePath).
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=latchkey bench CA" \
  -keyout "$TMP/pki/ca.key" -out "$TMP/pki/ca.pem" \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$TMP/pki/origin.key" -out "$TMP/pki/origin.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$TMP/pki/ext"
openssl x509 -req -in "$TMP/pki/origin.csr" -CA "$TMP/pki/ca.pem" -CAkey "$TMP/pki/ca.key" \
  -CAcreateserial -days 2 -extfile "$TMP/pki/ext" -out "$TMP/pki/origin.pem" 2>/dev/null

# The RS256 signing key for Apache's token and its JWKS.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/pki/jwt.key" 2>/dev/null
JWT_N=$(openssl rsa -in "$TMP/pki/jwt.key" -noout -modulus | cut -d= -f2 | hex_to_bin | b64url)
printf '{"keys":[{"kty":"RSA","kid":"bench-rs256","use":"sig","alg":"RS256","n":"%s","e":"AQAB"}]}\n' \
  "$JWT_N" > "$TMP/origin/www/jwks.json"
rs256_token() { # lifetime-seconds
  local now h p sig
  now=$(date +%s)
  h=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench-rs256"}' | b64url)
  p=$(printf '{"iss":"https://bench.invalid","sub":"bench","aud":"app:bench","iat":%d,"exp":%d}' \
    "$now" $(( now + $1 )) | b64url)
  sig=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign "$TMP/pki/jwt.key" | b64url)
  printf '%s.%s.%s' "$h" "$p" "$sig"
}

ORIGIN_PORT=$(free_port)
ORIGIN_TLS_PORT=$(free_port)
ORIGIN_STATUS_PORT=$(free_port)
cat >"$TMP/origin/nginx.conf" <<EOF
$(nginx_common "$TMP/origin")
worker_processes 1;
http {
  access_log off;
$(nginx_temp_paths "$TMP/origin")
  keepalive_requests 1000000;
  default_type text/html;
  server {
    listen 127.0.0.1:$ORIGIN_PORT;
    root $TMP/origin/www;
    location = / { try_files /index.html =404; }
    location / { return 404; }
  }
  server {
    listen 127.0.0.1:$ORIGIN_STATUS_PORT;
    location = /status { stub_status; }
  }
  server {
    listen 127.0.0.1:$ORIGIN_TLS_PORT ssl;
    ssl_certificate $TMP/pki/origin.pem;
    ssl_certificate_key $TMP/pki/origin.key;
    root $TMP/origin/www;
    location = /jwks.json { default_type application/json; }
    location / { return 404; }
  }
}
EOF
setsid nginx -p "$TMP/origin" -e "$TMP/origin/error.log" -c "$TMP/origin/nginx.conf" -g 'daemon off;' &
ORIGIN_PID=$!
PIDS+=($ORIGIN_PID)
ORIGIN_URL=http://127.0.0.1:$ORIGIN_PORT
wait_http "$ORIGIN_URL/" "the origin nginx"
got=$(curl -sS --cacert "$TMP/pki/ca.pem" "https://127.0.0.1:$ORIGIN_TLS_PORT/jwks.json" | jq -r '.keys[0].n') \
  || die "the origin does not serve the JWKS over TLS; see $TMP/origin/error.log"
[ "$got" = "$JWT_N" ] || die "the origin's JWKS is not the one written"

# Asks URL with curl's extra ARGS; prints the status, checks a 200's body is the page.
probe() { # URL [curl args...]
  local url=$1 code; shift
  code=$(curl -sS -o "$TMP/probe.body" -w '%{http_code}' "$@" "$url") || die "curl $url failed"
  if [ "$code" = 200 ]; then
    [ "$(sha256sum < "$TMP/probe.body" | cut -d' ' -f1)" = "$PAGE_SHA" ] \
      || die "$url answered 200 with another body than the origin's page: $(head -c 200 "$TMP/probe.body")"
  fi
  echo "$code"
}
expect() { # what want(s, "|"-separated) got
  [[ "|$2|" == *"|$3|"* ]] || die "$1: expected HTTP $2, got $3"
}
expect "origin page" 200 "$(probe "$ORIGIN_URL/")"

# --- 3a. nginx, a plain reverse proxy --------------------------------------------
declare -A URL SID HDR
if wants nginx; then
  NGINX_PORT=$(free_port)
  mkdir -p "$TMP/nginx"
  cat >"$TMP/nginx/nginx.conf" <<EOF
$(nginx_common "$TMP/nginx")
worker_processes auto;
http {
  access_log off;
$(nginx_temp_paths "$TMP/nginx")
  keepalive_requests 1000000;
  upstream origin {
    server 127.0.0.1:$ORIGIN_PORT;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location $APP_PATH {
      proxy_pass http://origin/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  setsid nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' &
  SID[nginx]=$!
  PIDS+=(${SID[nginx]})
  URL[nginx]=http://127.0.0.1:$NGINX_PORT$APP_PATH
  wait_http "${URL[nginx]}" "the proxy nginx"
  expect "nginx proxy" 200 "$(probe "${URL[nginx]}")"
  HDR[nginx]=""
fi

# --- 3b. Apache + mod_auth_openidc --------------------------------------------------
if wants apache_oidc; then
  APACHE_PORT=$(free_port)
  mkdir -p "$TMP/apache/run"
  chown www-data: "$TMP/apache/run" 2>/dev/null || true
  # Debian's own defaults for the event MPM (mods-available/mpm_event.conf);
  # keep-alive without a request limit, as the nginx side has.
  cat >"$TMP/apache/httpd.conf" <<EOF
ServerRoot $TMP/apache
ServerName 127.0.0.1
Listen 127.0.0.1:$APACHE_PORT
PidFile $TMP/apache/httpd.pid
DefaultRuntimeDir $TMP/apache/run
Mutex file:$TMP/apache/run default
ErrorLog $TMP/apache/error.log
LogLevel warn
$( [ "$(id -u)" = 0 ] && printf 'User www-data\nGroup www-data\n' )
LoadModule mpm_event_module $MODS/mod_mpm_event.so
LoadModule authn_core_module $MODS/mod_authn_core.so
LoadModule authz_core_module $MODS/mod_authz_core.so
LoadModule authz_user_module $MODS/mod_authz_user.so
LoadModule auth_openidc_module $MODS/mod_auth_openidc.so
LoadModule proxy_module $MODS/mod_proxy.so
LoadModule proxy_http_module $MODS/mod_proxy_http.so
StartServers 2
MinSpareThreads 25
MaxSpareThreads 75
ThreadLimit 64
ThreadsPerChild 25
MaxRequestWorkers 150
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 5
OIDCCABundlePath $TMP/pki/ca.pem
OIDCOAuthVerifyJwksUri https://127.0.0.1:$ORIGIN_TLS_PORT/jwks.json
OIDCOAuthRemoteUserClaim sub
OIDCCryptoPassphrase $(head -c 24 /dev/urandom | base64 | tr -d '/+=')
<Location $APP_PATH>
  AuthType oauth20
  Require valid-user
  ProxyPass http://127.0.0.1:$ORIGIN_PORT/
</Location>
EOF
  apache2 -t -f "$TMP/apache/httpd.conf" 2>"$TMP/apache/check.log" \
    || { cat "$TMP/apache/check.log" >&2; die "Apache refused its config $TMP/apache/httpd.conf"; }
  # -DFOREGROUND: the parent stays our child and its session holds the workers.
  setsid apache2 -f "$TMP/apache/httpd.conf" -DFOREGROUND -k start 2>>"$TMP/apache/error.log" &
  SID[apache_oidc]=$!
  PIDS+=(${SID[apache_oidc]})
  URL[apache_oidc]=http://127.0.0.1:$APACHE_PORT$APP_PATH
  wait_http "${URL[apache_oidc]}" "Apache"
  expect "Apache without a token" 401 "$(probe "${URL[apache_oidc]}")"
  expect "Apache with a forged signature" 401 \
    "$(probe "${URL[apache_oidc]}" -H "Authorization: Bearer $(rs256_token 60 | sed 's/\.[^.]*$/.AAAA/')")"
  APACHE_TOKEN=$(rs256_token 7200)
  expect "Apache with the RS256 token" 200 "$(probe "${URL[apache_oidc]}" -H "Authorization: Bearer $APACHE_TOKEN")"
  HDR[apache_oidc]="Authorization: Bearer $APACHE_TOKEN"
fi

# --- 3c. Latchkey ------------------------------------------------------------------
# The starter policies mint app tokens only where a policy names the
# audience (50-apps.cedar says so); this is that policy for the bench.
BENCH_POLICY='@id("bench-app-tokens")
permit (
  principal is Latchkey::User,
  action == Latchkey::Action::"token.mint",
  resource == Latchkey::Audience::"app:bench"
);'
declare -A LKURL LKPID LKDATA GW
start_latchkey() { # name data-dir
  local name=$1 data=$2 port
  port=$(free_port)
  mkdir -p "$data/policies"
  cp "$ROOT"/crates/policy/starter/*.cedar "$ROOT/crates/policy/starter/entities.json" "$data/policies/"
  printf '%s\n' "$BENCH_POLICY" > "$data/policies/90-bench.cedar"
  cat >"$TMP/$name.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
data_dir = "$data"

[keys]
master_key = { value = "$(head -c 32 /dev/urandom | base64)" }

[dev_issuer]
enabled = true
allow_in_serve = true

[[apps]]
name = "bench"
path_prefix = "${APP_PATH%/}"
upstream = "$ORIGIN_URL"
preset = "generic"
EOF
  LATCHKEY_LOG=warn setsid "$BIN" serve --config "$TMP/$name.toml" >"$TMP/$name.log" 2>&1 &
  LKPID[$name]=$!
  PIDS+=(${LKPID[$name]})
  LKURL[$name]=http://127.0.0.1:$port
  LKDATA[$name]=$data
  wait_http "${LKURL[$name]}/admin/health" "latchkey ($name)"
  expect "latchkey ($name) without a credential" "401|302|303" "$(probe "${LKURL[$name]}$APP_PATH")"
}
if wants latchkey_session || wants latchkey_bearer || wants latchkey_jwks; then
  start_latchkey lk "$TMP/latchkey"
fi
if wants latchkey_bearer_tmpfs; then
  [ -d /dev/shm ] && [ -w /dev/shm ] || die "latchkey_bearer_tmpfs needs a writable /dev/shm; leave it out of BENCH_APPS_ONLY"
  SHM=$(mktemp -d /dev/shm/latchkey-bench-apps.XXXXXX)
  start_latchkey lk_tmpfs "$SHM"
fi

# A fresh Latchkey token for the app from gateway GW (untimed).
lk_token() { # gw [audience]
  local id
  id=$("$BIN" dev token --data "${LKDATA[$1]}" --url "${LKURL[$1]}" --user bench --group developers)
  "$BIN" token --url "${LKURL[$1]}" --subject-token "$id" --audience "${2:-app:bench}"
}
for c in latchkey_bearer latchkey_bearer_tmpfs; do
  wants $c || continue
  gw=lk; [ $c = latchkey_bearer_tmpfs ] && gw=lk_tmpfs
  GW[$c]=$gw; SID[$c]=${LKPID[$gw]}; URL[$c]=${LKURL[$gw]}$APP_PATH
  tok=$(lk_token $gw) || die "no Latchkey token for audience app:bench; see $TMP/$gw.log"
  git_tok=$(lk_token $gw git) || die "no Latchkey token for audience git; see $TMP/$gw.log"
  expect "latchkey ($gw) with a token for audience git" "401|403" "$(probe "${URL[$c]}" -H "Authorization: Bearer $git_tok")"
  expect "latchkey ($gw) with the Bearer token" 200 "$(probe "${URL[$c]}" -H "Authorization: Bearer $tok")"
  HDR[$c]="Authorization: Bearer $tok"
done
if wants latchkey_jwks; then
  # Breakdown only: Latchkey's HTTP server answering from memory (its
  # JWKS: no credential, policy, audit, store or upstream). Not
  # /admin/health, which asks the store each time.
  GW[latchkey_jwks]=lk; SID[latchkey_jwks]=${LKPID[lk]}; URL[latchkey_jwks]=${LKURL[lk]}/.well-known/jwks.json
  HDR[latchkey_jwks]=""
  expect "latchkey JWKS" 200 "$(curl -sS -o /dev/null -w '%{http_code}' "${URL[latchkey_jwks]}")"
fi

# A browser session at gateway GW: /login with the dev identity provider's
# sign-in form, followed by hand as a browser would (untimed). Prints the
# Cookie header.
lk_session() { # gw
  local url=${LKURL[$1]} jar=$TMP/session.jar loc page form code
  rm -f "$jar"
  # /login sends the browser to the provider's authorization endpoint.
  loc=$(curl -sS -o /dev/null -c "$jar" -b "$jar" -w '%{redirect_url}' "$url/login?rd=$APP_PATH")
  [[ "$loc" == "$url/dev-idp/authorize?"* ]] \
    || { log "/login did not send the browser to the dev sign-in page (got \`$loc\`)"; return 1; }
  page=$(curl -sS -c "$jar" -b "$jar" "$loc")
  form=$(printf '%s' "$page" | sed -n 's/.*name="form" value="\([^"]*\)".*/\1/p' | head -1)
  [ -n "$form" ] || { log "the dev sign-in page has no form token"; return 1; }
  loc=$(curl -sS -o /dev/null -c "$jar" -b "$jar" -w '%{redirect_url}' \
    -H "Origin: $url" --data-urlencode "form=$form" --data-urlencode user=bench \
    --data-urlencode groups=developers "$url/dev-idp/authorize")
  [[ "$loc" == "$url/callback?"* ]] \
    || { log "the dev sign-in form did not return to /callback (got \`$loc\`)"; return 1; }
  code=$(curl -sS -o /dev/null -c "$jar" -b "$jar" -w '%{http_code}' "$loc")
  [[ "$code" == 30[23] ]] || { log "/callback answered $code, not a redirect"; return 1; }
  awk -F'\t' '$6 ~ /latchkey$/ {printf "Cookie: %s=%s", $6, $7}' "$jar"
}
if wants latchkey_session; then
  if cookie=$(lk_session lk) && [ -n "$cookie" ]; then
    GW[latchkey_session]=lk; SID[latchkey_session]=${LKPID[lk]}; URL[latchkey_session]=${LKURL[lk]}$APP_PATH
    expect "latchkey with the session" 200 "$(probe "${URL[latchkey_session]}" -H "$cookie")"
    expect "latchkey with an unknown session" "401|302|303" \
      "$(probe "${URL[latchkey_session]}" -H "${cookie}x" -H 'Accept: application/json')"
    HDR[latchkey_session]=$cookie
  else
    # Printed, never silent: the line below says the session was not measured.
    log "SKIPPED: latchkey_session: no browser session could be made (see above and $TMP/lk.log)"
    printf '{"bench":"apps_latchkey_session","skipped":"no browser session could be made through /login and the dev sign-in page"}\n'
    ONLY=${ONLY//latchkey_session/}
  fi
fi

# --- 4. measure -------------------------------------------------------------------
cat >"$TMP/report.lua" <<'EOF'
done = function(s, l, r)
  local e = s.errors
  io.write(string.format(
    "WRKJSON %d %d %d %d %d %d %d %d %d %d %d %d\n",
    s.requests, s.duration, s.bytes, l:percentile(50), l:percentile(90), l:percentile(99), l.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
EOF
run_wrk() { # contestant seconds -> "requests duration_us bytes p50 p90 p99 max ..."
  local c=$1 secs=$2 args=()
  [ -n "${HDR[$c]}" ] && args=(-H "${HDR[$c]}")
  wrk -t "$THREADS" -c "$CONNS" -d "${secs}s" --latency -s "$TMP/report.lua" "${args[@]}" "${URL[$c]}" \
    >"$TMP/wrk.out" 2>&1 || { cat "$TMP/wrk.out" >&2; die "wrk failed against $c"; }
  cat "$TMP/wrk.out" >>"$TMP/wrk.log"
  local line
  line=$(sed -n 's/^WRKJSON //p' "$TMP/wrk.out")
  [ -n "$line" ] || { cat "$TMP/wrk.out" >&2; die "wrk printed no summary against $c"; }
  set -- $line
  (( $8 + $9 + ${10} + ${11} + ${12} == 0 )) || { cat "$TMP/wrk.out" >&2;
    die "$c: $8 connect, $9 read, ${10} write errors, ${11} non-2xx answers, ${12} time-outs in $1 requests; see $TMP/*/error.log and $TMP/latchkey.log"; }
  echo "$line"
}

declare -A RPS P99 P50 CPU ORIGIN_CPU BYTES CONNS_OPENED
contestants=($ONLY)
n=${#contestants[@]}
(( n > 0 )) || die "nothing to measure"
log "measuring ${contestants[*]}: $ROUNDS rounds of ${WARMUP} s warm-up + ${DURATION} s, $CONNS connections on $THREADS wrk threads, a ${PAGE_BYTES}-byte page"
for r in $(seq 1 "$ROUNDS"); do
  for c in latchkey_bearer latchkey_bearer_tmpfs; do
    wants $c || continue
    tok=$(lk_token "${GW[$c]}") || die "no Latchkey token for audience app:bench; see $TMP/${GW[$c]}.log"
    HDR[$c]="Authorization: Bearer $tok"
  done
  summary=()
  for i in $(seq 0 $(( n - 1 ))); do
    c=${contestants[$(( (i + r - 1) % n ))]}
    run_wrk "$c" "$WARMUP" >/dev/null
    a0=$(origin_accepts); t0=$(session_ticks "${SID[$c]}"); o0=$(session_ticks "$ORIGIN_PID")
    set -- $(run_wrk "$c" "$DURATION")
    t1=$(session_ticks "${SID[$c]}"); o1=$(session_ticks "$ORIGIN_PID"); a1=$(origin_accepts)
    # Less the one stub_status request itself.
    CONNS_OPENED[$c]+="$(( a1 - a0 - 1 )) "
    rps=$(awk -v n="$1" -v d="$2" 'BEGIN{printf "%.1f", n/(d/1e6)}')
    RPS[$c]+="$rps "; P50[$c]+="$4 "; P99[$c]+="$6 "
    BYTES[$c]=$(( $3 / $1 ))
    CPU[$c]+="$(awk -v t=$(( t1 - t0 )) -v hz="$HZ" -v n="$1" 'BEGIN{printf "%.1f", t/hz*1e6/n}') "
    ORIGIN_CPU[$c]+="$(awk -v t=$(( o1 - o0 )) -v hz="$HZ" -v n="$1" 'BEGIN{printf "%.1f", t/hz*1e6/n}') "
    summary+=("$c ${rps}/s p99 ${6}us")
  done
  log "round $r/$ROUNDS: $(IFS=';'; echo "${summary[*]}")"
done

# --- 5. report --------------------------------------------------------------------
declare -A HWM_KB
for gw in "${!LKPID[@]}"; do
  kill -0 "${LKPID[$gw]}" 2>/dev/null || die "latchkey ($gw) exited; see $TMP/$gw.log"
  HWM_KB[$gw]=$(awk '/^VmHWM:/{print $2}' "/proc/${LKPID[$gw]}/status")
done
list() { echo "$1" | xargs | tr ' ' ','; }
declare -A MED_RPS MED_P99
for c in "${contestants[@]}"; do
  MED_RPS[$c]=$(median ${RPS[$c]}); MED_P99[$c]=$(median ${P99[$c]})
  extra=""
  [[ $c == latchkey_* ]] && extra=$(printf ',"gateway_peak_rss_mib":%.1f' "$(awk -v kb="${HWM_KB[${GW[$c]}]}" 'BEGIN{print kb/1024}')")
  printf '{"bench":"apps_%s","rps":%s,"p99_us":%s,"p50_us":%s,"server_cpu_us_per_req":%s,"origin_cpu_us_per_req":%s,"origin_connections_opened":%s,"response_bytes":%d,"runs_rps":[%s],"runs_p99_us":[%s],"runs_server_cpu_us_per_req":[%s],"rounds":%d,"seconds":%d,"connections":%d,"wrk_threads":%d,"page_bytes":%d%s}\n' \
    "$c" "${MED_RPS[$c]}" "${MED_P99[$c]}" "$(median ${P50[$c]})" "$(median ${CPU[$c]})" "$(median ${ORIGIN_CPU[$c]})" "$(median ${CONNS_OPENED[$c]})" \
    "${BYTES[$c]}" "$(list "${RPS[$c]}")" "$(list "${P99[$c]}")" "$(list "${CPU[$c]}")" \
    "$ROUNDS" "$DURATION" "$CONNS" "$THREADS" "$PAGE_BYTES" "$extra"
done
ratio() { # name a b rps_min p99_max
  local a=$2 b=$3
  [ -n "${MED_RPS[$a]:-}" ] && [ -n "${MED_RPS[$b]:-}" ] || return 0
  awk -v n="$1" -v a="$a" -v b="$b" -v ra="${MED_RPS[$a]}" -v rb="${MED_RPS[$b]}" \
      -v pa="${MED_P99[$a]}" -v pb="${MED_P99[$b]}" -v rmin="$4" -v pmax="$5" 'BEGIN{
    rr = ra / rb; pr = pa / pb;
    met = (rr >= rmin) && (pmax == "" || pr <= pmax);
    printf "{\"bench\":\"%s\",\"contestant\":\"%s\",\"baseline\":\"%s\",\"rps_ratio\":%.3f,\"target_rps_ratio_min\":%s,\"p99_ratio\":%.3f", n, a, b, rr, rmin, pr;
    if (pmax != "") printf ",\"target_p99_ratio_max\":%s", pmax;
    printf ",\"met\":%s}\n", met ? "true" : "false" }'
}
ratio apps_session_vs_nginx latchkey_session nginx 0.9 1.2
ratio apps_bearer_vs_apache_oidc latchkey_bearer apache_oidc 2.0 ""
ratio apps_bearer_vs_nginx latchkey_bearer nginx 0.9 1.2
