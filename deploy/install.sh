#!/bin/sh
# Installs the coordinator or a site agent as a hardened systemd service:
# the built binaries, a config, the participant's kit (key mode 0600) and the
# unit from deploy/systemd/. See README, "Deploying for real".
#
#   deploy/install.sh coordinator --pki pki [--listen 0.0.0.0:7443]
#   deploy/install.sh agent --kit pki/hospital-zju \
#       --coordinator coordinator.study.example:7443 --data-dir /srv/echofed/data
#
# Layout (FHS):
#   PREFIX/bin/echofed-coordinator, echofed     (coordinator)
#   PREFIX/bin/echofed-agent                    (agent)
#   /etc/echofed/ROLE/ROLE.textproto            config (kept if present)
#   /etc/echofed/ROLE/kit/ca.pem cert.pem key.pem
#   /etc/echofed/coordinator/enrolment.textproto, crl.pem
#   /etc/systemd/system/echofed-ROLE.service
#   /etc/sysusers.d/echofed-ROLE.conf           the service's system user
#   /var/lib/echofed-ROLE                       state (systemd StateDirectory)
#
# --root DIR installs into DIR instead of / (tests, images): no users are
# created, nothing is chowned and systemctl is not called.
set -eu

usage() {
  sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
  echo
  cat <<'EOF'
Options:
  --kit DIR            the participant's kit (`echofed pki issue`): ca.pem,
                       cert.pem, key.pem
  --pki DIR            coordinator: the PKI folder; takes DIR/coordinator as
                       the kit (unless --kit), DIR/enrolment.textproto and
                       DIR/crl.pem. The CA key (DIR/ca/ca.key) is never copied.
  --config FILE        install this config instead of writing one
  --coordinator ADDR   agent: host:port of the coordinator
  --data-dir DIR       agent: the site data folder (default /srv/echofed/data)
  --device DEV         agent: auto (default), cpu, cuda, cuda:N
  --listen ADDR        coordinator: listen address (default 0.0.0.0:7443)
  --build-dir DIR      where the binaries were built (default: build, with
                       the programs in DIR/bin)
  --prefix DIR         default /usr/local
  --root DIR           install under DIR instead of /
  --enable             root only: enable and start the service
EOF
}

die() {
  echo "install.sh: $*" >&2
  exit 1
}

here=$(cd "$(dirname "$0")" && pwd)
role=""
kit=""
pki=""
config=""
coordinator=""
data_dir=/srv/echofed/data
device=auto
listen=0.0.0.0:7443
build_dir="$here/../build"
prefix=/usr/local
root=""
enable=no

while [ $# -gt 0 ]; do
  case "$1" in
    coordinator | agent) role=$1 ;;
    --kit) kit=$2; shift ;;
    --pki) pki=$2; shift ;;
    --config) config=$2; shift ;;
    --coordinator) coordinator=$2; shift ;;
    --data-dir) data_dir=$2; shift ;;
    --device) device=$2; shift ;;
    --listen) listen=$2; shift ;;
    --build-dir) build_dir=$2; shift ;;
    --prefix) prefix=$2; shift ;;
    --root) root=$2; shift ;;
    --enable) enable=yes ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
  shift
done

