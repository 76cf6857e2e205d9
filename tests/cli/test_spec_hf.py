"""The command line on a user's spec file returning a Hugging Face model's Problem.

The spec builds a tiny GPT-2 from a config (random weights, default `sdpa` attention, no
download) with padded dict batches and the model's own token-averaged loss, as a user would;
the commands run in subprocesses and their numbers are checked against the model itself.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import lossatlas as la
from tests.support.cli import run_cli

SPEC = """
import torch
import transformers
import lossatlas as la


def problem():
    config = transformers.GPT2Config(
        vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2,
        bos_token_id=1, eos_token_id=1, attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(1)
    batches = []
    for rows, width in ((3, 9), (2, 13)):  # padded to each batch's own longest sequence
        ids = torch.randint(1, 64, (rows, width), generator=gen)
        mask = torch.ones_like(ids)
        mask[0, width - 4:] = 0  # one shorter sequence, right-padded
        labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
        batches.append({"input_ids": ids * mask, "attention_mask": mask, "labels": labels})
    return la.Problem(model, None, batches, weight=la.token_count())
"""


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> tuple[Path, la.Problem]:
    """The spec file, and the Problem it returns (built here, in the test process)."""
    path = tmp_path_factory.mktemp("spec") / "gpt.py"
    path.write_text(SPEC, encoding="utf-8")
    loader = importlib.util.spec_from_file_location("hf_spec", path)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    return path, module.problem()


def _all_at_once(problem: la.Problem) -> float:
    """HF's loss over every token at once: the batches right-padded to one width, one call."""
    parts = [b for b, _ in problem.batches()]
    width = max(b["input_ids"].shape[1] for b in parts)
    fill = {"input_ids": 0, "attention_mask": 0, "labels": -100}
    joined = {
        k: torch.cat(
            [torch.nn.functional.pad(b[k], (0, width - b[k].shape[1]), value=v) for b in parts]
        )
        for k, v in fill.items()
    }
    with torch.no_grad():
        return float(problem.model(**joined).loss)


def test_surface_on_a_hugging_face_spec(spec, tmp_path) -> None:
    path, problem = spec
    out = tmp_path / "s.h5"
    proc = run_cli("surface", f"{path}:problem", "--steps", "3", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    land = la.load(out)
    assert land.loss.shape == (3, 3)
    assert land.loss[1, 1] == pytest.approx(_all_at_once(problem), rel=1e-6)
    assert json.loads(proc.stdout)["loss_center"] == land.loss[1, 1]


def test_sharpness_json_through_default_attention(spec) -> None:
    """Second order through `sdpa`: λmax from the CLI equals λmax from a dense Hessian of
    the model's last LayerNorm."""
    path, problem = spec
    proc = run_cli(
        "sharpness",
        f"{path}:problem",
        "--json",
        "--k",
        "1",
        "--params",
        "transformer.ln_f",
        "--samples",
        "3",
        "--trace-vectors",
        "6",
        LOSSATLAS_QUIET="1",
    )
    assert proc.returncode == 0, proc.stderr
    # No vmap fallback flood, no traceback: nothing but transformers' own one-time notice.
    assert all(line.startswith("[transformers]") for line in proc.stderr.splitlines())
    report = json.loads(proc.stdout)
    assert report["settings"]["operator"]["dim"] == 32
    names = ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    model = problem.model
    parts = list(problem.batches())
    units = [problem.units(x, y) for x, y in parts]
    flat = torch.cat([dict(model.named_parameters())[n].detach().reshape(-1) for n in names])

    def loss(v: torch.Tensor) -> torch.Tensor:
        state = {names[0]: v[:16], names[1]: v[16:]}
        total = sum(
            torch.func.functional_call(model, state, args=(), kwargs=x, strict=False).loss * u
            for (x, _), u in zip(parts, units)
        )
        return total / sum(units)

    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        dense = torch.func.jacrev(torch.func.grad(loss))(flat)
    top = float(torch.linalg.eigvalsh(dense.detach().double())[-1])
    assert report["lambda_max"] == pytest.approx(top, rel=1e-3)
    assert report["max_stable_lr"] == pytest.approx(2 / report["lambda_max"], rel=1e-9)
