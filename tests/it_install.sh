#!/usr/bin/env bash
# deploy/install into a scratch root, from an existing build (no build step): the
# programs, the user, owner-only data directories, /etc/coalition and the units, with
# exact modes and owners; systemd-analyze accepts the units (no unknown keys, programs
# found) and scores them at most 1.2; a second run keeps what the operator changed; bad
# options are refused before anything is written. Needs root (files are chowned to the
# service user); exits 77 (skipped) otherwise.
#   it_install.sh REPO BUILD_DIR
set -euo pipefail
repo=${1:?repository}
build=${2:?build directory}
prefix=/opt/coalition
exposure_max=12 # systemd-analyze's tenths: 1.2

[ "$(id -u)" -eq 0 ] || { echo "SKIP: deploy/install needs root"; exit 77; }
scratch=$(mktemp -d /tmp/coalition-install.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
root=$scratch/root
mkdir "$root"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
expect_eq() { # WHAT EXPECTED GOT
  [ "$2" = "$3" ] || fail "$1: expected '$2', got '$3'"
}
mode_owner() { stat -c '%a %u:%g' "$1" 2>/dev/null || echo missing; }
install_into() {
  "$repo/deploy/install" --root "$root" --prefix "$prefix" --build-dir "$build" --no-build "$@"
}

# Refused before anything is written.
for bad in "--agent ../evil" "--prefix relative/dir" "--prefix /opt/a|b" "--frobnicate"; do
  # shellcheck disable=SC2086 # word splitting of the option and its value is wanted
  if install_into $bad >"$scratch/out" 2>&1; then fail "install $bad: expected failure"; fi
  expect_eq "files written by a refused install $bad" "" "$(find "$root" -mindepth 1)"
done
if "$repo/deploy/install" --root "$root" --build-dir "$scratch/nowhere" --no-build \
     >"$scratch/out" 2>&1; then
  fail "install from a missing build: expected failure"
fi
grep -q "missing: build first" "$scratch/out" || fail "missing build: no message: $(cat "$scratch/out")"
expect_eq "files written by an install without a build" "" "$(find "$root" -mindepth 1)"

status=0
install_into --agent fuel --agent grocer >"$scratch/out" 2>&1 || status=$?
[ "$status" -eq 0 ] || { cat "$scratch/out"; fail "install exited $status"; exit 1; }

# The user, from the scratch root's own passwd.
line=$(grep '^coalition:' "$root/etc/passwd" || true)
[ -n "$line" ] || { fail "no coalition user in $root/etc/passwd"; exit 1; }
IFS=: read -r _ _ uid gid _ home shell <<<"$line"
expect_eq "home" /var/lib/coalition "$home"
expect_eq "shell" /usr/sbin/nologin "$shell"
grep -q "^coalition:x:$gid:" "$root/etc/group" || fail "no coalition group $gid"
[ "$uid" -ne 0 ] || fail "coalition user is root"

# Programs.
for p in coalition-broker coalition-agent coalitionctl coalition-pos; do
  expect_eq "$prefix/bin/$p" "755 0:0" "$(mode_owner "$root$prefix/bin/$p")"
  cmp -s "$root$prefix/bin/$p" "$(find "$build" -name "$p" -type f | head -1)" ||
    fail "$p differs from the build's"
done
"$root$prefix/bin/coalition-broker" --help | grep -q "^Usage: coalition-broker" ||
  fail "installed broker does not run"

# Data and configuration.
for d in /var/lib/coalition /var/lib/coalition/ledger /var/lib/coalition/agent-fuel \
         /var/lib/coalition/agent-grocer; do
  expect_eq "$d" "700 $uid:$gid" "$(mode_owner "$root$d")"
done
expect_eq /etc/coalition "750 0:$gid" "$(mode_owner "$root/etc/coalition")"
for f in broker.ini agent.ini.example agent-fuel.ini agent-grocer.ini; do
  expect_eq "/etc/coalition/$f" "640 0:$gid" "$(mode_owner "$root/etc/coalition/$f")"
done
cmp -s "$repo/deploy/config/broker.ini" "$root/etc/coalition/broker.ini" ||
  fail "broker.ini is not deploy/config/broker.ini"
grep -qx "partner = fuel" "$root/etc/coalition/agent-fuel.ini" || fail "agent-fuel.ini: not partner fuel"
if grep -qE "^[a-z-]+ = .*example" "$root/etc/coalition/agent-grocer.ini"; then
  fail "agent-grocer.ini: a setting still names 'example'"
fi
# Two agents on one host: each its own HTTP API port (the same one stops the second agent,
# and Restart= starts it again for ever), and a second install keeps the ports given.
http_of() { sed -n 's/^http = //p' "$root/etc/coalition/agent-$1.ini"; }
[ -n "$(http_of fuel)" ] || fail "agent-fuel.ini: no http setting"
[ "$(http_of fuel)" != "$(http_of grocer)" ] ||
  fail "agent-fuel.ini and agent-grocer.ini: the same HTTP address $(http_of fuel)"
# The installed programs take the installed settings, and the paths are the units'.
broker_settings=$("$root$prefix/bin/coalition-broker" --config "$root/etc/coalition/broker.ini" \
  --print-config 2>&1) || fail "broker rejects the installed broker.ini: $broker_settings"
grep -q "^ledger = /var/lib/coalition/ledger " <<<"$broker_settings" ||
  fail "broker.ini: ledger is not the unit's StateDirectory: $broker_settings"
agent_settings=$("$root$prefix/bin/coalition-agent" --config "$root/etc/coalition/agent-fuel.ini" \
  --partner fuel --print-config 2>&1) || fail "agent rejects the installed agent-fuel.ini: $agent_settings"
grep -q "^data = /var/lib/coalition/agent-fuel " <<<"$agent_settings" ||
  fail "agent-fuel.ini: data is not the unit's StateDirectory: $agent_settings"

# Units: in lib/systemd/system, pointing at the prefix, sandboxed as written.
units=$root/lib/systemd/system
for u in coalition-broker.service coalition-agent@.service; do
  expect_eq "$u" "644 0:0" "$(mode_owner "$units/$u")"
  grep -q "^User=coalition$" "$units/$u" || fail "$u: not User=coalition"
  grep -q "^Type=notify$" "$units/$u" || fail "$u: not Type=notify"
  grep -q "^WatchdogSec=" "$units/$u" || fail "$u: no WatchdogSec="
  grep -q "/usr/local/bin" "$units/$u" && fail "$u: still names /usr/local/bin"
done
grep -qx "ExecStart=$prefix/bin/coalition-broker --config /etc/coalition/broker.ini" \
  "$units/coalition-broker.service" || fail "broker ExecStart not under $prefix"
grep -qx "ExecStart=$prefix/bin/coalition-agent --config /etc/coalition/agent-%i.ini --partner %i" \
  "$units/coalition-agent@.service" || fail "agent ExecStart not under $prefix"

if command -v systemd-analyze >/dev/null; then
  # security: parses each unit (an unknown key is a warning on stderr) and scores it.
  if ! systemd-analyze security --offline=true --root="$root" --threshold="$exposure_max" \
       coalition-broker.service coalition-agent@fuel.service >"$scratch/security" \
       2>"$scratch/security.err"; then
    fail "systemd-analyze security: exposure over $exposure_max tenths: $(grep Overall "$scratch/security")"
  fi
  expect_eq "systemd-analyze security warnings" "" "$(cat "$scratch/security.err")"
  expect_eq "units scored" 2 "$(grep -c 'Overall exposure level' "$scratch/security")"
  # verify: the programs each ExecStart names exist and run (paths moved into the root).
  mkdir "$scratch/verify"
  sed "s|$prefix/bin/|$root$prefix/bin/|g" "$units/coalition-broker.service" \
    >"$scratch/verify/coalition-broker.service"
  sed "s|$prefix/bin/|$root$prefix/bin/|g" "$units/coalition-agent@.service" \
    >"$scratch/verify/coalition-agent@fuel.service"
  systemd-analyze verify "$scratch/verify/coalition-broker.service" \
    "$scratch/verify/coalition-agent@fuel.service" >"$scratch/verify.out" 2>&1 ||
    fail "systemd-analyze verify: $(cat "$scratch/verify.out")"
  expect_eq "systemd-analyze verify output" "" "$(cat "$scratch/verify.out")"
else
  echo "SKIP part: systemd-analyze not installed; units not analyzed"
fi

# Again: what the operator changed stays, the data stays, modes are put right.
echo 'bind = tcp://0.0.0.0:7700' >>"$root/etc/coalition/broker.ini"
edited=$(cat "$root/etc/coalition/broker.ini")
echo ledger-bytes >"$root/var/lib/coalition/ledger/data.mdb"
chmod 0755 "$root/var/lib/coalition/ledger"
install_into --agent fuel >"$scratch/out" 2>&1 || fail "second install exited $?: $(cat "$scratch/out")"
expect_eq "broker.ini after a second install" "$edited" "$(cat "$root/etc/coalition/broker.ini")"
expect_eq "ledger after a second install" ledger-bytes "$(cat "$root/var/lib/coalition/ledger/data.mdb")"
expect_eq "ledger mode after a second install" "700 $uid:$gid" \
  "$(mode_owner "$root/var/lib/coalition/ledger")"
expect_eq "one coalition user" 1 "$(grep -c '^coalition:' "$root/etc/passwd")"

if [ "$failures" -gt 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "deploy/install: all checks passed"
