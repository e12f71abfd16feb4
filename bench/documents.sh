#!/usr/bin/env bash
# Documents through Latchkey vs Google's Firestore emulator straight, side
# by side in one run with the official Node client (issue 15, item 9).
# `bench/run documents` runs it after building target/release/latchkey; it
# can also run alone.
#
# What it does, on this machine, loopback only:
#   1. installs testing/firestore-node's npm packages (npm ci) if they are
#      not those of its package-lock.json; without gcloud's Firestore
#      emulator (and Java) it prints a `skipped` line and exits 0;
#   2. starts Google's Firestore emulator (`gcloud emulators firestore
#      start`) on a free port: the baseline, `emulator`;
#   3. starts `latchkey serve` (starter policies, the dev issuer allowed
#      for tokens, audit log fsync'ed in its data directory: the gateway as
#      deployed) with the embedded document store,
#      `[documents] backend = "embedded"` (the default, `auto`), or with
#      BENCH_DOCUMENTS_BACKEND=firestore in front of the same emulator
#      (`[firestore] emulator = ...`, the gateway's overhead on Google's
#      backend); every line names its backend;
#   4. checks before timing: a read without a token is refused (401), a
#      read with one answers and adds its decision to the audit log;
#      seeds each target (testing/firestore-node/bench.mjs --phase seed;
#      the two use different collection prefixes);
#   5. warms the emulator's JVM (and the gateway) up: each operation
#      against each target for BENCH_DOCUMENTS_JVM_WARMUP (8) s, untimed;
#      then per round (BENCH_DOCUMENTS_ROUNDS, default 3), per operation
#      (`get`: a point read; `set`: a single-document write; `query`: a
#      100-result query), runs bench.mjs against each target in turn (the
#      order alternates every round): a BENCH_DOCUMENTS_WARMUP (2) s
#      warm-up, then BENCH_DOCUMENTS_SECONDS (5) s timed, with
#      BENCH_DOCUMENTS_CONCURRENCY (8) calls in flight, over
#      BENCH_DOCUMENTS_MODE (latchkey-grpc; or latchkey-rest). Any failed
#      call stops the script (a fast refusal is not a result). The CPU time
#      of the gateway and of the emulator (gcloud's session: its JVM) during
#      each run is read from /proc.
#
# Output: one JSON line per target and operation (median calls/s, p50 and
# p99 over the rounds, each round's figures, the gateway's and the
# emulator's CPU per call), then per
# operation the ratio the issue sets a target for, Latchkey against the
# emulator: at least the emulator's throughput and no worse p99:
#   {"bench":"documents_get_latchkey_vs_emulator","backend":"embedded",
#    "calls_per_s_ratio":..,"target_calls_per_s_ratio_min":1.0,
#    "p99_ratio":..,"target_p99_ratio_max":1.0,"met":..}
# The script reports what it measures and does not fail on a miss.
#
# The load generator (node), the emulator's JVM and the gateway share this
# machine's cores: nothing is pinned.
#
# Environment: LATCHKEY_BIN (default target/release/latchkey),
# BENCH_DOCUMENTS_ROUNDS, BENCH_DOCUMENTS_SECONDS, BENCH_DOCUMENTS_WARMUP,
# BENCH_DOCUMENTS_JVM_WARMUP, BENCH_DOCUMENTS_CONCURRENCY, BENCH_DOCUMENTS_OPS (default "get set query"),
# BENCH_DOCUMENTS_MODE, BENCH_DOCUMENTS_BACKEND (auto|embedded|firestore),
# BENCH_DOCUMENTS_KEEP=1 keeps the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${LATCHKEY_BIN:-$ROOT/target/release/latchkey}
ROUNDS=${BENCH_DOCUMENTS_ROUNDS:-3}
DURATION=${BENCH_DOCUMENTS_SECONDS:-5}
WARMUP=${BENCH_DOCUMENTS_WARMUP:-2}
JVM_WARMUP=${BENCH_DOCUMENTS_JVM_WARMUP:-8}
CONCURRENCY=${BENCH_DOCUMENTS_CONCURRENCY:-8}
OPS=${BENCH_DOCUMENTS_OPS:-get set query}
MODE=${BENCH_DOCUMENTS_MODE:-latchkey-grpc}
BACKEND=${BENCH_DOCUMENTS_BACKEND:-auto}
PROJECT=latchkey-bench
NODE_DIR=$ROOT/testing/firestore-node

