"""The `tiny-gpt` problem: a character-level causal transformer on the standard library's source.

The text ships with Python: the first `GPT_CHARS_PER_MODULE` characters of each module in
`GPT_MODULES`, read from the interpreter's own standard library (`sysconfig`'s `"stdlib"`
path), so nothing is downloaded. The modules exist in Python 3.10 to 3.13 and each is longer
than the characters taken, so every version gets text of the same size and makeup; the exact
characters can differ between Python releases (the sources change a little), never between
machines running the same release. The weights are cached like those of every trained
built-in problem (`common.load_or_train`).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lossatlas.core.metrics import accuracy
from lossatlas.core.problem import Problem
from lossatlas.core.seeding import init_layers
from lossatlas.errors import LossatlasError, check_seed
from lossatlas.problems.common import check_split, load_or_train

# Bump when the text, vocabulary, model or training recipe changes: old cache files are unused.
GPT_VERSION = 1
GPT_MODULES = ("textwrap", "heapq", "calendar", "difflib", "functools", "contextlib")
GPT_CHARS_PER_MODULE = 16_000  # every module above is longer in Python 3.10 to 3.13
GPT_HELD_OUT = 2_000  # the last characters of each module's share are held out
GPT_CONTEXT = 64  # tokens per sequence
GPT_SEQUENCES = 96  # sequences in the problem's data, either split
# The vocabulary: id 0 for any other character (tabs, non-ASCII), then newline and the 95
# printable ASCII characters. Fixed, so the model's shape never depends on the text.
VOCAB = "\n" + "".join(chr(c) for c in range(32, 127))
_D_MODEL = 48
_HEADS = 4
_BLOCKS = 2
_STEPS = 400
_BATCH = 32
_LR = 3e-3
_WEIGHT_DECAY = 0.01


def encode(text: str) -> torch.Tensor:
    """Character ids of `text`: `1 + VOCAB.index(c)`, or 0 for a character outside `VOCAB`."""
    table = {c: i + 1 for i, c in enumerate(VOCAB)}
    return torch.tensor([table.get(c, 0) for c in text], dtype=torch.long)


def gpt_text() -> tuple[str, str]:
    """The training and held-out text: each module's first `GPT_CHARS_PER_MODULE` characters,
    the last `GPT_HELD_OUT` of them held out, joined in `GPT_MODULES` order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    train, test = [], []
    for name in GPT_MODULES:
        try:
            text = (stdlib / f"{name}.py").read_text(encoding="utf-8")
        except OSError as exc:
            raise LossatlasError(
                f"tiny-gpt reads the standard library's source, but {stdlib / name}.py is "
                f"unreadable ({exc.strerror or exc}); is this Python installed without sources?"
            ) from None
        if len(text) < GPT_CHARS_PER_MODULE:
            raise LossatlasError(f"{name}.py has {len(text)} characters; tiny-gpt needs more")
        share = text[:GPT_CHARS_PER_MODULE]
        train.append(share[:-GPT_HELD_OUT])
        test.append(share[-GPT_HELD_OUT:])
    return "".join(train), "".join(test)


def windows(ids: torch.Tensor, n: int, length: int = GPT_CONTEXT) -> tuple[torch.Tensor, ...]:
    """`n` evenly spaced windows of `ids` as `(inputs, targets)`, both `(n, length)`: the
    targets are the inputs shifted by one character (next-character prediction)."""
    starts = torch.linspace(0, len(ids) - length - 1, n).round().long()
    rows = ids[starts[:, None] + torch.arange(length + 1)]
    return rows[:, :-1], rows[:, 1:]


