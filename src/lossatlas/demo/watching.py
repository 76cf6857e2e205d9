"""The demo's "watching training" part: the digits MLP trained by SGD with momentum under a
`Monitor` (sharpness against the edge of stability, the generalisation gap), and the loss over
the PCA plane of its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import lossatlas as la
from lossatlas.core.seeding import init_layers
from lossatlas.problems.digits import digits_data, digits_model
from lossatlas.report.page import Section

LR, MOMENTUM, BATCH = 0.05, 0.9, 64


def watching_sections(
    quiet: bool, quick: bool, out: Path
) -> tuple[list[tuple[str, Section]], dict[str, Any]]:
    """`(file name, section)` pairs and headline numbers; the record streams to
    `out/digits-watch.h5`, its plane to `out/digits-watch.plane.h5`."""
    x, y, x_test, y_test = digits_data()
    model = digits_model()
    init_layers(model, torch.Generator().manual_seed(3))
    problem = la.Problem(model, nn.CrossEntropyLoss(), (x, y), metrics={"accuracy": la.accuracy})
    val = la.Problem(model, nn.CrossEntropyLoss(), (x_test, y_test))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    stream = out / "digits-watch.h5"
    stream.unlink(missing_ok=True)
    steps, every = (120, 20) if quick else (600, 25)
    monitor = la.Monitor(problem, every=every, optimizer=optimizer, val=val, out=stream)
    gen = torch.Generator().manual_seed(4)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (BATCH,), generator=gen)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        optimizer.step()
        monitor.step()
    plane = monitor.plane(steps=9 if quick else 21, quiet=quiet)
    monitor.close()
    record = la.load(stream)
    head = record.headline()
    text = (
        f"The digits MLP trained from scratch by SGD (lr {LR}, momentum {MOMENTUM}, batches of "
        f"{BATCH}) with a Monitor recording every {every} steps at the live weights, on 512 "
        "training samples: the loss, its gradient norm, and λmax by Lanczos (warm-started, a "
        "few Hessian-vector products each), against (2 + 2 momentum) / lr, the largest λmax "
        "stable at that rate (Cohen et al. 2021); and the held-out loss, whose distance from "
        "the training loss is the generalisation gap. The weights stay bit-identical to "
        "training without the monitor (tested)."
    )
    facts = {  # beside the section's own cards (records, lambda_max, gap, HVPs)
        "stability threshold (2 + 2β) / lr": head["threshold_last"],
        "seconds measuring": head["seconds"],
    }
    plane_text = (
        "The loss over the plane of the recorded weights' two principal directions, centred on "
        "the last record (Li et al. 2018), with the training path as the monitor saw it; the "
        "path's distance from the plane is in the settings (off_plane)."
    )
    sections = [
        ("digits-watch", Section(record, title="Watching training", text=text, facts=facts)),
        (
            "digits-watch.plane",
            Section(plane, title="Watching training: the path on its PCA plane", text=plane_text),
        ),
    ]
    numbers = {
        "watch_records": head["records"],
        "watch_lambda_max_last": head["lambda_max_last"],
        "watch_threshold": head["threshold_last"],
    }
    return sections, numbers
