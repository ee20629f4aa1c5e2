#!/usr/bin/env python3
"""Compiles every LibTorch translation unit against LibTorch 2.x headers.

The default build uses Debian 12's LibTorch 1.13; GPU sites build against
LibTorch 2.x. CI has no 2.x, but it can compile against its headers: this
script fetches Debian trixie's libtorch-dev with apt, under a private apt
state (its own sources list, lists, cache and dpkg status; nothing is
installed into the system), unpacks it with `dpkg -x`, and runs
`g++ -fsyntax-only -Werror=deprecated-declarations` on each project
translation unit that includes LibTorch, with the flags CMake recorded in
compile_commands.json and the 1.13 include directories swapped for the 2.x
ones. A deprecation warning is a failure: 2.x removes what it deprecates.

Exit status: 0 all compiled, 1 a translation unit failed, 77 skipped (no apt,
no network, no package): ctest's SKIP_RETURN_CODE.

The unpacked headers are cached in --cache-dir (a stamp file records the
package version); a later run does not touch the network. --refresh fetches
again.
"""

import argparse
import concurrent.futures
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77
SUITE = "trixie"
# A local mirror or proxy can stand in (ECHOFED_DEBIAN_MIRROR).
MIRROR = os.environ.get("ECHOFED_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Only the headers: libtorch-dev's dependencies are the shared libraries
# (not needed to compile), python3-dev (only torch/extension.h needs it) and
# libprotobuf-dev (the system's own is used, as in the 1.13 build).
PACKAGES = ["libtorch-dev"]
TORCH_INCLUDE_PREFIXES = ("torch/", "ATen/", "c10/", "caffe2/")
# Translation units left out, with the reason (none today).
EXCLUDED = {}

# The one place that may test the LibTorch version.
COMPAT_HEADER = "models/torch_compat.h"
VERSION_TEST_RE = re.compile(
    r"\bTORCH_VERSION_(MAJOR|MINOR|PATCH)\b|\bECHOFED_TORCH_AT_LEAST\b")

INCLUDE_RE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', re.M)


def log(message):
    print(message, flush=True)


def skip(message):
    log(f"SKIPPED: {message}")
    sys.exit(SKIP)


def apt_options(state):
    return [
        "-o", f"Dir::Etc::SourceList={state}/sources.list",
        "-o", f"Dir::Etc::SourceParts={state}/sources.list.d",
        "-o", f"Dir::State::Lists={state}/lists",
        "-o", f"Dir::State::Status={state}/status",
        "-o", f"Dir::Cache={state}/cache",
        "-o", "Debug::NoLocking=1",
        "-o", "Acquire::Retries=1",
        "-o", "Acquire::http::Timeout=30",
    ] + (
        # As root, apt drops to _apt for downloads, which cannot write here.
        ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else [])


def run_apt(args, cwd, timeout):
    try:
        result = subprocess.run(args, cwd=cwd, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"{' '.join(args[:1] + args[-2:])}: timed out"
    output = (result.stdout + result.stderr).strip()
    return result.returncode == 0, output


def fetch_headers(cache_dir, refresh):
    """Returns the root of the unpacked packages (their usr/include)."""
    os.makedirs(cache_dir, exist_ok=True)
    # Two build trees may share the cache: one fetches, the other waits.
    with open(os.path.join(cache_dir, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return fetch_headers_locked(cache_dir, refresh)


def fetch_headers_locked(cache_dir, refresh):
    root = os.path.join(cache_dir, "root")
    stamp = os.path.join(cache_dir, "stamp")
    if not refresh and os.path.exists(stamp):
        with open(stamp) as f:
            log(f"LibTorch 2.x headers from the cache {cache_dir}: "
                f"{f.read().strip()}")
        return root
    for tool in ("apt-get", "dpkg", "dpkg-deb"):
        if shutil.which(tool) is None:
            skip(f"{tool} not found: cannot fetch Debian {SUITE}'s "
                 "libtorch-dev (needs a Debian-based system)")
    if not os.path.exists(KEYRING):
        skip(f"{KEYRING} missing (package debian-archive-keyring): cannot "
             f"verify Debian {SUITE}")
    state = os.path.join(cache_dir, "apt")
    # Only what this script puts there: the directory may be shared.
    for old in (stamp, root, state):
        if os.path.isdir(old):
            shutil.rmtree(old)
        elif os.path.exists(old):
            os.remove(old)
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d",
                "debs"):
        os.makedirs(os.path.join(state, sub), exist_ok=True)
    open(os.path.join(state, "status"), "w").close()
    with open(os.path.join(state, "sources.list"), "w") as f:
        f.write(f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
    options = apt_options(state)
    debs = os.path.join(state, "debs")
    ok, output = run_apt(["apt-get", *options, "update"], debs, 300)
    if not ok or "Failed to fetch" in output or "W: Some index" in output:
        skip(f"cannot download Debian {SUITE}'s package lists (no network?):\n"
             + output[-2000:])
    ok, output = run_apt(["apt-get", *options, "download", *PACKAGES], debs,
                         300)
    if not ok:
        skip(f"cannot download {' '.join(PACKAGES)} from Debian {SUITE}:\n"
             + output[-2000:])
    versions = []
    for deb in sorted(os.listdir(debs)):
        if not deb.endswith(".deb"):
            continue
        subprocess.run(["dpkg", "-x", os.path.join(debs, deb), root],
                       check=True)
        versions.append(deb)
        os.remove(os.path.join(debs, deb))
    if not versions:
        skip(f"apt-get download fetched no package:\n{output[-2000:]}")
    # The lists are 10 MB and only needed to download again.
    shutil.rmtree(os.path.join(state, "lists"), ignore_errors=True)
    shutil.rmtree(os.path.join(state, "cache"), ignore_errors=True)
    with open(stamp, "w") as f:
        f.write(" ".join(versions) + "\n")
    log(f"fetched {' '.join(versions)} into {root}")
    return root


def includes_libtorch(path, source_dir, memo, stack=()):
    """Whether a file includes LibTorch, itself or through project headers.

    A textual scan of #include lines (conditional includes count as taken),
    so it errs towards checking a file too many.
    """
    if path in memo:
        return memo[path]
    if path in stack:
        return False
    try:
        with open(path, errors="replace") as f:
            names = INCLUDE_RE.findall(f.read())
    except OSError:
        return False
    found = False
    for name in names:
        if name.startswith(TORCH_INCLUDE_PREFIXES):
            found = True
            break
        for base in (source_dir, os.path.dirname(path)):
            candidate = os.path.join(base, name)
            if os.path.isfile(candidate):
                if includes_libtorch(candidate, source_dir, memo,
                                     stack + (path,)):
                    found = True
                break
        if found:
            break
    memo[path] = found
    return found


def scattered_version_tests(source_dir):
    """Files other than the compat header that test the LibTorch version."""
    allowed = os.path.join(source_dir, COMPAT_HEADER)
    found = []
    for directory, subdirs, files in os.walk(source_dir):
        # Build trees (they hold CMakeCache.txt) and git's store.
        subdirs[:] = [d for d in subdirs if d != ".git" and not os.path.exists(
            os.path.join(directory, d, "CMakeCache.txt"))]
        for name in files:
            path = os.path.join(directory, name)
            if not name.endswith((".h", ".cc")) or path == allowed:
                continue
            with open(path, errors="replace") as f:
                if VERSION_TEST_RE.search(f.read()):
                    found.append(os.path.relpath(path, source_dir))
    return sorted(found)


def torch_include_dirs(args):
    """The include directories of the LibTorch the build uses."""
    dirs = []
    for i, arg in enumerate(args):
        for flag in ("-isystem", "-I"):
            if arg == flag and i + 1 < len(args):
                dirs.append(args[i + 1])
            elif arg.startswith(flag) and len(arg) > len(flag):
                dirs.append(arg[len(flag):])
    api = [d for d in dirs if d.rstrip("/").endswith("torch/csrc/api/include")]
    roots = {d.rstrip("/")[:-len("/torch/csrc/api/include")] for d in api}
    return set(api) | roots


def syntax_check_command(entry, header_root):
    if "arguments" in entry:
        args = list(entry["arguments"])
    else:
        args = shlex.split(entry["command"])
    old_dirs = torch_include_dirs(args)
    new_root = os.path.join(header_root, "usr/include")
    new_api = os.path.join(new_root, "torch/csrc/api/include")
    out = [args[0]]
    i = 1
    while i < len(args):
        arg = args[i]
        if arg in ("-o", "-MF", "-MT", "-MQ"):
            i += 2
            continue
        if arg in ("-c", "-MD", "-MMD") or arg == entry["file"]:
            i += 1
            continue
        if arg in ("-isystem", "-I") and i + 1 < len(args):
            value = args[i + 1]
            i += 2
        elif arg.startswith(("-isystem", "-I")) and not arg.startswith(
                "-include"):
            flag = "-isystem" if arg.startswith("-isystem") else "-I"
            value = arg[len(flag):]
            i += 1
        else:
            out.append(arg)
            i += 1
            continue
        if value in old_dirs:
            continue  # replaced below, in front of every other directory
        out += ["-I", value] if arg.startswith("-I") else ["-isystem", value]
    # The 2.x headers first, so that they shadow any 1.13 headers installed in
    # /usr/include (which stays a system directory).
    out[1:1] = ["-isystem", new_root, "-isystem", new_api]
    out += ["-fsyntax-only", "-Werror=deprecated-declarations"]
    return out, new_root


def check_unit(entry, header_root):
    command, new_root = syntax_check_command(entry, header_root)
    with tempfile.NamedTemporaryFile(suffix=".d") as deps:
        command += ["-MD", "-MF", deps.name, entry["file"]]
        start = time.monotonic()
        result = subprocess.run(command, cwd=entry["directory"],
                                capture_output=True, text=True)
        seconds = time.monotonic() - start
        output = result.stdout + result.stderr
        leaked = []
        if result.returncode == 0:
            # A LibTorch header found outside the 2.x tree (1.13's, in
            # /usr/include) would mean this unit was not checked against 2.x.
            with open(deps.name) as f:
                for word in f.read().replace("\\\n", " ").split():
                    path = os.path.normpath(word)
                    if path.startswith(new_root + "/"):
                        continue
                    if any("/include/" + prefix in path
                           for prefix in TORCH_INCLUDE_PREFIXES):
                        leaked.append(path)
    failed = result.returncode != 0 or bool(leaked)
    if leaked:
        output += ("LibTorch headers taken from outside the 2.x tree:\n  " +
                   "\n  ".join(sorted(set(leaked))[:10]) + "\n")
    return failed, seconds, output


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source-dir", required=True)
    parser.add_argument("--build-dir", required=True,
                        help="holds compile_commands.json")
    parser.add_argument("--cache-dir",
                        help="where the unpacked headers stay between runs "
                        "(default: $ECHOFED_LIBTORCH2_CACHE, else "
                        "BUILD_DIR/compat/libtorch2)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--refresh", action="store_true",
                        help="download the headers again")
    parser.add_argument("units", nargs="*",
                        help="only these translation units (paths relative "
                        "to the source dir)")
    args = parser.parse_args()
    source_dir = os.path.realpath(args.source_dir)
    build_dir = os.path.realpath(args.build_dir)
    cache_dir = args.cache_dir or os.environ.get("ECHOFED_LIBTORCH2_CACHE") or \
        os.path.join(build_dir, "compat", "libtorch2")

    database = os.path.join(build_dir, "compile_commands.json")
    if not os.path.exists(database):
        log(f"FAILED: {database} missing (configure with "
            "CMAKE_EXPORT_COMPILE_COMMANDS=ON, as the top CMakeLists.txt does)")
        return 1
    with open(database) as f:
        entries = json.load(f)

    scattered = scattered_version_tests(source_dir)
    if scattered:
        log(f"FAILED: LibTorch version tests outside {COMPAT_HEADER} (put the "
            "difference behind a helper there): " + " ".join(scattered))
        return 1

    header_root = fetch_headers(cache_dir, args.refresh)
    version_h = os.path.join(header_root,
                             "usr/include/torch/csrc/api/include/torch/version.h")
    with open(version_h) as f:
        version = re.search(r'TORCH_VERSION\s*\\?\s*"([^"]+)"', f.read())
    log(f"checking against LibTorch {version.group(1) if version else '?'}")

    memo = {}
    units = []
    seen = set()
    for entry in entries:
        path = os.path.realpath(os.path.join(entry["directory"],
                                             entry["file"]))
        if not path.startswith(source_dir + "/") or path in seen:
            continue  # generated sources (protos) include no LibTorch
        rel = os.path.relpath(path, source_dir)
        if args.units and rel not in args.units:
            continue
        if rel in EXCLUDED:
            log(f"excluded {rel}: {EXCLUDED[rel]}")
            continue
        if includes_libtorch(path, source_dir, memo):
            seen.add(path)
            units.append((rel, dict(entry, file=path)))
    if not units:
        log("FAILED: no translation unit includes LibTorch?")
        return 1
    log(f"{len(units)} translation units include LibTorch; "
        f"{args.jobs} at a time")

    failures = []
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(check_unit, entry, header_root): rel
                   for rel, entry in units}
        for future in concurrent.futures.as_completed(futures):
            rel = futures[future]
            failed, seconds, output = future.result()
            log(f"{'FAIL' if failed else 'ok  '} {rel} ({seconds:.0f} s)")
            if failed:
                failures.append(rel)
                lines = output.splitlines()
                log("\n".join(lines[:60]) +
                    (f"\n... {len(lines) - 60} more lines" if len(lines) > 60
                     else ""))
    log(f"{len(units) - len(failures)}/{len(units)} compiled against LibTorch "
        f"2.x in {time.monotonic() - start:.0f} s")
    if failures:
        log("FAILED: " + " ".join(sorted(failures)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
