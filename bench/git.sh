#!/usr/bin/env bash
# Git through Latchkey vs Git straight to the same server. `bench/run git`
# runs it after building target/release/latchkey; it can also run alone.
#
# What it does, on this machine, loopback only:
#   1. installs nginx and fcgiwrap with apt-get if they are missing (needs root);
#   2. generates a repository of BENCH_GIT_MIB MiB (default 256) of random,
#      incompressible 1 MiB blobs over 4 commits, packed, and caches it in
#      bench/results/git-repo-<MiB>m.git so reruns skip this step;
#   3. BASELINE: `git http-backend` behind nginx + fcgiwrap (a private nginx
#      config and prefix under a temporary directory, no auth);
#   4. LATCHKEY: `latchkey serve --config` on another port whose Git upstream
#      is `url = "http://127.0.0.1:<nginx port>"`, i.e. in front of the same
#      nginx, with the starter policies and the dev issuer (for tokens);
#   5. times, interleaved (the order alternates every round), BENCH_GIT_RUNS
#      (default 3) rounds of
#        git_clone: `git clone --bare` of the whole repository (every object;
#                   bare, so the working-tree checkout, identical on both
#                   sides, does not dilute the ratio);
#        git_push:  `git push` of the whole repository, from the cached copy,
#                   as a new branch `bench` of a new empty bare repository
#                   (main is protected by the starter policies);
#      and prints the median of each side and their ratio (and `min_ratio`,
#      fastest vs fastest, which a busy machine disturbs less);
#   6. reads Latchkey's peak RSS (VmHWM in /proc/PID/status) after all runs.
#
# Output: one JSON line per measurement on stdout, progress on stderr:
#   {"bench":"git_clone","baseline_s":..,"latchkey_s":..,"ratio":..,...}
#   {"bench":"git_push",...}
#   {"bench":"git_gateway_cpu_s_per_gib","value":..,...}  (Latchkey's CPU time per GiB relayed)
#   {"bench":"git_gateway_peak_rss_mib","value":..,...}
# Targets: ratio <= 1.10, peak RSS <= 64 MiB (printed beside the figures;
# the script reports what it measures and does not fail on a miss).
#
# Environment: LATCHKEY_BIN (default target/release/latchkey),
# BENCH_GIT_MIB (default 256, at least 200 for the quoted figures),
# BENCH_GIT_RUNS (default 3), BENCH_GIT_KEEP=1 keeps the temporary directory,
# BENCH_GIT_NGINX_BUFFER (e.g. 64k: nginx's fastcgi buffers, which set the
# size of the chunks nginx sends; default nginx's own, one page).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${LATCHKEY_BIN:-$ROOT/target/release/latchkey}
MIB=${BENCH_GIT_MIB:-256}
RUNS=${BENCH_GIT_RUNS:-3}
COMMITS=4
CACHE=$ROOT/bench/results/git-repo-${MIB}m.git

log() { printf 'git.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ -x "$BIN" ] || die "no latchkey binary at $BIN; build it first: cargo build --release -p latchkey (bench/run does)"
command -v git >/dev/null || die "git is not installed"
command -v curl >/dev/null || die "curl is not installed"

# --- 1. nginx + fcgiwrap --------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v fcgiwrap >/dev/null || missing+=(fcgiwrap)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
  log "installing ${missing[*]}"
  # Debian's policy-rc.d usually keeps the system nginx from starting; we
  # never use it either way.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 \
    || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; }
fi
HTTP_BACKEND="$(git --exec-path)/git-http-backend"
[ -x "$HTTP_BACKEND" ] || die "no git-http-backend at $HTTP_BACKEND"

