#!/usr/bin/python3
"""PyTorch reference for train_speed_bench: the same model, data and step.

Usage (train_speed_bench runs it; by hand for a look):
  train_speed_reference.py --model resnet18 --size 224 --batch 16 \
      --steps 8 --warmup 2 --threads 1 [--expect-params N] [--no-prefetch] \
      [--device cuda] [--amp] [--channels-last true|false]

The model is echofed's ResNet classifier (models/resnet.h, classifier.cc)
written in plain PyTorch with echofed's attribute names, so that an echofed
checkpoint loads into it with load_state_dict(strict=True)
(tests/models/checkpoint_reference_test.py checks that, and that both give
the same logits). For resnet18 it is torchvision's resnet18 layout with a
1-channel conv1 and a 3-class head behind dropout 0.2.

The data pipeline is the bench's: a background thread cuts each batch from a
pool of synthetic 8-bit "decoded" images 15% larger than the model input,
resizes bilinearly (numpy, one thread), standardises each image and queues
the batch (two batches ahead). The step: forward, cross-entropy, backward,
SGD (lr 0.01, momentum 0.9, weight decay 1e-4, as site-agent/training/trainer.cc),
gradients released before each step (set_to_none, as echofed's
ReleaseGradients; PyTorch 2.x's default).

On CUDA (--device cuda[:N]) as echofed's side: batches pinned by the loader
thread and copied with non_blocking=True, the model in channels_last unless
--channels-last false, torch.backends.cudnn.benchmark on, and with --amp
torch.autocast(device_type="cuda", dtype=torch.bfloat16) around the forward
pass (--amp is ignored on CPU). The device is synchronised only at the ends
of the timed steps; step_ms_median is then wall time / steps and the phases
are 0 (not measured).

The last line of output is "RESULT " + JSON. Exit 77 when torch cannot be
imported (Debian: apt-get install python3-torch; run with /usr/bin/python3).
"""

import argparse
import contextlib
import json
import queue
import sys
import threading
import time

NUM_CLASSES = 3
MODELS = {
    # blocks per stage, widths, ImageNet stem
    "resnet18": ([2, 2, 2, 2], [64, 128, 256, 512], True),
    "resnet18_narrow": ([2, 2, 2, 2], [32, 64, 128, 256], True),
    "resnet_small": ([1, 1, 1, 1], [32, 64, 128, 256], False),
}


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="The last line of output is \"RESULT \" + JSON. Exit 77 "
        "when torch cannot be imported.")
    parser.add_argument("--model", default="resnet18", choices=sorted(MODELS),
                        help="echofed registry name (default %(default)s)")
    parser.add_argument("--size", type=int, default=224,
                        help="image side in pixels (default %(default)s)")
    parser.add_argument("--batch", type=int, default=16,
                        help="images per step (default %(default)s)")
    parser.add_argument("--steps", type=int, default=8,
                        help="timed steps (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps first (default %(default)s)")
    parser.add_argument("--threads", type=int, required=True,
                        help="torch intra-op threads")
    parser.add_argument("--expect-params", type=int, default=0,
                        help="fail unless the model has this many "
                        "parameters (0: no check)")
    parser.add_argument("--no-prefetch", action="store_true",
                        help="prepare batches inline, not on a thread")
    parser.add_argument("--device", default="cpu",
                        help="cpu, cuda or cuda:N (default %(default)s)")
    parser.add_argument("--amp", action="store_true",
                        help="bfloat16 autocast on CUDA (ignored on CPU)")
    parser.add_argument("--channels-last", default="auto",
                        choices=["auto", "true", "false"],
                        help="channels_last model and images (auto: on "
                        "CUDA only)")
    return parser.parse_args()


# Arguments before the torch import: --help and a wrong option answer at
# once, and without torch. (checkpoint_reference_test.py imports this file
# as a module and parses nothing.)
if __name__ == "__main__":
    ARGS = parse_args()

try:
    import numpy as np
    import torch
    from torch import nn
    import torch.nn.functional as F
except ImportError as error:  # pragma: no cover - depends on the machine
    print(f"SKIP: PyTorch is not importable ({error}); "
          "apt-get install python3-torch")
    sys.exit(77)


