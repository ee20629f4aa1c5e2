#!/usr/bin/env python3
"""Runs `echofed demo` and checks that the README's "What the demo prints"
block still has the shape of what the demo prints: the same lines under the
round line, the same header, the same rows (site or pool, and set). Numbers are not compared:
they vary with the machine's floating point, and a class below the minimum
cell count turns a number into "n/a".

usage: demo_output_check.py ECHOFED_BINARY WORK_DIR README [DEMO_ARGS...]
"""
import re
import subprocess
import sys

MARKER = "<!-- demo-output -->"


def final_table(text):
    """The lines of the last round's table: from its 'round N/N' line to the
    first blank line after it."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if re.match(r"^round \d+/\d+ ", line)]
    if not starts:
        return None
    table = []
    for line in lines[starts[-1]:]:
        if not line.strip():
            break
        table.append(line.rstrip())
    return table


def words(line):
    """The words of a line that are not numbers, digests or counts."""
    return [w for w in line.split() if not re.search(r"\d", w)]


def shape(table):
    """(round line, lines before the column header, column header, rows):
    the round line and the lines under it (e.g. the audit log's head)
    reduced to their words, the header as is, and each row's first two
    words. Rows are compared as a set: sites are listed in the order their
    reports arrived, which varies from run to run."""
    header_at = next((i for i, line in enumerate(table)
                      if line.split()[:2] == ["site", "set"]), len(table))
    preamble = [words(line) for line in table[1:header_at]]
    header = table[header_at].split() if header_at < len(table) else []
    rows = sorted(tuple(line.split()[:2]) for line in table[header_at + 1:])
    return words(table[0]), preamble, header, rows


def readme_table(readme):
    text = open(readme, encoding="utf-8").read()
    at = text.find(MARKER)
    if at < 0:
        sys.exit(f"{readme}: no {MARKER} marker before the demo's output")
    block = re.search(r"```\n(.*?)```", text[at:], re.S)
    if not block:
        sys.exit(f"{readme}: no fenced block after {MARKER}")
    return final_table(block.group(1))


def main():
    if len(sys.argv) < 4 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help") else 2
    binary, work_dir, readme = sys.argv[1:4]
    expected = readme_table(readme)
    if not expected:
        sys.exit(f"{readme}: the block after {MARKER} has no 'round N/N' table")
    run = subprocess.run([binary, "demo", "--work-dir", work_dir] + sys.argv[4:],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    sys.stdout.write(run.stdout)
    if run.returncode != 0:
        sys.exit(f"echofed demo exited with {run.returncode}")
    printed = final_table(run.stdout)
    if not printed:
        sys.exit("the demo printed no 'round N/N' table")
    want, got = shape(expected), shape(printed)
    problems = []
    names = ("round line", "lines under it", "column header", "rows")
    for name, w, g in zip(names, want, got):
        if w != g:
            problems.append(f"{name}: README has {w}, the demo printed {g}")
    if problems:
        print("\nREADME's 'What the demo prints' no longer matches the demo:")
        for problem in problems:
            print("  " + problem)
        print("Regenerate it from this run's table (README.md, after " + MARKER + ").")
        return 1
    print(f"README's demo output has the demo's shape ({len(got[3])} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