# --- 2. the repository (cached) -----------------------------------------------
if [ ! -f "$CACHE/bench-complete" ]; then
  log "generating a ${MIB} MiB repository in $CACHE (once)"
  start=$EPOCHREALTIME
  rm -rf "$CACHE" "$CACHE.work"
  work=$CACHE.work
  git init -q -b main "$work"
  per_commit=$(( (MIB + COMMITS - 1) / COMMITS ))
  for c in $(seq 1 "$COMMITS"); do
    mkdir -p "$work/data$c"
    for f in $(seq 1 "$per_commit"); do
      head -c 1048576 /dev/urandom > "$work/data$c/blob$f.bin"
    done
    printf 'commit %s: %s random 1 MiB blobs\n' "$c" "$per_commit" > "$work/README"
    git -C "$work" add -A
    git -C "$work" -c user.name=bench -c user.email=bench@example.com commit -q -m "bench data $c"
  done
  git init -q --bare -b main "$CACHE"
  # Random blobs never delta: skip the delta search; zlib level 1 is enough.
  git -C "$work" -c pack.window=0 -c pack.compression=1 push -q "$CACHE" main
  rm -rf "$work"
  touch "$CACHE/bench-complete"
  log "generated in $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}') s"
fi
PACK_MIB=$(du -sm "$CACHE/objects" | cut -f1)
HEAD=$(git -C "$CACHE" rev-parse refs/heads/main)
log "repository: ${PACK_MIB} MiB packed, main = $HEAD"

# --- helpers -------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-bench-git.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${BENCH_GIT_KEEP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
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

# Seconds a command takes (stdout/stderr of the command go to $TMP/cmd.log).
timed() {
  local start=$EPOCHREALTIME
  "$@" >>"$TMP/cmd.log" 2>&1 || { tail -20 "$TMP/cmd.log" >&2; die "failed: $*"; }
  awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b-a}'
}

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{ if (NR%2) print v[(NR+1)/2]; else printf "%.3f", (v[NR/2]+v[NR/2+1])/2 }'; }

# --- 3. baseline: nginx + fcgiwrap + git http-backend --------------------------
REPOS=$TMP/repos
mkdir -p "$REPOS/bench" "$TMP/nginx"
ln -s "$CACHE" "$REPOS/bench/repo.git"
NGINX_PORT=$(free_port)
setsid fcgiwrap -c 4 -s "unix:$TMP/fcgiwrap.sock" 2>"$TMP/fcgiwrap.log" &
PIDS+=($!)
# nginx's default fastcgi_buffer_size (one page) makes it forward the pack in
# ~4 KiB chunks; BENCH_GIT_NGINX_BUFFER (e.g. 64k) sets it for both sides.
buffer_line=""
[ -n "${BENCH_GIT_NGINX_BUFFER:-}" ] && buffer_line="fastcgi_buffer_size ${BENCH_GIT_NGINX_BUFFER}; fastcgi_buffers 8 ${BENCH_GIT_NGINX_BUFFER};"
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root root;"
cat >"$TMP/nginx/nginx.conf" <<EOF
$user_line
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      fastcgi_pass unix:$TMP/fcgiwrap.sock;
      fastcgi_request_buffering off;
      fastcgi_buffering off;
      fastcgi_read_timeout 600s;
      $buffer_line
      fastcgi_param SCRIPT_FILENAME $HTTP_BACKEND;
      fastcgi_param GIT_PROJECT_ROOT $REPOS;
      fastcgi_param GIT_HTTP_EXPORT_ALL 1;
      fastcgi_param GIT_CONFIG_COUNT 1;
      fastcgi_param GIT_CONFIG_KEY_0 http.receivepack;
      fastcgi_param GIT_CONFIG_VALUE_0 true;
      fastcgi_param PATH_INFO \$uri;
      fastcgi_param QUERY_STRING \$query_string;
      fastcgi_param REQUEST_METHOD \$request_method;
      fastcgi_param CONTENT_TYPE \$content_type;
      fastcgi_param CONTENT_LENGTH \$content_length;
      fastcgi_param HTTP_CONTENT_ENCODING \$http_content_encoding;
      fastcgi_param GIT_PROTOCOL \$http_git_protocol;
      fastcgi_param GATEWAY_INTERFACE CGI/1.1;
      fastcgi_param SERVER_PROTOCOL \$server_protocol;
      fastcgi_param REMOTE_ADDR \$remote_addr;
      fastcgi_param REMOTE_USER bench;
      fastcgi_param PATH $PATH;
      fastcgi_param HOME $TMP;
    }
  }
}
EOF
for _ in $(seq 1 100); do [ -S "$TMP/fcgiwrap.sock" ] && break; sleep 0.05; done
[ -S "$TMP/fcgiwrap.sock" ] || die "fcgiwrap did not create its socket; see $TMP/fcgiwrap.log"
setsid nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
BASE_URL=http://127.0.0.1:$NGINX_PORT
wait_http "$BASE_URL/bench/repo.git/info/refs?service=git-upload-pack" nginx