[ -n "$role" ] || { usage >&2; die "say what to install: coordinator or agent"; }
case "$prefix" in /*) ;; *) die "--prefix must be an absolute path" ;; esac
case "$data_dir" in /*) ;; *) die "--data-dir must be an absolute path" ;; esac
if [ -n "$root" ]; then
  mkdir -p "$root"
  root=$(cd "$root" && pwd)
fi
if [ "$role" = coordinator ] && [ -z "$kit" ] && [ -n "$pki" ]; then
  kit="$pki/coordinator"
fi
[ -n "$kit" ] || die "give the participant's kit (--kit DIR; the coordinator also takes --pki DIR)"
for file in ca.pem cert.pem key.pem; do
  [ -r "$kit/$file" ] || die "$kit/$file is missing or unreadable (is $kit a kit from \`echofed pki issue\`?)"
done
if [ "$role" = agent ] && [ -z "$config" ] && [ -z "$coordinator" ]; then
  die "give the coordinator's address (--coordinator host:port) or a config (--config FILE)"
fi

user="echofed-$role"
# Everything the installed system sees is under $root; paths written into
# configs and units are the ones the installed system uses.
etc="/etc/echofed/$role"
bin="$prefix/bin"
units=/etc/systemd/system
as_root=no
if [ -z "$root" ] && [ "$(id -u)" -eq 0 ]; then as_root=yes; fi
if [ -z "$root" ] && [ "$as_root" = no ]; then
  die "installing into / needs root (or use --root DIR)"
fi

# --- binaries
if [ "$role" = coordinator ]; then programs="echofed-coordinator echofed"; else programs="echofed-agent"; fi
mkdir -p "$root$bin"
for program in $programs; do
  [ -x "$build_dir/bin/$program" ] || die "$build_dir/bin/$program not built (deploy/build.sh, or --build-dir)"
  install -m 0755 "$build_dir/bin/$program" "$root$bin/$program"
done

# --- kit: the key is readable by the service user only.
install -d -m 0750 "$root$etc" "$root$etc/kit"
install -m 0644 "$kit/ca.pem" "$root$etc/kit/ca.pem"
install -m 0644 "$kit/cert.pem" "$root$etc/kit/cert.pem"
install -m 0600 "$kit/key.pem" "$root$etc/kit/key.pem"

# --- config (an existing one is kept: it may carry the site's edits)
config_path="$root$etc/$role.textproto"
if [ -n "$config" ]; then
  install -m 0640 "$config" "$config_path"
elif [ -e "$config_path" ]; then
  echo "keeping the existing $etc/$role.textproto"
elif [ "$role" = coordinator ]; then
  crl_line="# crl_file: \"crl.pem\"   # the study CA's CRL (pki/crl.pem)"
  if [ -n "$pki" ] && [ -r "$pki/crl.pem" ]; then crl_line='crl_file: "crl.pem"'; fi
  cat >"$config_path" <<EOF
# echofed-coordinator --config $etc/coordinator.textproto
# (written by deploy/install.sh; relative paths are relative to this file)
listen_address: "$listen"
tls {
  ca_cert: "kit/ca.pem"
  cert: "kit/cert.pem"
  key: "kit/key.pem"
}
state_dir: "/var/lib/echofed-coordinator"   # the unit's StateDirectory
enrolment_file: "enrolment.textproto"       # copy of pki/enrolment.textproto
$crl_line
EOF
  chmod 0640 "$config_path"
else
  cat >"$config_path" <<EOF
# echofed-agent run --config $etc/agent.textproto
# (written by deploy/install.sh; relative paths are relative to this file)
coordinator_address: "$coordinator"
tls {
  ca_cert: "kit/ca.pem"
  cert: "kit/cert.pem"
  key: "kit/key.pem"
}
data_dir: "$data_dir"   # read only for the service (ReadOnlyPaths)
device: "$device"
state_dir: "/var/lib/echofed-agent"   # the unit's StateDirectory
EOF
  chmod 0640 "$config_path"
fi

if [ "$role" = coordinator ]; then
  if [ -n "$pki" ]; then
    [ -r "$pki/enrolment.textproto" ] || die "$pki/enrolment.textproto missing"
    install -m 0640 "$pki/enrolment.textproto" "$root$etc/enrolment.textproto"
    if [ -r "$pki/crl.pem" ]; then
      install -m 0644 "$pki/crl.pem" "$root$etc/crl.pem"
    fi
  elif [ ! -e "$root$etc/enrolment.textproto" ]; then
    echo "note: no --pki: copy pki/enrolment.textproto to $etc/enrolment.textproto"
  fi
fi

# --- unit and system user
mkdir -p "$root$units" "$root/etc/sysusers.d"
sed -e "s|/usr/local/bin/|$bin/|g" \
    -e "s|/srv/echofed/data|$data_dir|g" \
    "$here/systemd/echofed-$role.service" >"$root$units/echofed-$role.service"
chmod 0644 "$root$units/echofed-$role.service"
# Only this role's user: a hospital's machine gets no coordinator account.
{
  grep '^#' "$here/systemd/echofed.sysusers"
  grep "^u $user " "$here/systemd/echofed.sysusers"
} >"$root/etc/sysusers.d/$user.conf"
chmod 0644 "$root/etc/sysusers.d/$user.conf"

if [ "$as_root" = yes ]; then
  systemd-sysusers "/etc/sysusers.d/$user.conf"
  chown -R "root:$user" "$etc"
  chown "$user:$user" "$etc/kit/key.pem"
  systemctl daemon-reload
  if [ "$enable" = yes ]; then systemctl enable --now "echofed-$role.service"; fi
fi

echo "installed echofed-$role under ${root:-/}: $bin, $etc, $units/echofed-$role.service"
if [ "$role" = agent ]; then
  cat <<EOF
next: check this machine before starting the service
  sudo -u $user $bin/echofed-agent doctor --config $etc/agent.textproto --plan <the study plan> --state-dir /var/lib/$user
  sudo systemctl enable --now echofed-agent
  journalctl -u echofed-agent -f
EOF
else
  cat <<EOF
next:
  sudo systemctl enable --now echofed-coordinator
  journalctl -u echofed-coordinator -f
after \`echofed pki revoke|reissue|crl\`, copy pki/crl.pem to $etc/crl.pem (re-read
at once); after enrolling a participant, copy pki/enrolment.textproto to
$etc/ and restart the service.
EOF
fi
