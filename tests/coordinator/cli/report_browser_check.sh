#!/usr/bin/env bash
# Renders an `echofed report` page in headless Chromium and checks that the
# browser drew it: the DOM it parsed holds the inline SVG plots and the
# report's sections (flow tables, suppressed cells), and the screenshot is
# not blank (enough non-white pixels, the plots' colours). Needs Chromium
# (Debian: apt-get install chromium; deploy/install-deps.sh installs it).
# Exits 77 (ctest's skip code) without it.
#
#   tests/coordinator/cli/report_browser_check.sh REPORT.html [OUT.png]
#   tests/coordinator/cli/report_browser_check.sh --from-test cli_report_test
#
# --from-test: writes the report of cli_report_test's disclosure fixture
# (DisclosureReportTest.WritesTheReportForTheBrowserCheck) and checks that;
# this is how ctest runs it (cli_report_browser_check, label integration).
# HEIGHT (default 2400) is the height of the window, and of the screenshot.
set -euo pipefail

usage() {
  echo "Usage: $0 REPORT.html [OUT.png] | --from-test CLI_REPORT_TEST"
  echo
  # The comment at the top of this file.
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  usage
  exit 0
fi
if [[ $# -lt 1 || ($1 == -* && $1 != --from-test) ]]; then
  usage >&2
  exit 2
fi
# Occurrences of $1 in file $2 (0 without any; grep alone would fail the
# pipeline under pipefail).
count() { grep -oF -- "$1" "$2" | wc -l || true; }

browser=$(command -v chromium || command -v chromium-browser ||
  command -v google-chrome || true)
if [[ -z $browser ]]; then
  echo "skipped: no Chromium (apt-get install chromium)"
  exit 77
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
png=
if [[ $1 == --from-test ]]; then
  [[ $# -ge 2 ]] || { echo "--from-test needs the test binary" >&2; exit 2; }
  ECHOFED_REPORT_OUT_DIR=$work/report "$2" \
    --gtest_filter=DisclosureReportTest.WritesTheReportForTheBrowserCheck \
    >"$work/test.log" 2>&1 || { cat "$work/test.log" >&2; exit 1; }
  html=$work/report/report.html
  if [[ ! -s $html ]]; then
    echo "FAIL: the test wrote no report" >&2
    cat "$work/test.log" >&2
    exit 1
  fi
  # The fixture's content, to look for in what the browser parsed.
  expect_text=("Patient flow per site" "site-4 (external validation)"
    "SUBTYPE class GN" "Forest plot of AUC")
else
  html=$(realpath "$1")
  png=${2:-}
  expect_text=("Validation report" "Patient flow per site")
fi
[[ -n $png ]] || png=$work/report.png
# --no-sandbox: the sandbox refuses to run as root (containers, CI);
# a throwaway profile keeps the check from touching the user's.
flags=(--headless=new --no-sandbox --disable-gpu --hide-scrollbars
  --user-data-dir="$work/profile" --window-size="1280,${HEIGHT:-2400}")

"$browser" "${flags[@]}" --dump-dom "file://$html" >"$work/dom.html" \
  2>"$work/chromium.log"
expected=$(count '<svg ' "$html")
parsed=$(count '<svg ' "$work/dom.html")
if [[ $expected -eq 0 || $parsed -ne $expected ]]; then
  echo "FAIL: the page has $expected SVG plots, the browser's DOM $parsed" >&2
  exit 1
fi
# Drawn plots, not empty <svg> shells: every ROC plot has its curves.
roc=$(count 'aria-label="ROC curves, ' "$work/dom.html")
curves=$(count '<polyline ' "$work/dom.html")
if [[ $roc -eq 0 || $curves -lt $roc ]]; then
  echo "FAIL: $roc ROC plots but $curves curves in the browser's DOM" >&2
  exit 1
fi
for text in "${expect_text[@]}"; do
  if ! grep -qF "$text" "$work/dom.html"; then
    echo "FAIL: the browser's DOM lacks \"$text\"" >&2
    exit 1
  fi
done

"$browser" "${flags[@]}" --screenshot="$png" "file://$html" \
  >>"$work/chromium.log" 2>&1
if [[ ! -s $png ]]; then
  echo "FAIL: no screenshot; Chromium said:" >&2
  tail -5 "$work/chromium.log" >&2
  exit 1
fi

# A PNG decoder in the standard library only (8-bit RGB/RGBA, as Chromium
# writes), so that the check needs nothing beyond python3.
python3 - "$png" <<'PYTHON'
import struct
import sys
import zlib

path = sys.argv[1]
data = open(path, "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat = 8, b""
while pos < len(data):
    length, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
        width, height, depth, colour = struct.unpack(">IIBB", body[:10])
    elif kind == b"IDAT":
        idat += body
    pos += 12 + length
assert depth == 8 and colour in (2, 6), f"unexpected PNG format {depth}/{colour}"
channels = 3 if colour == 2 else 4
stride = width * channels
raw = zlib.decompress(idat)
previous = bytearray(stride)
ink = 0
colours = set()
for y in range(height):
    start = y * (stride + 1)
    kind = raw[start]
    line = bytearray(raw[start + 1:start + 1 + stride])
    for i in range(stride):
        left = line[i - channels] if i >= channels else 0
        up = previous[i]
        corner = previous[i - channels] if i >= channels else 0
        if kind == 1:
            line[i] = (line[i] + left) & 255
        elif kind == 2:
            line[i] = (line[i] + up) & 255
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 255
        elif kind == 4:
            p = left + up - corner
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + predictor) & 255
    for x in range(0, stride, channels * 2):  # every other pixel is enough
        r, g, b = line[x], line[x + 1], line[x + 2]
        if min(r, g, b) < 235:
            ink += 1
        if max(r, g, b) - min(r, g, b) > 60:  # saturated: plot colours
            colours.add((r >> 5, g >> 5, b >> 5))
    previous = line
sampled = width * height // 2
share = ink / sampled
print(f"{path}: {width}x{height}, {100 * share:.1f}% ink, "
      f"{len(colours)} saturated colour groups")
if share < 0.02 or len(colours) < 3:
    print("FAIL: the page looks blank", file=sys.stderr)
    sys.exit(1)
PYTHON
echo "OK: $parsed SVG plots parsed and drawn; screenshot $png"