# --- 4. Latchkey in front of the same nginx ----------------------------------
LK_PORT=$(free_port)
LK_DATA=$TMP/latchkey
mkdir -p "$LK_DATA/policies"
cp "$ROOT"/crates/policy/starter/*.cedar "$ROOT/crates/policy/starter/entities.json" "$LK_DATA/policies/"
cat >"$TMP/latchkey.toml" <<EOF
[server]
listen = "127.0.0.1:$LK_PORT"
data_dir = "$LK_DATA"
upstream_timeout = "10m"

[keys]
master_key = { value = "$(head -c 32 /dev/urandom | base64)" }

[dev_issuer]
enabled = true
allow_in_serve = true

[git.upstreams.nginx]
url = "$BASE_URL"
EOF
LATCHKEY_LOG=warn setsid "$BIN" serve --config "$TMP/latchkey.toml" >"$TMP/latchkey.log" 2>&1 &
LK_PID=$!
PIDS+=($LK_PID)
LK_URL=http://127.0.0.1:$LK_PORT
wait_http "$LK_URL/admin/health" latchkey
LK_GIT=$LK_URL/git/nginx

# A fresh 15-minute token before each Latchkey run (untimed).
lk_token() {
  local id
  id=$("$BIN" dev token --data "$LK_DATA" --url "$LK_URL" --user bench --group developers)
  "$BIN" token --url "$LK_URL" --subject-token "$id" --audience git
}

export GIT_TERMINAL_PROMPT=0
clone() { # URL DIR [git -c args...]
  local url=$1 dir=$2; shift 2
  rm -rf "$dir"
  timed git "$@" clone -q --bare "$url/bench/repo.git" "$dir"
}
push() { # URL NAME [git -c args...]
  local url=$1 name=$2; shift 2
  git init -q --bare -b main "$REPOS/bench/$name.git"
  timed git "$@" -C "$CACHE" push -q "$url/bench/$name.git" refs/heads/main:refs/heads/bench
}
check_clone() { # DIR
  local got
  got=$(git -C "$1" rev-parse refs/heads/main)
  [ "$got" = "$HEAD" ] || die "clone in $1 has main = $got, expected $HEAD"
}
check_push() { # NAME
  local got
  got=$(git -C "$REPOS/bench/$1.git" rev-parse refs/heads/bench)
  [ "$got" = "$HEAD" ] || die "push to $1 left bench = $got, expected $HEAD"
  rm -rf "${REPOS:?}/bench/$1.git"
}

# --- 5. measure ----------------------------------------------------------------
log "baseline $BASE_URL, latchkey $LK_URL (pid $LK_PID); warming up"
clone "$BASE_URL" "$TMP/warm" >/dev/null
rm -rf "$TMP/warm"
cb=(); cl=(); pb=(); pl=()
# Each wrapper appends one timing; a failed command stops the script.
base_clone() { local t; t=$(clone "$BASE_URL" "$TMP/c-base"); cb+=("$t"); }
lk_clone() { local t; t=$(clone "$LK_GIT" "$TMP/c-lk" "${auth[@]}"); cl+=("$t"); }
base_push() { local t; t=$(push "$BASE_URL" "p-base-$1"); pb+=("$t"); }
lk_push() { local t; t=$(push "$LK_GIT" "p-lk-$1" "${auth[@]}"); pl+=("$t"); }
for r in $(seq 1 "$RUNS"); do
  tok=$(lk_token)
  auth=(-c "http.extraHeader=Authorization: Bearer $tok")
  if (( r % 2 )); then base_clone; lk_clone; else lk_clone; base_clone; fi
  check_clone "$TMP/c-base"; check_clone "$TMP/c-lk"
  rm -rf "$TMP/c-base" "$TMP/c-lk"
  tok=$(lk_token)
  auth=(-c "http.extraHeader=Authorization: Bearer $tok")
  if (( r % 2 )); then base_push "$r"; lk_push "$r"; else lk_push "$r"; base_push "$r"; fi
  check_push "p-base-$r"; check_push "p-lk-$r"
  log "round $r/$RUNS: clone ${cb[-1]} s vs ${cl[-1]} s, push ${pb[-1]} s vs ${pl[-1]} s (baseline vs latchkey)"
done

# --- 6. report -----------------------------------------------------------------
kill -0 "$LK_PID" 2>/dev/null || die "latchkey exited; see $TMP/latchkey.log"
HWM_KB=$(awk '/^VmHWM:/{print $2}' "/proc/$LK_PID/status")
# utime + stime (fields 14 and 15 of /proc/PID/stat, in clock ticks; the
# command name in field 2 has no spaces here).
LK_CPU_S=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$LK_PID/stat")
line() { # name baseline-list latchkey-list
  local b l
  b=$(median $2); l=$(median $3)
  awk -v n="$1" -v b="$b" -v l="$l" -v m="$MIB" -v r="$RUNS" -v all_b="$2" -v all_l="$3" 'BEGIN{
    nb = split(all_b, xb, " "); nl = split(all_l, xl, " ");
    mb = xb[1]; for (i = 2; i <= nb; i++) if (xb[i] < mb) mb = xb[i];
    ml = xl[1]; for (i = 2; i <= nl; i++) if (xl[i] < ml) ml = xl[i];
    gsub(/ /, ",", all_b); gsub(/ /, ",", all_l);
    printf "{\"bench\":\"%s\",\"baseline_s\":%.3f,\"latchkey_s\":%.3f,\"ratio\":%.3f,\"target_ratio_max\":1.10,\"min_ratio\":%.3f,\"repo_mib\":%d,\"runs\":%d,\"baseline_runs_s\":[%s],\"latchkey_runs_s\":[%s],\"baseline\":\"git http-backend via nginx+fcgiwrap\"}\n",
      n, b, l, l/b, ml/mb, m, r, all_b, all_l }'
}
line git_clone "${cb[*]}" "${cl[*]}"
line git_push "${pb[*]}" "${pl[*]}"
# Everything Latchkey relayed: the warm-up is straight, so RUNS clones and RUNS pushes.
awk -v cpu="$LK_CPU_S" -v mib="$PACK_MIB" -v r="$RUNS" 'BEGIN{printf "{\"bench\":\"git_gateway_cpu_s_per_gib\",\"value\":%.2f,\"cpu_s\":%.2f,\"relayed_gib\":%.2f,\"source\":\"utime+stime of latchkey serve, all runs\"}\n", cpu/(2*r*mib/1024), cpu, 2*r*mib/1024}'
awk -v kb="$HWM_KB" 'BEGIN{printf "{\"bench\":\"git_gateway_peak_rss_mib\",\"value\":%.1f,\"target_max\":64,\"source\":\"VmHWM of latchkey serve after all runs\"}\n", kb/1024}'
