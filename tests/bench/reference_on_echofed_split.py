#!/usr/bin/python3
"""The PyTorch reference (../shared/reference/busi-pytorch) trained on
echofed's patient split, to compare the two pipelines on the same patients
(README, "Model quality on real ultrasound").

  BASELINE_CACHE=/tmp/busi-cache SEED=0 BASELINE_RESULTS=/tmp/ref-echofed-split \\
    /usr/bin/python3 tests/bench/reference_on_echofed_split.py 128 40 central fedavg
  /usr/bin/python3 tests/bench/reference_on_echofed_split.py --export-reference-split FILE

The first form runs the reference's own run.py with one change: its split
is replaced by echofed's (quality_bench's default, manifest.cc
TrainingPatients): per training site and label, patients ordered by the
first 8 bytes of SHA-256("<split seed>:<patient_id>") read as a
little-endian integer, the first round(0.7 n) train. The cache comes from
the reference's prep.py (see its README). The second form writes the
reference's own split (scikit-learn, seed 0) as the CSV site,patient_id of
training patients that `quality_bench --training-patients` reads.

REFERENCE_DIR (default ../shared/reference/busi-pytorch beside the project)
and SPLIT_SEED (default 2026) may be set in the environment.
"""
import hashlib
import math
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE = os.environ.get(
    "REFERENCE_DIR", os.path.join(ROOT, "..", "shared", "reference", "busi-pytorch"))
sys.path.insert(0, REFERENCE)
import numpy as np  # noqa: E402
import common  # noqa: E402

SPLIT_SEED = int(os.environ.get("SPLIT_SEED", "2026"))


def split_key(patient_id):
    digest = hashlib.sha256(f"{SPLIT_SEED}:{patient_id}".encode()).digest()
    return struct.unpack("<Q", digest[:8])[0]


def echofed_split(data, seed=0):
    del seed  # the reference passes its own; echofed's split has SPLIT_SEED
    out = {}
    for site in common.TRAIN_SITES:
        idx = np.where(data["site"] == site)[0]
        pids = data["pid"][idx]
        patients, first = np.unique(pids, return_index=True)
        labels = data["y"][idx][first]
        train = []
        for label in np.unique(labels):
            ordered = sorted((split_key(p), p) for p in patients[labels == label])
            take = int(math.floor(0.7 * len(ordered) + 0.5))  # llround
            train += [p for _, p in ordered[:take]]
        out[f"train_{site}"] = idx[np.isin(pids, train)]
        out[f"val_{site}"] = idx[~np.isin(pids, train)]
    out["site_d"] = np.where(data["site"] == "d")[0]
    return out


def export_reference_split(path):
    data = common.load(128)
    split = common.split(data, 0)
    with open(path, "w") as out:
        for site in common.TRAIN_SITES:
            for patient in sorted(set(data["pid"][split[f"train_{site}"]])):
                out.write(f"site-{site},{patient}\n")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--export-reference-split":
        export_reference_split(sys.argv[2])
        return
    common.split = echofed_split
    source = open(os.path.join(REFERENCE, "run.py")).read()
    # run.py does `from common import *`: rebind its split afterwards.
    source = source.replace("from common import *",
                            "from common import *\nsplit = common.split")
    sys.argv = ["run.py"] + sys.argv[1:]
    exec(compile(source, "run.py", "exec"), {"__name__": "__main__", "common": common})


if __name__ == "__main__":
    main()