def conv(cin, cout, kernel, stride):
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                     bias=False)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = conv(cin, cout, 3, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv(cout, cout, 3, 1)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut.append(conv(cin, cout, 1, stride))
            self.shortcut.append(nn.BatchNorm2d(cout))
        with torch.no_grad():
            self.bn2.weight.zero_()

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetEncoder(nn.Module):
    def __init__(self, blocks, widths, imagenet_stem):
        super().__init__()
        first = widths[0]
        if imagenet_stem:
            self.stem = nn.Sequential(conv(1, first, 7, 2),
                                      nn.BatchNorm2d(first),
                                      nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, stride=2, padding=1))
        else:
            self.stem = nn.Sequential(conv(1, first, 3, 2),
                                      nn.BatchNorm2d(first),
                                      nn.ReLU(inplace=True))
        self.stages = nn.ModuleList()
        cin = first
        for stage, (count, width) in enumerate(zip(blocks, widths)):
            layers = nn.Sequential()
            for block in range(count):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(cin, width, stride))
                cin = width
            self.stages.append(layers)
        self.out_features = cin
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out",
                                        nonlinearity="relu")

    def forward(self, images):
        x = self.stem(images)
        for stage in self.stages:
            x = stage(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


class ResNetClassifier(nn.Module):
    def __init__(self, name, num_classes=NUM_CLASSES):
        super().__init__()
        self.encoder = ResNetEncoder(*MODELS[name])
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(self.encoder.out_features, num_classes)

    def forward(self, images):
        return self.head(self.dropout(self.encoder(images)))


class BatchMaker:
    """Synthetic decode + preprocess, as train_speed_bench.cc does it."""

    def __init__(self, size, batch, seed=1, pin=False):
        self.pin = pin
        self.size = size
        self.batch = batch
        self.source = int(round(size * 1.15))
        rng = np.random.default_rng(seed)
        self.pool = rng.integers(0, 256, (8, self.source, self.source),
                                 dtype=np.uint8)
        # Bilinear, half-pixel centres (align_corners=False), edge-clamped.
        scale = self.source / size
        centre = (np.arange(size) + 0.5) * scale - 0.5
        centre = np.clip(centre, 0, self.source - 1)
        self.i0 = np.floor(centre).astype(np.int64)
        self.i1 = np.minimum(self.i0 + 1, self.source - 1)
        self.w = (centre - self.i0).astype(np.float32)
        self.next = 0

    def make(self):
        out = np.empty((self.batch, 1, self.size, self.size), np.float32)
        labels = np.empty(self.batch, np.int64)
        i0, i1, w = self.i0, self.i1, self.w
        for b in range(self.batch):
            index = self.next
            self.next += 1
            image = self.pool[index % len(self.pool)].astype(np.float32)
            rows = (image[i0] * (1 - w)[:, None] + image[i1] * w[:, None])
            resized = rows[:, i0] * (1 - w) + rows[:, i1] * w
            resized *= 1.0 / 255
            std = resized.std()
            out[b, 0] = (resized - resized.mean()) / max(std, 1e-6)
            labels[b] = index % NUM_CLASSES
        images, labels = torch.from_numpy(out), torch.from_numpy(labels)
        if self.pin:
            images, labels = images.pin_memory(), labels.pin_memory()
        return images, labels


def prefetching(maker, count, depth=2):
    batches = queue.Queue(maxsize=depth)

    def produce():
        for _ in range(count):
            batches.put(maker.make())

    threading.Thread(target=produce, daemon=True).start()
    for _ in range(count):
        yield batches.get()


def inline(maker, count):
    for _ in range(count):
        yield maker.make()


def main(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        print("ERROR: --device cuda, and this torch sees no GPU")
        return 1
    channels_last = (cuda if args.channels_last == "auto"
                     else args.channels_last == "true")
    memory_format = (torch.channels_last if channels_last
                     else torch.contiguous_format)
    if cuda:
        torch.backends.cudnn.benchmark = True
    model = ResNetClassifier(args.model)
    params = sum(p.numel() for p in model.parameters())
    if args.expect_params and params != args.expect_params:
        print(f"ERROR: reference {args.model} has {params} parameters, "
              f"echofed's {args.expect_params}: not the same architecture")
        return 1
    model.to(device, memory_format=memory_format)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9,
                                weight_decay=1e-4)
    maker = BatchMaker(args.size, args.batch, pin=cuda)
    autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                if cuda and args.amp else contextlib.nullcontext())
    total = args.warmup + args.steps
    source = (inline if args.no_prefetch else prefetching)(maker, total)

    step_seconds = []
    phases = {"forward_ms": [], "backward_ms": [], "optimizer_ms": []}
    data_wait = 0.0
    timed_start = None
    for step in range(total):
        if step == args.warmup:
            if cuda:
                torch.cuda.synchronize(device)
            timed_start = time.perf_counter()
        start = time.perf_counter()
        images, labels = next(source)
        fetched = time.perf_counter()
        images = images.to(device, non_blocking=True,
                           memory_format=memory_format)
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            logits = model(images)
        loss = F.cross_entropy(logits.float(), labels)
        forwarded = time.perf_counter()
        loss.backward()
        backwarded = time.perf_counter()
        optimizer.step()
        done = time.perf_counter()
        if step >= args.warmup:
            data_wait += fetched - start
            step_seconds.append(done - fetched)
            phases["forward_ms"].append(forwarded - fetched)
            phases["backward_ms"].append(backwarded - forwarded)
            phases["optimizer_ms"].append(done - backwarded)
    if cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - timed_start
    result = {
        "implementation": f"PyTorch {torch.__version__} (Python)",
        "threads": torch.get_num_threads(),
        "parameters": params,
        "images_per_s": args.batch * args.steps / wall,
        "step_ms_median": 1000 * float(np.median(step_seconds)),
        "data_wait_s": data_wait,
        "final_loss": float(loss),
    }
    for phase, seconds in phases.items():
        result[phase] = 0.0 if cuda else 1000 * float(np.median(seconds))
    if cuda:
        # Without a synchronisation per step, these are launch times.
        result["step_ms_median"] = 1000 * wall / args.steps
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(ARGS))
