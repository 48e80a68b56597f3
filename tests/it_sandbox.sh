#!/usr/bin/env bash
# The broker and an agent work inside the system-call sandbox of their units: the
# SystemCallFilter= lines of deploy/systemd/*.service, expanded with systemd-analyze,
# RestrictAddressFamilies= and MemoryDenyWriteExecute=, applied by sandbox_run (seccomp)
# as systemd would. Earns through the till socket and the HTTP API and a burn must be
# approved, and both programs must stop cleanly on SIGTERM. Controls that the sandbox
# bites: without AF_NETLINK, or without sched_setscheduler, libzmq aborts the broker at
# start (the reasons the units allow them). Skipped (77) without systemd-analyze.
#   it_sandbox.sh REPO BUILD_DIR SANDBOX_RUN
set -euo pipefail
repo=${1:?repository}
build=${2:?build directory}
sandbox=${3:?sandbox_run}
units=$repo/deploy/systemd
ready_polls=100 # x 0.1 s
# In a sanitizer build: LeakSanitizer's exit check needs ptrace, which no unit allows.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"

command -v systemd-analyze >/dev/null || { echo "SKIP: no systemd-analyze"; exit 77; }
scratch=$(mktemp -d /tmp/coalition-sandbox.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$scratch"
}
trap cleanup EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# The system calls of every group named, recursively (systemd-analyze lists each group).
expand() {
  systemd-analyze syscall-filter 2>/dev/null | awk -v roots="$*" '
    /^@/ { g = $1; next }
    { sub(/^[ \t]+/, ""); if ($0 == "" || $0 ~ /^#/) next; n[g]++; m[g, n[g]] = $1 }
    function walk(x, i) {
      if (x in seen) return
      seen[x] = 1
      if (x !~ /^@/) { print x; return }
      for (i = 1; i <= n[x]; i++) walk(m[x, i])
    }
    END { k = split(roots, r, " "); for (j = 1; j <= k; j++) walk(r[j]) }' | sort -u
}

# A unit's SystemCallFilter= lines in order: the first sets the allow list, "~" lines
# take calls away, later plain lines add them back (systemd.exec(5)).
unit_syscalls() { # UNIT OUT
  local first=1 value
  : >"$2"
  while IFS= read -r value; do
    if [ "$first" -eq 1 ]; then
      expand "$value" >"$2"
      first=0
    elif [ "${value#\~}" != "$value" ]; then
      expand "${value#\~}" | comm -23 "$2" - >"$2.new" && mv "$2.new" "$2"
    else
      expand "$value" | sort -u - "$2" >"$2.new" && mv "$2.new" "$2"
    fi
  done < <(sed -n 's/^SystemCallFilter=//p' "$1")
}
unit_families() { sed -n 's/^RestrictAddressFamilies=//p' "$1" | tr ' ' ','; }

unit_syscalls "$units/coalition-broker.service" "$scratch/broker.calls"
unit_syscalls "$units/coalition-agent@.service" "$scratch/agent.calls"
broker_families=$(unit_families "$units/coalition-broker.service")
agent_families=$(unit_families "$units/coalition-agent@.service")
grep -qx sched_setscheduler "$scratch/broker.calls" || fail "broker unit: sched_setscheduler not allowed"
if grep -qx setuid "$scratch/broker.calls"; then fail "broker unit: setuid allowed (@privileged)"; fi
echo "broker: $(wc -l <"$scratch/broker.calls") system calls, families $broker_families"

ctl() { "$build/broker/coalitionctl" --ledger "$scratch/ledger" "$@"; }
ctl init >/dev/null
port=$((20000 + RANDOM % 20000))
http_port=$((port + 1))
endpoint=tcp://127.0.0.1:$port

start_broker() { # CALLS FAMILIES LOG
  rm -f "$scratch/ledger/admin.sock"
  "$sandbox" "$1" "$2" "$build/broker/coalition-broker" --ledger "$scratch/ledger" \
    --bind "$endpoint" 2>"$3" &
  broker_pid=$!
  pids+=("$broker_pid")
}
# True once the partner port takes connections and the admin socket (bound after it)
# exists; false if the broker died first.
wait_broker() {
  for _ in $(seq "$ready_polls"); do
    kill -0 "$broker_pid" 2>/dev/null || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && [ -S "$scratch/ledger/admin.sock" ]; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Controls: the sandbox bites where the units say it must not.
grep -vx sched_setscheduler "$scratch/broker.calls" >"$scratch/no-sched.calls"
start_broker "$scratch/no-sched.calls" "$broker_families" "$scratch/no-sched.log"
if wait_broker; then fail "broker served without sched_setscheduler: the sandbox is not applied"; fi
kill -KILL "$broker_pid" 2>/dev/null || true
wait "$broker_pid" 2>/dev/null || true
start_broker "$scratch/broker.calls" "${broker_families/,AF_NETLINK/}" "$scratch/no-netlink.log"
if wait_broker; then fail "broker served without AF_NETLINK: the sandbox is not applied"; fi
kill -KILL "$broker_pid" 2>/dev/null || true
wait "$broker_pid" 2>/dev/null || true

# The real thing: broker and agent inside their units' sandboxes.
start_broker "$scratch/broker.calls" "$broker_families" "$scratch/broker.log"
wait_broker || { cat "$scratch/broker.log"; fail "broker did not come up in its sandbox"; exit 1; }
ctl partner add fuel --earn-rate 2 >/dev/null
ctl member add m1 >/dev/null
ctl key new fuel --role partner --out "$scratch/fuel.key" >/dev/null
"$sandbox" "$scratch/agent.calls" "$agent_families" "$build/partner-agent/coalition-agent" \
  --partner fuel --key "$scratch/fuel.key" --broker-key "$scratch/ledger/broker.pub" \
  --data "$scratch/agent-fuel" --broker "$endpoint" --http "127.0.0.1:$http_port" \
  2>"$scratch/agent.log" &
agent_pid=$!
pids+=("$agent_pid")
pos() { "$build/partner-agent/coalition-pos" --agent "ipc://$scratch/agent-fuel/pos.sock" "$@"; }
for _ in $(seq "$ready_polls"); do
  pos balance --member m1 >/dev/null 2>&1 && break
  sleep 0.1
done
earn=$(pos earn --member m1 --amount 12.34 --txn t1 2>&1 || true)
http_earn=$(curl -s --max-time 10 -X POST "http://127.0.0.1:$http_port/v1/earn" \
  -H 'Idempotency-Key: h1' -d '{"member":"m1","amount":1000}' 2>&1 || true)
burn=$(pos burn --member m1 --points 5 --txn t2 2>&1 || true)
case "$earn" in "APPROVED 00  Earned 24 points. Balance 24"*) ;; *) fail "earn: $earn" ;; esac
case "$http_earn" in *'"code":"00","approved":true,"points":20,"balance":44,'*) ;;
  *) fail "earn over HTTP: $http_earn" ;; esac
case "$burn" in "APPROVED 00  Redeemed 5 points. Balance 39"*) ;; *) fail "burn: $burn" ;; esac
status=0
kill -TERM "$agent_pid"; wait "$agent_pid" || status=$?
[ "$status" -eq 0 ] || fail "agent exit status on SIGTERM: $status (log: $(tail -n 3 "$scratch/agent.log"))"
status=0
kill -TERM "$broker_pid"; wait "$broker_pid" || status=$?
[ "$status" -eq 0 ] || fail "broker exit status on SIGTERM: $status (log: $(tail -n 3 "$scratch/broker.log"))"
pids=()
verify=$(ctl verify 2>&1 || true)
case "$verify" in "verify: OK: 6 entries"*) ;; *) fail "verify after the sandboxed run: $verify" ;; esac

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "broker and agent ran inside their units' system-call sandboxes"