log() { printf 'documents.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
is_count() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }

for v in ROUNDS:ROUNDS DURATION:SECONDS CONCURRENCY:CONCURRENCY; do
  val=${v%%:*}; val=${!val}
  is_count "$val" || die "BENCH_DOCUMENTS_${v#*:} is \`$val\`; give a whole number above 0"
done
[[ "$WARMUP" =~ ^[0-9]+$ ]] || die "BENCH_DOCUMENTS_WARMUP is \`$WARMUP\`; give a whole number of seconds"
[[ "$JVM_WARMUP" =~ ^[0-9]+$ ]] || die "BENCH_DOCUMENTS_JVM_WARMUP is \`$JVM_WARMUP\`; give a whole number of seconds"
for op in $OPS; do
  case $op in get|set|query) ;; *) die "BENCH_DOCUMENTS_OPS names \`$op\`; pick from get set query" ;; esac
done
case $MODE in latchkey-grpc|latchkey-rest) ;; *) die "BENCH_DOCUMENTS_MODE is \`$MODE\`; pick latchkey-grpc or latchkey-rest" ;; esac
case $BACKEND in auto|embedded|firestore) ;; *) die "BENCH_DOCUMENTS_BACKEND is \`$BACKEND\`; pick auto, embedded or firestore" ;; esac
[ -x "$BIN" ] || die "no latchkey binary at $BIN; build it first: cargo build --release -p latchkey (bench/run does)"
command -v node >/dev/null || die "node is not on PATH; the benchmark drives the official Node client (Node 20+)"
for tool in jq curl setsid pgrep; do
  command -v $tool >/dev/null || die "$tool is not on PATH; install it (apt-get install $tool)"
done

