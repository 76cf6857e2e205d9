"""Probe vectors and their quadratic forms: what the trace estimators compute, here or on Ray.

Probes are drawn row by row from one `torch.Generator` (`rademacher`, `gaussian`), so a row does
not depend on the block it falls in, and `skip_rows` advances a generator past rows without
keeping them: a block drawn elsewhere from the generator's state equals the local rows.
Products go through the operator in blocks of `op.block_width()` vectors; quadratic forms are
summed in float64 (`lanczos.dot_products`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lossatlas.curvature.lanczos import dot_products
from lossatlas.curvature.operator import HessianOperator


def bits(row: torch.Tensor, generator: torch.Generator) -> None:
    """Fill `row` with 0s and 1s: `torch.randint(0, 2, (dim,), generator=generator)`'s draws,
    in place, without an int64 vector."""
    row.random_(0, 2, generator=generator)


def normals(row: torch.Tensor, generator: torch.Generator) -> None:
    """Fill `row` with standard normals (`torch.randn(dim, generator=generator)` in its dtype)."""
    row.normal_(generator=generator)


def rademacher(op: HessianOperator, generator: torch.Generator, k: int) -> torch.Tensor:
    """A `(k, dim)` block of random signs in the operator's dtype, row by row.

    Row `i` holds `2 torch.randint(0, 2, (dim,), generator=generator) - 1` (`bits`), so the
    signs do not depend on block sizes.
    """
    rows = torch.empty(k, op.dim, dtype=op.dtype)
    for row in rows:
        bits(row, generator)
    return rows.mul_(2).sub_(1).to(op.device)


def gaussian(op: HessianOperator, generator: torch.Generator, k: int) -> torch.Tensor:
    """A `(k, dim)` block of standard normal entries, drawn row by row in the operator's
    dtype (`normals`)."""
    rows = torch.empty(k, op.dim, dtype=op.dtype)
    for row in rows:
        normals(row, generator)
    return rows.to(op.device)


def skip_rows(
    dim: int,
    dtype: torch.dtype,
    fill: Callable[[torch.Tensor, torch.Generator], None],
    generator: torch.Generator,
    k: int,
) -> None:
    """Advance `generator` past `k` rows that `fill` would draw (`rademacher` with `bits`,
    `gaussian` with `normals`): one reused CPU row of the same size and dtype consumes the
    same random numbers, so the next row drawn is the one a local run would draw next."""
    row = torch.empty(dim, dtype=dtype)
    for _ in range(k):
        fill(row, generator)


def products(op: HessianOperator, rows: torch.Tensor) -> torch.Tensor:
    """`H V` for `V` the transpose of `(k, dim)` rows (every column of `V` is contiguous), in
    blocks of `op.block_width()` vectors."""
    width = op.block_width()
    if rows.shape[0] <= width:
        return op.matmat(rows.T)
    return torch.cat([op.matmat(rows[a : a + width].T) for a in range(0, len(rows), width)], 1)


def forms(rows: torch.Tensor, products: torch.Tensor) -> torch.Tensor:
    """`v_i^T (H v_i)` for the rows `v_i` and the columns of `products`, as float64.

    The diagonal of one `(k, dim) x (dim, k)` product by `dot_products` (float64 sums of
    chunks; `k^2 dim` multiply-adds, a few percent of a Hessian-vector product's cost).
    """
    return torch.diagonal(dot_products(rows, products)).cpu()


def deflate(G: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """`(I - Q^T Q)` applied to the rows of `G`, in place (`Q`: orthonormal rows)."""
    return G.addmm_(dot_products(G, Q.T).to(G.device, G.dtype), Q, alpha=-1)


def residual_forms(
    op: HessianOperator, generator: torch.Generator, k: int, Q: torch.Tensor | None = None
) -> torch.Tensor:
    """`g_i^T P H P g_i` for the next `k` Rademacher rows `g_i` of `generator` (`P = I - Q^T Q`,
    or I without `Q`): one block of Hutchinson's quadratic forms, here or on a Ray worker."""
    G = rademacher(op, generator, k)
    if Q is not None:
        G = deflate(G, Q)
    return forms(G, products(op, G))


def sketch(op: HessianOperator, generator: torch.Generator, k: int) -> torch.Tensor:
    """`H S` for the next `k` Gaussian rows of `generator` (Hutch++'s sketch), `(dim, k)`."""
    return products(op, gaussian(op, generator, k))


def basis_forms(
    op: HessianOperator, generator: torch.Generator | None, Q: torch.Tensor, a: int, b: int
) -> torch.Tensor:
    """`q_i^T H q_i` for the rows `a:b` of `Q` (the generator is not used)."""
    return forms(Q[a:b], products(op, Q[a:b]))
