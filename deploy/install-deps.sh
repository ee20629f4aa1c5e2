#!/usr/bin/env bash
# Installs everything echofed needs to build and test on Debian 12, from
# Debian's own packages. Safe to run again.
set -euo pipefail

case "${1:-}" in
  "") ;;
  -h | --help)
    cat <<'EOF'
Usage: deploy/install-deps.sh [-h|--help]

Installs everything echofed needs to build and test on Debian 12 (compilers,
gRPC, protobuf, Abseil, LibTorch, DCMTK, CLI11, GoogleTest, python3-torch,
python3-sklearn, Chromium, Orthanc for the PACS tests, clang for the
fuzzers) from Debian's own packages with apt-get, through sudo when not
root. Installs only what is missing; safe to run again. Takes no options
and reads no environment variables.
EOF
    exit 0
    ;;
  *)
    echo "install-deps.sh: unknown argument '$1' (try --help)" >&2
    exit 2
    ;;
esac

packages=(
  build-essential cmake ninja-build pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libssl-dev libsqlite3-dev
  libtorch-dev
  libdcmtk-dev
  # DCMTK's programs as real DICOM peers for the PACS client's tests
  # (tests/testing/dcmqrscp_server.h): dcmqrscp, an archive answering
  # C-FIND, C-GET and C-STORE; storescp, a storage SCP over DICOM TLS;
  # storescu to seed the archive independently of the client under test.
  # The same 3.6.7 as libdcmtk-dev; the tests skip without it.
  dcmtk
  libpng-dev libturbojpeg0-dev
  # DICOM JPEG 2000 and HTJ2K (dicom_j2k.cc): DCMTK 3.6.7 decodes neither.
  libopenjp2-7-dev
  libcli11-dev
  # The coordinator's HTTPS status page and Prometheus metrics
  # (coordinator/status_server.cc): a maintained HTTP server with OpenSSL
  # support rather than hand-written HTTP parsing on a port that faces the
  # network. Debian's is a shared library built with OpenSSL 3.
  libcpp-httplib-dev
  libgtest-dev libgmock-dev
  # Tests only: a real PACS on loopback (tests/testing/orthanc_server.h)
  # that the DIMSE and DICOMweb clients (site-agent/pacs) are tested
  # against; the tests are skipped without it. The package also starts a
  # system Orthanc on ports 4242/8042, which the tests never use.
  orthanc orthanc-dicomweb
  python3-sklearn
  # Reads the coordinator's /metrics text as Prometheus' own client library
  # does (tests/coordinator/status_page_test.cc; skipped without it).
  python3-prometheus-client
  # PyTorch for Python (the same LibTorch 1.13): checkpoints and TorchScript
  # checked with torch.load / torch.jit.load (tests/models), and the
  # reference side of train_speed_bench. About 142 MB installed with its
  # dependencies (22 MB download).
  python3-torch
  # Headless Chromium renders the statistician's HTML report in the
  # cli_report_browser_check test (tests/coordinator/cli), which is skipped
  # without it.
  chromium
  # The fuzz test (tests/fuzz): clang with libFuzzer and the sanitizer
  # runtimes (only recommended by clang, so named here), and llvm-14 for
  # llvm-symbolizer, which puts function names into sanitizer reports.
  clang libclang-rt-14-dev llvm-14
)

run_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: everything is installed"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Orthanc is for the tests only, which start their own on free loopback
# ports: its package must not leave a system PACS service running (nor fail
# the install where no init system can start one). A temporary policy-rc.d
# tells the package scripts not to start services during this install.
if printf '%s\n' "${missing[@]}" | grep -qx orthanc && [ ! -e /usr/sbin/policy-rc.d ]; then
  run_as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
  trap 'run_as_root rm -f /usr/sbin/policy-rc.d' EXIT
fi
run_as_root apt-get update -qq
run_as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
