#!/usr/bin/python3
"""Checks that echofed's checkpoints are PyTorch's, both ways.

Usage: checkpoint_reference_test.py PATH/TO/checkpoint_reference_tool

1. The tool writes a resnet_small as model.pt (SaveTorchStateDict) and as
   model.torchscript.pt (ExportTorchScript), with expected.txt: per tensor
   its name, dtype, shape, SHA-256 of its bytes and sum, then eval-mode
   logits of a fixed input.
2. torch.load(model.pt) must be a dict {name: tensor} in expected.txt's
   order with exactly those bytes; loaded with load_state_dict(strict=True)
   into the plain-PyTorch model of tests/bench/train_speed_reference.py,
   it must give the tool's logits (so that reference is echofed's
   architecture).
3. torch.jit.load(model.torchscript.pt) must give the same logits and
   state, with no model code.
   Likewise fusion.torchscript.pt (resnet_small_gated_fusion) on the
   fixed images and clinical values with NaN gaps: its Dict[str, Tensor]
   must match expected.txt's "fusion" lines.
4. A state dict saved by Python (its own module-by-module order) must load
   back into echofed (tool "logits") and give the same logits.

Exit 77 (skip) when torch cannot be imported (Debian: python3-torch).
"""

import hashlib
import os
import subprocess
import sys
import tempfile

# Before the torch import: --help answers at once, even without torch.
if __name__ == "__main__" and sys.argv[1:] in (["-h"], ["--help"]):
    print(__doc__)
    sys.exit(0)

try:
    import torch
except ImportError as error:
    print(f"SKIP: PyTorch is not importable ({error}); "
          "apt-get install python3-torch")
    sys.exit(77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "bench"))
import train_speed_reference as reference  # noqa: E402

LOGIT_TOLERANCE = 1e-5
DTYPES = {"FLOAT32": torch.float32, "INT64": torch.int64}


def fixed_input():
    index = torch.arange(3 * 64 * 64, dtype=torch.int64)
    return ((index * 7919) % 256).to(torch.float32).div(128).sub(1).view(
        3, 1, 64, 64)


def fixed_clinical():
    index = torch.arange(3 * 14, dtype=torch.int64)
    values = ((index * 7919) % 256).to(torch.float32).div(32).sub(4)
    values[index % 5 == 0] = float("nan")
    values[1] = 1000.0
    return values.view(3, 14)


def parse_fusion(text):
    outputs = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "fusion":
            outputs[(fields[1], int(fields[2]), int(fields[3]))] = float(
                fields[4])
    return outputs


def parse_logits(text):
    logits = {}
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "logit":
            logits[(int(fields[1]), int(fields[2]))] = float(fields[3])
    return logits


def logits_of(model):
    model.eval()
    with torch.no_grad():
        output = model(fixed_input())
    return {(r, c): float(output[r, c])
            for r in range(output.shape[0]) for c in range(output.shape[1])}


def compare_logits(what, expected, actual, failures):
    if expected.keys() != actual.keys():
        failures.append(f"{what}: logits of shape {sorted(actual)[-1]}, "
                        f"expected {sorted(expected)[-1]}")
        return
    worst = max(abs(expected[k] - actual[k]) for k in expected)
    print(f"{what}: max |logit difference| {worst:.3g}")
    if worst > LOGIT_TOLERANCE:
        failures.append(f"{what}: logits differ by {worst:.3g}")


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    tool = sys.argv[1]
    failures = []
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([tool, "write", work], check=True)
        with open(os.path.join(work, "expected.txt")) as f:
            lines = f.read()
        expected_tensors = [line.split()[1:] for line in lines.splitlines()
                            if line.startswith("tensor ")]
        expected_logits = parse_logits(lines)

        # 2. torch.load of the state dict.
        state = torch.load(os.path.join(work, "model.pt"))
        if not isinstance(state, dict):
            failures.append(f"torch.load gave a {type(state)}, not a dict")
            state = {}
        names = [fields[0] for fields in expected_tensors]
        if list(state.keys()) != names:
            failures.append("state dict names or order differ from echofed's")
        for name, dtype, shape, digest, total in expected_tensors:
            tensor = state.get(name)
            if tensor is None:
                continue
            want_shape = [] if shape == "scalar" else [
                int(d) for d in shape.split(",")]
            if tensor.dtype != DTYPES[dtype] or list(tensor.shape) != want_shape:
                failures.append(f"{name}: {tensor.dtype}{list(tensor.shape)}"
                                f", expected {dtype}{want_shape}")
                continue
            data = tensor.contiguous().numpy().tobytes()
            if hashlib.sha256(data).hexdigest() != digest:
                failures.append(f"{name}: bytes differ (SHA-256)")
            got = float(tensor.double().sum())
            scale = float(tensor.double().abs().sum()) + 1e-30
            if abs(got - float(total)) > 1e-9 * scale:
                failures.append(f"{name}: sum {got!r}, expected {total}")
        print(f"torch.load: {len(state)} tensors checked")

        model = reference.ResNetClassifier("resnet_small")
        model.load_state_dict(state, strict=True)
        compare_logits("state dict in plain PyTorch", expected_logits,
                       logits_of(model), failures)

        # 3. TorchScript, no model code.
        script = torch.jit.load(os.path.join(work, "model.torchscript.pt"))
        compare_logits("torch.jit.load", expected_logits, logits_of(script),
                       failures)
        script_state = script.state_dict()
        if set(script_state) != set(state):
            failures.append("TorchScript state names differ")
        elif not all(torch.equal(script_state[k], state[k]) for k in state):
            failures.append("TorchScript state values differ")

        fusion = torch.jit.load(os.path.join(work, "fusion.torchscript.pt"))
        fusion.eval()
        with torch.no_grad():
            outputs = fusion(fixed_input(), fixed_clinical())
        actual = {}
        for name, tensor in outputs.items():
            values = tensor.reshape(tensor.shape[0], -1)
            for r in range(values.shape[0]):
                for c in range(values.shape[1]):
                    actual[(name, r, c)] = float(values[r, c])
        compare_logits("torch.jit.load fusion", parse_fusion(lines), actual,
                       failures)
        if fusion.state_dict()["clinical.stat_count"].dtype != torch.float64:
            failures.append("fusion clinical statistics are not float64")

        # 4. Python -> echofed, in Python's own order.
        python_path = os.path.join(work, "from_python.pt")
        torch.save(dict(model.state_dict()), python_path)
        result = subprocess.run([tool, "logits", python_path], check=True,
                                capture_output=True, text=True)
        compare_logits("Python-saved dict in echofed", logits_of(model),
                       parse_logits(result.stdout), failures)

    for failure in failures:
        print("FAIL:", failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