# --- 1. the client and the emulator --------------------------------------------
# The same stamp the test harness (latchkey_testkit::firestore) writes.
stamp=$NODE_DIR/node_modules/.latchkey-package-lock.sha256
want=$(sha256sum < "$NODE_DIR/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing testing/firestore-node's packages (npm ci)"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci failed in $NODE_DIR"
  echo "$want" > "$stamp"
fi
if ! command -v gcloud >/dev/null; then
  log "SKIPPED: no gcloud on PATH (the baseline is Google's Firestore emulator: apt-get install google-cloud-cli-firestore-emulator default-jre-headless)"
  printf '{"bench":"documents","skipped":"no Firestore emulator on this machine (gcloud is not on PATH)"}\n'
  exit 0
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-bench-documents.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${BENCH_DOCUMENTS_KEEP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  local p
  while :; do
    p=$(( 20000 + RANDOM % 40000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{ if (NR%2) print v[(NR+1)/2]; else printf "%.1f", (v[NR/2]+v[NR/2+1])/2 }'; }
# User + system CPU ticks of every process in session SID (the JVM is in
# gcloud's session; the gateway leads its own).
session_ticks() {
  local sid=$1 pid total=0 t
  for pid in $(pgrep -s "$sid" 2>/dev/null); do
    t=$(awk '{print $14+$15}' "/proc/$pid/stat" 2>/dev/null) || continue
    total=$(( total + ${t:-0} ))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

# gcloud moves itself into a process group of its own unless it leads its
# session: setsid makes it the leader, so the JVM stays in its session.
# Another process may bind the port first (the JVM says BindException):
# then another port is tried, as the test harness does.
for attempt in 1 2 3 4; do
  EMU_PORT=$(free_port)
  CLOUDSDK_CORE_DISABLE_PROMPTS=1 CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK=1 \
    setsid gcloud emulators firestore start --host-port="127.0.0.1:$EMU_PORT" </dev/null >"$TMP/emulator.log" 2>&1 &
  EMU_SID=$!
  up=0
  for i in $(seq 1 900); do
    if grep -q "Dev App Server is now running" "$TMP/emulator.log" && curl -sf -o /dev/null "http://127.0.0.1:$EMU_PORT/"; then up=1; break; fi
    kill -0 "$EMU_SID" 2>/dev/null || break
    sleep 0.1
  done
  if (( up )); then PIDS+=($EMU_SID); break; fi
  kill -TERM -- "-$EMU_SID" 2>/dev/null || true
  wait "$EMU_SID" 2>/dev/null || true
  if ! grep -q "Executing:" "$TMP/emulator.log"; then
    log "SKIPPED: gcloud could not run the Firestore emulator (its component or Java is missing)"
    printf '{"bench":"documents","skipped":"gcloud could not run the Firestore emulator: %s"}\n' \
      "$(tail -1 "$TMP/emulator.log" | tr -d '"\\' | cut -c1-200)"
    exit 0
  fi
  (( attempt < 4 )) && grep -q BindException "$TMP/emulator.log" && continue
  tail -30 "$TMP/emulator.log" >&2
  die "the Firestore emulator did not start (see its output above)"
done
EMU=127.0.0.1:$EMU_PORT

# --- 2. Latchkey ----------------------------------------------------------------
LK_PORT=$(free_port)
LK_DATA=$TMP/latchkey
mkdir -p "$LK_DATA/policies"
cp "$ROOT"/crates/policy/starter/*.cedar "$ROOT/crates/policy/starter/entities.json" "$LK_DATA/policies/"
write_config() { # backend file
  cat >"$2" <<EOF
[server]
listen = "127.0.0.1:$LK_PORT"
data_dir = "$LK_DATA"

[keys]
master_key = { value = "$(head -c 32 /dev/urandom | base64)" }

[dev_issuer]
enabled = true
allow_in_serve = true
EOF
  if [ "$1" = embedded ]; then
    cat >>"$2" <<EOF

[documents]
backend = "embedded"
databases = { "(default)" = "dev" }
EOF
  else
    cat >>"$2" <<EOF

[firestore]
emulator = "$EMU"
databases = { "(default)" = "dev" }
EOF
  fi
}
# The embedded store unless asked otherwise: what the issue's target is for.
[ "$BACKEND" = auto ] && BACKEND=embedded
# A port free a moment ago may be taken before the gateway binds it (the
# emulator's JVM opens more ports as it starts): then another is tried.
for attempt in 1 2 3 4; do
  write_config "$BACKEND" "$TMP/latchkey.toml"
  LATCHKEY_LOG=warn setsid "$BIN" serve --config "$TMP/latchkey.toml" >"$TMP/latchkey.log" 2>&1 &
  LK_SID=$!
  LK_URL=http://127.0.0.1:$LK_PORT
  up=0
  for i in $(seq 1 200); do
    if curl -s -o /dev/null "$LK_URL/admin/health"; then up=1; break; fi
    kill -0 "$LK_SID" 2>/dev/null || break
    sleep 0.05
  done
  (( up )) && break
  wait "$LK_SID" 2>/dev/null || true
  if (( attempt < 4 )) && grep -q "Address already in use" "$TMP/latchkey.log"; then
    LK_PORT=$(free_port)
    continue
  fi
  cat "$TMP/latchkey.log" >&2; die "latchkey serve did not answer at $LK_URL"
done
PIDS+=($LK_SID)
lk_token() {
  local id
  id=$("$BIN" dev token --data "$LK_DATA" --url "$LK_URL" --user bench --group developers) || return 1
  "$BIN" token --url "$LK_URL" --subject-token "$id" --audience documents
}
TOKEN=$(lk_token) || die "no Latchkey token for audience documents; see $TMP/latchkey.log"

# --- 3. checks and seeding --------------------------------------------------------
DOC_PATH="/v1/projects/$PROJECT/databases/(default)/documents/blk_read/r0000"
code=$(curl -s -o /dev/null -w '%{http_code}' "$LK_URL$DOC_PATH")
[ "$code" = 401 ] || die "a read without a token answered HTTP $code, not 401"
bench() { # target mode prefix args...
  local target=$1 mode=$2 prefix=$3; shift 3
  (cd "$NODE_DIR" && LATCHKEY_TOKEN=$TOKEN node bench.mjs --mode "$mode" --target "$target" \
    --project "$PROJECT" --prefix "$prefix" "$@" 2>>"$TMP/bench.log")
}
bench "$EMU" emulator bemu_ --phase seed >/dev/null || { tail -20 "$TMP/bench.log" >&2; die "seeding the emulator failed"; }
bench "127.0.0.1:$LK_PORT" "$MODE" blk_ --phase seed >/dev/null \
  || { tail -20 "$TMP/bench.log" >&2; die "seeding through Latchkey failed; see $TMP/latchkey.log"; }
audited() { grep -c '"action":"document.get"' "$LK_DATA/audit/audit.log" || true; }
before=$(audited)
code=$(curl -s -o "$TMP/read.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$LK_URL$DOC_PATH")
[ "$code" = 200 ] || die "a read with the token answered HTTP $code: $(head -c 300 "$TMP/read.json")"
jq -e '.fields.i.integerValue == "0"' "$TMP/read.json" >/dev/null || die "the read answered another document: $(head -c 300 "$TMP/read.json")"
after=$(audited)
(( after > before )) || die "the read through Latchkey added no document.get record to its audit log"
log "backend $BACKEND; checked: 401 without a token, the seeded document with one, and its audit record"

# --- 4. measure -------------------------------------------------------------------
declare -A TARGET CMODE PREFIX RPS P50 P99 GW_CPU EMU_CPU
TARGET[emulator]=$EMU; CMODE[emulator]=emulator; PREFIX[emulator]=bemu_
TARGET[latchkey]=127.0.0.1:$LK_PORT; CMODE[latchkey]=$MODE; PREFIX[latchkey]=blk_
contestants=(emulator latchkey)
# The emulator's JVM compiles its hot paths during the first seconds of
# load (rounds against a cold JVM ran 3x slower): one untimed pass of
# every operation against both targets first.
if (( JVM_WARMUP > 0 )); then
  log "warming up: ${JVM_WARMUP} s of each operation against each target, untimed"
  for op in $OPS; do
    for c in "${contestants[@]}"; do
      bench "${TARGET[$c]}" "${CMODE[$c]}" "${PREFIX[$c]}" --op "$op" --seconds 1 --warmup "$JVM_WARMUP" \
        --concurrency "$CONCURRENCY" >/dev/null || { tail -20 "$TMP/bench.log" >&2; die "$op against $c failed"; }
    done
  done
fi
log "measuring $OPS: $ROUNDS rounds of ${WARMUP} s warm-up + ${DURATION} s, $CONCURRENCY calls in flight, $MODE to Latchkey"
for r in $(seq 1 "$ROUNDS"); do
  TOKEN=$(lk_token) || die "no Latchkey token for audience documents; see $TMP/latchkey.log"
  summary=()
  for op in $OPS; do
    for i in 0 1; do
      c=${contestants[$(( (i + r - 1) % 2 ))]}
      t0=$(session_ticks "$LK_SID"); e0=$(session_ticks "$EMU_SID")
      line=$(bench "${TARGET[$c]}" "${CMODE[$c]}" "${PREFIX[$c]}" --op "$op" --seconds "$DURATION" \
        --warmup "$WARMUP" --concurrency "$CONCURRENCY") \
        || { tail -20 "$TMP/bench.log" >&2; die "$op against $c failed; see $TMP/latchkey.log"; }
      t1=$(session_ticks "$LK_SID"); e1=$(session_ticks "$EMU_SID")
      k="$c:$op"
      calls=$(jq -r .calls <<<"$line")
      RPS[$k]+="$(jq -r .calls_per_s <<<"$line") "; P50[$k]+="$(jq -r .p50_us <<<"$line") "; P99[$k]+="$(jq -r .p99_us <<<"$line") "
      # The ticks include the warm-up: its share is taken out in
      # proportion to its length (an estimate; the client runs both).
      per_call() { awk -v t="$1" -v hz="$HZ" -v n="$calls" -v w="$WARMUP" -v d="$DURATION" \
        'BEGIN{printf "%.1f", t/hz*1e6/n*d/(d+w)}'; }
      GW_CPU[$k]+="$(per_call $(( t1 - t0 ))) "; EMU_CPU[$k]+="$(per_call $(( e1 - e0 ))) "
      summary+=("$op $c $(jq -r .calls_per_s <<<"$line")/s p99 $(jq -r .p99_us <<<"$line")us")
    done
  done
  log "round $r/$ROUNDS: $(IFS=';'; echo "${summary[*]}")"
done

# --- 5. report --------------------------------------------------------------------
kill -0 "$LK_SID" 2>/dev/null || die "latchkey exited; see $TMP/latchkey.log"
list() { echo "$1" | xargs | tr ' ' ','; }
decisions=$(grep -c '"kind":"decision".*"action":"document\.' "$LK_DATA/audit/audit.log" || true)
for op in $OPS; do
  for c in "${contestants[@]}"; do
    k="$c:$op"
    printf '{"bench":"documents_%s_%s","backend":"%s","calls_per_s":%s,"p50_us":%s,"p99_us":%s,"gateway_cpu_us_per_call":%s,"emulator_cpu_us_per_call":%s,"runs_calls_per_s":[%s],"runs_p99_us":[%s],"rounds":%d,"seconds":%d,"concurrency":%d,"mode":"%s"}\n' \
      "$op" "$c" "$( [ $c = latchkey ] && echo "$BACKEND" || echo emulator )" "$(median ${RPS[$k]})" "$(median ${P50[$k]})" "$(median ${P99[$k]})" \
      "$(median ${GW_CPU[$k]})" "$(median ${EMU_CPU[$k]})" "$(list "${RPS[$k]}")" "$(list "${P99[$k]}")" "$ROUNDS" "$DURATION" "$CONCURRENCY" "${CMODE[$c]}"
  done
  awk -v op="$op" -v b="$BACKEND" -v ra="$(median ${RPS[latchkey:$op]})" -v rb="$(median ${RPS[emulator:$op]})" \
      -v pa="$(median ${P99[latchkey:$op]})" -v pb="$(median ${P99[emulator:$op]})" 'BEGIN{
    rr = ra / rb; pr = pa / pb; met = (rr >= 1.0) && (pr <= 1.0);
    printf "{\"bench\":\"documents_%s_latchkey_vs_emulator\",\"backend\":\"%s\",\"calls_per_s_ratio\":%.3f,\"target_calls_per_s_ratio_min\":1.0,\"p99_ratio\":%.3f,\"target_p99_ratio_max\":1.0,\"met\":%s}\n", op, b, rr, pr, met ? "true" : "false" }'
done
printf '{"bench":"documents_audit","backend":"%s","document_decisions_recorded":%d,"gateway_peak_rss_mib":%.1f}\n' \
  "$BACKEND" "$decisions" "$(awk '/^VmHWM:/{print $2/1024}' "/proc/$LK_SID/status")"
