"""Tiny Hugging Face models built from configs (random weights, no download) and padded data.

Builders, not tests: every call builds a fresh model from a fixed seed, so callers may mutate
what they get. The models keep the default attention implementation (`sdpa`): lossatlas has to
cope with it. The references here are independent of lossatlas: a deep copy of the model (in
float64, evaluation mode), the weights written with `copy_`, all the data joined into one batch
and Hugging Face's own `outputs.loss` on it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tests.models import reference

IGNORE = -100  # Hugging Face's ignore_index for labels
VOCAB = 40
MAX_LEN = 16
N_LABELS = 3
# Batches of different sizes, each padded to its own longest sequence ("dynamic padding"), so
# the batches differ in width and in their number of real tokens.
BATCH_SIZES = (3, 5, 2)
MIN_LEN, MAX_SEQ = 2, 7

CAUSAL = ("gpt2", "llama")
KINDS = ("gpt2", "bert", "llama")


def _quiet_config(factory: Callable[..., Any], **kwargs: Any) -> Any:
    """A config without transformers' chatter about defaults that do not fit a tiny vocab."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory(**kwargs)


def build(kind: str, *, dropout: float = 0.1, seed: int = 0) -> nn.Module:
    """A tiny Hugging Face model in evaluation mode with `sdpa` attention.

    Args:
        kind: `"gpt2"` (`GPT2LMHeadModel`, tied input/output embeddings), `"bert"`
            (`BertForSequenceClassification`, `N_LABELS` classes) or `"llama"`
            (`LlamaForCausalLM`: rotary embeddings, RMSNorm, SwiGLU, grouped-query attention).
        dropout: dropout probability of every dropout layer the config has (Llama has none
            outside attention). Non-zero by default, so evaluations must switch it off.
        seed: the seed of the random initialisation.

    Returns:
        The model, float32, in evaluation mode.
    """
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "gpt2":
        config = _quiet_config(
            tf.GPT2Config,
            vocab_size=VOCAB,
            n_positions=MAX_LEN,
            n_embd=8,
            n_layer=1,
            n_head=2,
            n_inner=16,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            bos_token_id=1,
            eos_token_id=1,
            pad_token_id=0,
        )
        model = tf.GPT2LMHeadModel(config)
    elif kind == "bert":
        config = _quiet_config(
            tf.BertConfig,
            vocab_size=VOCAB,
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            max_position_embeddings=MAX_LEN,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            num_labels=N_LABELS,
            # Set here: otherwise the model writes it into its config on the first call.
            problem_type="single_label_classification",
            pad_token_id=0,
        )
        model = tf.BertForSequenceClassification(config)
    elif kind == "llama":
        config = _quiet_config(
            tf.LlamaConfig,
            vocab_size=VOCAB,
            hidden_size=8,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=MAX_LEN,
            attention_dropout=dropout,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=1,
            pad_token_id=0,
        )
        model = tf.LlamaForCausalLM(config)
    else:
        raise KeyError(kind)
    assert model.config._attn_implementation == "sdpa"
    return model.eval()


def batches(
    kind: str, sizes: Sequence[int] = BATCH_SIZES, *, seed: int = 1, width: int | None = None
) -> list[dict[str, torch.Tensor]]:
    """Dict batches `{"input_ids", "attention_mask", "labels"}` of sequences of random lengths.

    Sequences are right-padded with token 0 (attention mask 0). A causal LM's labels are the
    input ids with -100 at the pads (the model shifts them); a classifier's are one class per
    sequence.

    Args:
        kind: the model kind (see `build`).
        sizes: sequences per batch.
        seed: seed of the lengths, tokens and classes.
        width: pad every batch to this width; default each batch to its own longest sequence.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    for rows in sizes:
        lengths = torch.randint(MIN_LEN, MAX_SEQ + 1, (rows,), generator=gen)
        w = int(lengths.max()) if width is None else width
        ids = torch.randint(2, VOCAB, (rows, w), generator=gen)
        mask = (torch.arange(w)[None] < lengths[:, None]).long()
        ids = ids * mask
        if kind in CAUSAL:
            labels = torch.where(mask.bool(), ids, torch.full_like(ids, IGNORE))
        else:
            labels = torch.randint(0, N_LABELS, (rows,), generator=gen)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def rebatch(data: Sequence[Mapping[str, torch.Tensor]], sizes: Sequence[int]) -> list[dict]:
    """The same sequences split into batches of `sizes`, each cut to its own longest one."""
    whole = join(data)
    assert sum(sizes) == len(whole["input_ids"])
    out, start = [], 0
    for rows in sizes:
        part = {k: v[start : start + rows] for k, v in whole.items()}
        w = int(part["attention_mask"].sum(1).max())
        out.append({k: v[:, :w] if v.ndim == 2 else v for k, v in part.items()})
        start += rows
    return out


def join(data: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """All batches as one, right-padded to the widest (pads: id 0, mask 0, label -100)."""
    width = max(b["input_ids"].shape[1] for b in data)
    fill = {"input_ids": 0, "attention_mask": 0, "labels": IGNORE}

    def pad(key: str, t: torch.Tensor) -> torch.Tensor:
        if t.ndim < 2:  # one label per sequence
            return t
        return nn.functional.pad(t, (0, width - t.shape[1]), value=fill[key])

    return {k: torch.cat([pad(k, b[k]) for b in data]) for k in data[0]}


def moved(
    model: nn.Module,
    params: Mapping[str, torch.Tensor] | None = None,
    *,
    dtype: torch.dtype = torch.float64,
    attention: str | None = None,
) -> nn.Module:
    """A deep copy of `model` in `dtype` and evaluation mode, with `params` written in.

    Args:
        model: the user's model (untouched).
        params: `{name: tensor}` for every parameter; None keeps the model's.
        dtype: the copy's dtype.
        attention: another attention implementation for the copy (e.g. `"eager"`, to have a
            reference that shares no attention kernel with the model under test).
    """
    copied = reference.moved(model, params, dtype=dtype)
    if attention is not None:
        copied.set_attn_implementation(attention)
    return copied


def hf_loss(
    model: nn.Module,
    data: Sequence[Mapping[str, torch.Tensor]],
    params: Mapping[str, torch.Tensor] | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> float:
    """Hugging Face's own `outputs.loss` of `model` at `params` on all `data` in one batch."""
    with torch.no_grad():
        return float(moved(model, params, dtype=dtype)(**join(data)).loss)


def loss_function(
    model: nn.Module, data: Sequence[Mapping[str, torch.Tensor]]
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, list[str]]:
    """HF's loss on all data joined as a float64 function of all parameters flattened.

    The copy runs eager attention: no fused kernel, so derivatives of any order exist and the
    reference shares no attention code with the model under test.

    Returns:
        `(loss, theta0, names)` as `tests.models.reference.flat_loss`.
    """
    eager = moved(model, attention="eager")
    return reference.flat_loss(eager, lambda out: out.loss, kwargs=join(data))


def dense_reference_hessian(
    model: nn.Module, data: Sequence[Mapping[str, torch.Tensor]]
) -> torch.Tensor:
    """The float64 Hessian of HF's loss on all data at the model's weights (eager attention),
    parameters flattened in `named_parameters` order (a tied weight once)."""
    return reference.dense_hessian(*loss_function(model, data)[:2])


flat = reference.flat
