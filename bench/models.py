"""Benchmark: surfaces of Hugging Face transformers (tiny configs) against the per-point loop.

Run: `python bench/models.py` (`--quick` for a smoke run, `--profile` for an operator profile).

Cases, timed in one run so ratios are comparable (timings drift between runs on this machine):
- GPT-2 (`GPT2LMHeadModel`, 2 layers, width 64, 4 heads), causal LM on padded sequences of
  different lengths, token-weighted (`la.token_count()`), the model's own loss from `labels`;
- BERT (`BertForSequenceClassification`, same size), one label per sequence, padded.

Both use their default attention (sdpa), dict batches as a DataLoader with a dict collate would
give them, filter-normalised directions and a 2D grid. The baseline is the loop a careful user
writes: a deep copy of the model, each point's weights written with `copy_`, the batches run
through `model(**batch)` under `no_grad`, and the losses combined with exact token (or sample)
weights read back with `.item()`. Loop times are measured on points spread over the grid and
scaled to the full grid; these points also check that both give the same values. The floor is
the model's forward passes alone, at fixed weights (no weight writes, no combination): what
any per-point method must pay when every point runs the whole model.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

# A fresh inductor cache: compile times are those of a first run on a new machine.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="lossatlas-bench-"))

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

import lossatlas as la

VOCAB, WIDTH, LAYERS, HEADS, LENGTH = 128, 64, 2, 4, 48


def padded_batches(n: int, batch_size: int, *, classify: bool, seed: int = 0) -> list[dict]:
    """`n` sequences of random lengths in [LENGTH / 4, LENGTH], padded per batch of the data."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, LENGTH), generator=gen)
    lengths = torch.randint(LENGTH // 4, LENGTH + 1, (n,), generator=gen)
    mask = (torch.arange(LENGTH)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # pad token 0
    if classify:
        labels = torch.randint(0, 2, (n,), generator=gen)
    else:
        labels = ids.masked_fill(mask == 0, -100)
    return [
        {"input_ids": ids[i : i + batch_size], "attention_mask": mask[i : i + batch_size],
         "labels": labels[i : i + batch_size]}
        for i in range(0, n, batch_size)
    ]  # fmt: skip


def gpt2_case() -> tuple[torch.nn.Module, list[dict], object]:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=LENGTH, n_embd=WIDTH, n_layer=LAYERS, n_head=HEADS,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval(), la.token_count()


def bert_case() -> tuple[torch.nn.Module, object]:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=4 * WIDTH, max_position_embeddings=LENGTH, num_labels=2,
    )  # fmt: skip
    return BertForSequenceClassification(config).eval(), None


def units(batch: dict, weight) -> float:
    """Tokens predicted (causal LM) or sequences (classification) in a batch."""
    if weight is None:
        return float(len(batch["input_ids"]))
    return float(weight(batch, batch["labels"]))


def per_point_loop(model, batches, weight, w0, dirs, coeffs) -> np.ndarray:
    """Write each point's weights into a copy of the model, loop over the dict batches."""
    net = copy.deepcopy(model).eval()
    params = dict(net.named_parameters())
    counts = [units(b, weight) for b in batches]
    losses = []
    with torch.no_grad():
        for a, b in coeffs:
            for name, p in params.items():
                p.copy_(w0[name] + a * dirs[0][name] + b * dirs[1][name])
            total = sum(net(**batch).loss.item() * n for batch, n in zip(batches, counts))
            losses.append(total / sum(counts))
    return np.array(losses)


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_case(name, model, weight, batches, steps, *, quick: bool, profile: bool) -> dict:
    problem = la.Problem(model, None, batches, weight=weight)
    dirs = la.random_directions(problem, 2, norm="filter", ignore="biasbn", seed=0)
    n_points = steps * steps

    def ours(compile=False):
        return la.surface(problem, dirs, steps=steps, span=(-1, 1), quiet=True, compile=compile)

    cold = _seconds(ours)  # the first call pays one-time costs; the headline is the second
    start = time.perf_counter()
    land = ours()
    warm = time.perf_counter() - start
    compiling = _seconds(lambda: ours(True))  # compiles, then evaluates
    start = time.perf_counter()
    compiled = ours(True)
    compiled_s = time.perf_counter() - start
    compiled_diff = float(np.max(np.abs(compiled.loss - land.loss) / np.abs(land.loss)))

    coeffs = np.stack(np.meshgrid(*land.coords, indexing="ij"), -1).reshape(-1, 2)
    sample = coeffs[np.linspace(0, n_points - 1, 6 if quick else 24).astype(int)]
    w0 = {k: v.clone() for k, v in problem.params.items()}
    start = time.perf_counter()
    reference = per_point_loop(model, batches, weight, w0, dirs, sample)
    loop = (time.perf_counter() - start) * n_points / len(sample)
    with torch.no_grad():  # the floor: the same forward passes, at fixed weights
        start = time.perf_counter()
        for _ in range(len(sample)):
            sum(model(**batch).loss.item() for batch in batches)
        floor = (time.perf_counter() - start) * n_points / len(sample)
    index = [int(np.flatnonzero((coeffs == c).all(1))[0]) for c in sample]
    max_rel = float(np.max(np.abs(land.loss.reshape(-1)[index] - reference) / np.abs(reference)))
    row = {
        "case": name,
        "params": problem.n_params,
        "sequences": problem.n_samples,
        "points": n_points,
        "ours_s": warm,
        "ours_cold_s": cold,
        "loop_s": loop,
        "floor_s": floor,
        "plan": land.settings["plan"],
        "max_rel_diff": max_rel,
        "compiled_s": compiled_s,
        "compile_s": compiling - compiled_s,
        "compiled_plan": compiled.settings["plan"]["path"],
        "compiled_diff": compiled_diff,
    }
    if profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            ours()
        row["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grids, for a smoke run")
    parser.add_argument("--profile", action="store_true", help="print operator profiles")
    args = parser.parse_args()
    hf_logging.set_verbosity_error()
    steps = 5 if args.quick else 11
    n = 32 if args.quick else 64
    print(
        f"{torch.get_num_threads()} threads; torch {torch.__version__}, "
        f"lossatlas {la.__version__}\n"
    )
    rows = []
    for name, (model, weight), classify in [
        ("GPT-2 LM", gpt2_case(), False),
        ("BERT classifier", bert_case(), True),
    ]:
        batches = padded_batches(n, 16, classify=classify)
        rows.append(
            run_case(name, model, weight, batches, steps, quick=args.quick, profile=args.profile)
        )
    print(
        "| case | params | sequences | points | lossatlas s (first call) | per-point loop s "
        "| speed-up | forward-only floor s | max rel. diff |"
    )
    print("|" + "---|" * 9)
    for r in rows:
        print(
            f"| {r['case']} | {r['params']:,} | {r['sequences']} | {r['points']} "
            f"| {r['ours_s']:.2f} ({r['ours_cold_s']:.2f}) | {r['loop_s']:.2f} "
            f"| {r['loop_s'] / r['ours_s']:.1f}x | {r['floor_s']:.2f} | {r['max_rel_diff']:.1e} |"
        )
    print(
        "\n| case | compiled s | vs eager | vs loop | compile s | break-even points "
        "| path | max rel. diff vs eager |"
    )
    print("|" + "---|" * 8)
    for r in rows:
        saved = (r["ours_s"] - r["compiled_s"]) / r["points"]
        even = f"{r['compile_s'] / saved:,.0f}" if saved > 0 else "never"
        print(
            f"| {r['case']} | {r['compiled_s']:.2f} | {r['ours_s'] / r['compiled_s']:.2f}x "
            f"| {r['loop_s'] / r['compiled_s']:.1f}x | {r['compile_s']:.1f} | {even} "
            f"| {r['compiled_plan']} | {r['compiled_diff']:.1e} |"
        )
    for r in rows:
        print(f"\n{r['case']} plan: {r['plan']}")
        if "profile" in r:
            print(r["profile"])


if __name__ == "__main__":
    main()
