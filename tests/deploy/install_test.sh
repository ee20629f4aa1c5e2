#!/bin/sh
# deploy/install.sh into a temporary root: a real PKI from `echofed pki`,
# the coordinator and an agent installed side by side, then
#   - files, modes (key 0600, kit folder 0750) and what the configs say;
#   - the installed agent config and kit load (`echofed-agent doctor`);
#   - `systemd-analyze verify` of the installed units, with any warning
#     about them a failure (verify itself exits 0 on warnings).
# Exit 77 (skipped) without systemd-analyze.
#
# Usage: tests/deploy/install_test.sh SOURCE_DIR BUILD_DIR
set -u

case "${1:-}" in
  -h | --help)
    # The comment at the top of this file.
    sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
if [ $# -ne 2 ]; then
  echo "usage: $0 SOURCE_DIR BUILD_DIR" >&2
  exit 2
fi
source_dir=$1
build_dir=$2
analyze=${SYSTEMD_ANALYZE:-/usr/bin/systemd-analyze}
if [ ! -x "$analyze" ]; then
  echo "SKIP: $analyze not found; cannot verify the systemd units here"
  exit 77
fi

failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
expect_mode() {  # path mode
  mode=$(stat -c %a "$1" 2>/dev/null || echo missing)
  [ "$mode" = "$2" ] || fail "$1: mode $mode, expected $2"
}
expect_line() {  # file fixed-string
  grep -qxF -- "$2" "$1" || fail "$1 lacks the line '$2'"
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/echofed-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
echofed=$build_dir/bin/echofed

# A study PKI as the coordinating centre makes it.
if ! { "$echofed" pki init --dir "$tmp/pki" --study "install test" &&
  "$echofed" pki issue --dir "$tmp/pki" --identity coordinator \
    --role coordinator --host localhost &&
  "$echofed" pki issue --dir "$tmp/pki" --identity site-1 --role site; } \
  >"$tmp/pki.log" 2>&1; then
  cat "$tmp/pki.log"
  echo "FAIL: echofed pki"
  exit 1
fi
chmod 0644 "$tmp/pki/site-1/key.pem"  # the installer must tighten it

install="$source_dir/deploy/install.sh"
sh "$install" coordinator --pki "$tmp/pki" --root "$root" \
  --build-dir "$build_dir" >"$tmp/install-coordinator.log" 2>&1 ||
  { cat "$tmp/install-coordinator.log"; fail "install.sh coordinator"; }
sh "$install" agent --kit "$tmp/pki/site-1" --coordinator 127.0.0.1:9 \
  --data-dir /srv/hospital/images --device cpu --root "$root" \
  --build-dir "$build_dir" >"$tmp/install-agent.log" 2>&1 ||
  { cat "$tmp/install-agent.log"; fail "install.sh agent"; }

# --- files and modes
for program in echofed-coordinator echofed echofed-agent; do
  [ -x "$root/usr/local/bin/$program" ] || fail "usr/local/bin/$program missing"
done
for role in coordinator agent; do
  etc=$root/etc/echofed/$role
  expect_mode "$etc" 750
  expect_mode "$etc/kit" 750
  expect_mode "$etc/kit/key.pem" 600
  expect_mode "$etc/kit/cert.pem" 644
  expect_mode "$etc/kit/ca.pem" 644
  expect_mode "$etc/$role.textproto" 640
  expect_mode "$root/etc/systemd/system/echofed-$role.service" 644
done
cmp -s "$tmp/pki/site-1/cert.pem" "$root/etc/echofed/agent/kit/cert.pem" ||
  fail "agent kit: not the issued certificate"
cmp -s "$tmp/pki/coordinator/key.pem" \
  "$root/etc/echofed/coordinator/kit/key.pem" ||
  fail "coordinator kit: not the issued key"
cmp -s "$tmp/pki/enrolment.textproto" \
  "$root/etc/echofed/coordinator/enrolment.textproto" ||
  fail "enrolment list not installed"
[ -z "$(find "$root" -name ca.key)" ] || fail "the CA key was copied"
for role in coordinator agent; do
  grep -q "^u echofed-$role " "$root/etc/sysusers.d/echofed-$role.conf" ||
    fail "sysusers.d entry for echofed-$role missing"
done

# --- configs and units point at the installed places
agent_config=$root/etc/echofed/agent/agent.textproto
expect_line "$agent_config" 'coordinator_address: "127.0.0.1:9"'
expect_line "$agent_config" 'device: "cpu"'
coordinator_config=$root/etc/echofed/coordinator/coordinator.textproto
grep -q '^enrolment_file: "enrolment.textproto"' "$coordinator_config" ||
  fail "coordinator config: enrolment_file is not the installed copy"
grep -q '^state_dir: "/var/lib/echofed-coordinator"' "$coordinator_config" ||
  fail "coordinator state_dir is not the unit's StateDirectory"
agent_unit=$root/etc/systemd/system/echofed-agent.service
coordinator_unit=$root/etc/systemd/system/echofed-coordinator.service
expect_line "$agent_unit" 'ReadOnlyPaths=/srv/hospital/images'
expect_line "$agent_unit" \
  'ExecStart=/usr/local/bin/echofed-agent run --config /etc/echofed/agent/agent.textproto'
expect_line "$coordinator_unit" \
  'ExecStart=/usr/local/bin/echofed-coordinator --config /etc/echofed/coordinator/coordinator.textproto'
for unit in "$agent_unit" "$coordinator_unit"; do
  for line in ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
    NoNewPrivileges=yes CapabilityBoundingSet= Restart=on-failure; do
    expect_line "$unit" "$line"
  done
  grep -q '^User=echofed-' "$unit" || fail "$unit: no dedicated User="
  grep -q '^StateDirectory=echofed-' "$unit" || fail "$unit: no StateDirectory="
done

# --- the installed agent config and kit load: the doctor reads them (the
# coordinator address is a closed port, so the network checks fail fast).
"$root/usr/local/bin/echofed-agent" doctor --config "$agent_config" \
  --state-dir "$tmp" >"$tmp/doctor.log" 2>&1
for line in "PASS  certificate " "PASS  private key" "PASS  study CA" \
  "PASS  identity"; do
  grep -qF -- "$line" "$tmp/doctor.log" ||
    fail "doctor on the installed kit: no '$line'"
done
grep -qF "FAIL  config" "$tmp/doctor.log" && fail "installed agent config"
[ $failures -eq 0 ] || cat "$tmp/doctor.log"


# --- systemd-analyze verify, inside the root: the system's own units are
# needed there (sysinit.target and friends), ExecStart must exist there.
mkdir -p "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/" 2>/dev/null ||
  cp -a /lib/systemd/system "$root/usr/lib/systemd/"
verify() {  # unit files (paths inside the root)
  "$analyze" verify --man=no --root="$root" "$@" 2>&1
}
output=$(verify /etc/systemd/system/echofed-coordinator.service \
  /etc/systemd/system/echofed-agent.service)
status=$?
if [ $status -ne 0 ] || [ -n "$output" ]; then
  echo "$output"
  fail "systemd-analyze verify: status $status, warnings above"
fi

# The check itself must catch a bad unit: a copy with a typo.
sed 's/^ProtectSystem=strict/ProtectSytem=strict/' "$agent_unit" \
  >"$root/etc/systemd/system/echofed-typo.service"
output=$(verify /etc/systemd/system/echofed-typo.service)
case "$output" in
  *"Unknown key"*) ;;
  *) fail "systemd-analyze verify did not report a misspelt key: $output" ;;
esac
rm "$root/etc/systemd/system/echofed-typo.service"

# --- another prefix: the unit follows it.
sh "$install" agent --kit "$tmp/pki/site-1" --coordinator 127.0.0.1:9 \
  --prefix /opt/echofed --root "$root" --build-dir "$build_dir" \
  >/dev/null 2>&1 || fail "install.sh agent --prefix /opt/echofed"
expect_line "$agent_unit" \
  'ExecStart=/opt/echofed/bin/echofed-agent run --config /etc/echofed/agent/agent.textproto'
output=$(verify /etc/systemd/system/echofed-agent.service)
[ -z "$output" ] || { echo "$output"; fail "verify with --prefix /opt/echofed"; }

# --- refusals
if sh "$install" agent --kit "$tmp/nowhere" --coordinator x:1 --root "$root" \
  --build-dir "$build_dir" >/dev/null 2>&1; then
  fail "install.sh accepted a missing kit"
fi

if [ $failures -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "install.sh and the systemd units: all checks passed"