class NextTokenLoss(nn.CrossEntropyLoss):
    """Cross-entropy of logits `(N, T, V)` against next-token ids `(N, T)`, flattened over the
    tokens: `L = -1/(N T) sum_{n,t} log softmax(z_{n,t})[y_{n,t}]`. With full-length sequences
    the per-token mean equals the mean over sequences of their per-token means."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return super().forward(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask (Vaswani et al. 2017):
    `softmax(Q K^T / sqrt(d_head) + M) V` per head, `M` being `-inf` above the diagonal, so
    position `t` sees positions `<= t` only. Runs by `scaled_dot_product_attention`."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.utils.skip_init(nn.Linear, d_model, 3 * d_model)
        self.proj = nn.utils.skip_init(nn.Linear, d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """A pre-norm transformer block (Radford et al. 2019): `x + attn(ln1(x))`, then
    `x + mlp(ln2(x))` with a 4x wide GELU MLP."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        linear = nn.utils.skip_init
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            linear(nn.Linear, d_model, 4 * d_model),
            nn.GELU(),
            linear(nn.Linear, 4 * d_model, d_model),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """Token and learned position embeddings, pre-norm blocks, a final LayerNorm and a linear
    head tied to the token embedding (Press & Wolf 2017): ids `(N, T)` -> logits `(N, T, V)`."""

    def __init__(
        self,
        vocab: int = len(VOCAB) + 1,
        context: int = GPT_CONTEXT,
        d_model: int = _D_MODEL,
        heads: int = _HEADS,
        blocks: int = _BLOCKS,
    ) -> None:
        super().__init__()
        self.tok = nn.utils.skip_init(nn.Embedding, vocab, d_model)
        self.pos = nn.utils.skip_init(nn.Embedding, context, d_model)
        self.blocks = nn.Sequential(*(Block(d_model, heads) for _ in range(blocks)))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.utils.skip_init(nn.Linear, d_model, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied: one matrix reads and writes characters

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[-1] > self.pos.num_embeddings:
            raise LossatlasError(f"sequences of {ids.shape[-1]} tokens exceed the context")
        x = self.tok(ids) + self.pos.weight[: ids.shape[-1]]
        return self.head(self.ln_f(self.blocks(x)))


def _init(model: TinyGPT, gen: torch.Generator) -> None:
    """PyTorch's default for the linear layers (`init_layers`), `N(0, 0.02^2)` for the
    embeddings as in GPT-2, LayerNorm at scale 1 and shift 0; every draw from `gen`."""
    init_layers(model, gen)
    with torch.no_grad():
        for emb in (model.tok, model.pos):
            emb.weight.normal_(0.0, 0.02, generator=gen)
    for layer in model.modules():
        if isinstance(layer, nn.LayerNorm):
            layer.reset_parameters()


def _train_gpt(model: TinyGPT, ids: torch.Tensor, seed: int) -> None:
    """AdamW on random windows of the training text with a cosine decay; every random draw
    (initialisation and windows) from one seeded generator."""
    gen = torch.Generator().manual_seed(int(seed))
    _init(model, gen)
    opt = torch.optim.AdamW(model.parameters(), lr=_LR, weight_decay=_WEIGHT_DECAY)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, _STEPS)  # end in a minimum
    loss_fn = NextTokenLoss()
    span = torch.arange(GPT_CONTEXT + 1)
    model.train()
    for _ in range(_STEPS):
        starts = torch.randint(0, len(ids) - GPT_CONTEXT, (_BATCH, 1), generator=gen)
        rows = ids[starts + span]
        opt.zero_grad(set_to_none=True)
        loss_fn(model(rows[:, :-1]), rows[:, 1:]).backward()
        opt.step()
        schedule.step()


def unigram_entropy(ids: torch.Tensor) -> float:
    """The entropy in nats of the character frequencies of `ids`, `-sum_c p_c log p_c`: the
    loss of the best model that ignores the context."""
    p = torch.bincount(ids).double()
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())


def tiny_gpt(*, seed: int = 0, split: str = "train", quiet: bool = True) -> Problem:
    """A two-block character-level causal transformer trained on the standard library's source.

    The model maps ids `(N, 64)` to next-character logits `(N, 64, 97)`: token plus learned
    position embeddings (width 48), two pre-norm blocks (4-head causal self-attention and a
    GELU MLP of width 192, Radford et al. 2019; Vaswani et al. 2017), a final LayerNorm and a
    head tied to the token embedding: 64,368 weights. The text is the first 16,000
    characters of each of `GPT_MODULES` (see the module docstring), the last 2,000 of each held
    out; the vocabulary is newline, the 95 printable ASCII characters and an unknown id (0).
    Training takes 400 steps of AdamW (batch 32 random windows, cosine decay), about 10 s on a
    2-core CPU, from a loss of `log 97 = 4.57` to 2.25 nats per character on the training
    windows and 2.14 on the held-out ones (41% and 45% of characters right; measured with
    Python 3.11), against a unigram entropy of 3.15. The problem's data are 96 evenly spaced
    windows of 64 characters of the chosen split, as `(ids, targets)` with the targets shifted
    by one; the loss is the cross-entropy per character, `NextTokenLoss`, and `"accuracy"` the
    share of characters predicted right. The weights are cached (see `cache_dir`). Parameters:
    `tok.weight` (shared by `head`), `pos.weight`, `blocks.{0,1}.{ln1,attn.qkv,attn.proj,ln2,
    mlp.0,mlp.2}.*`, `ln_f.*`.

    Args:
        seed: seeds the initialisation and the training windows (a private generator: the
            global torch RNG is neither used nor changed).
        split: evaluate on the `"train"` (default) or the held-out `"test"` text.
        quiet: do not report training or cache use on standard error.

    Returns:
        A problem with next-character cross-entropy loss and an `"accuracy"` metric.
    """
    check_split(split)
    check_seed(seed)
    train_text, test_text = gpt_text()
    train_ids = encode(train_text)
    model = TinyGPT()
    load_or_train(
        model,
        lambda: _train_gpt(model, train_ids, seed),
        name="tiny-gpt",
        version=GPT_VERSION,
        seed=seed,
        quiet=quiet,
    )
    ids = train_ids if split == "train" else encode(test_text)
    data = windows(ids, GPT_SEQUENCES)
    return Problem(model, NextTokenLoss(), data, metrics={"accuracy": accuracy})
