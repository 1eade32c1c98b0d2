"""Context (sequence) parallelism for a video transformer: its tokens split over one mesh axis, Ulysses style.

Wan's self-attention sees all F x H x W tokens of a clip (75,600 at 720p x 81 frames). Splitting frames
over devices alone does not help it: full attention then gathers every token on every device, and the
residual stream, norms and feed-forward of the whole clip sit on each device too. Here the tokens stay
split over the layout's token axis through every block (`constrain_tokens`), and self-attention does what
DeepSpeed-Ulysses does: an all-to-all turns (tokens / S, heads) into (all tokens, heads / S) on each of
the S devices, attention runs on whole sequences of its heads, and an all-to-all turns it back. The heads
(already split over the mesh axes the rules put them on, if any) must therefore divide by S x those.
Cross-attention needs no exchange: its queries stay split and the text or image tokens are whole on every
device.

The RoPE is applied before the exchange, on each device's slice of the global (cos, sin) tables, so every
token turns by its position in the clip, not in its slice.

What it does not divide: each device still holds whole L x L attention matrices for its heads / (S x
tensor) heads, as tensor parallelism alone would; only a flash-style kernel (models/attention.py) avoids
them. What it divides that tensor parallelism does not: the residual stream, norms, modulations and
feed-forward activations, and the block inputs remat keeps, all 1 / S per device.

Why not ring attention: it passes key/value blocks around the S devices instead (S steps, online
softmax), so it needs no head count divisible by S, but each device sends about the whole clip's keys
and values per layer, where Ulysses' four all-to-alls send about 4 / S of one such activation, and it
needs its own flash-style backward, or autodiff keeps every step's probabilities. Wan's 40 (14B) or 12 (1.3B) heads
allow S x tensor up to 8 or 4 on a power-of-two mesh, which already splits a 720p clip's activations
8 or 4 ways; ring attention would pay only to split a clip over more devices than that.

How a model learns the layout: the caller traces it inside `use_layout`, which
`pyoco_jax.parallel.model_context(mesh)` enters with the layout of a mesh (so no mesh axis name is written
here). Without a layout, or with a token axis of size 1, every function here is the plain single-device
computation. The shard_maps leave every mesh axis manual, so attention() inside calls its kernel directly.
"""

import contextlib
import contextvars
import dataclasses
import math
from collections.abc import Iterator

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pyoco_jax.errors import ConfigError
from pyoco_jax.models.attention import attention


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Where a transformer's activations (B, L, ...) live on `mesh`: rows over `batch_axes`, tokens over
    `token_axis`, attention heads over `head_axes` (mesh axis names, none of them a batch or the token axis)."""

    mesh: Mesh
    batch_axes: tuple[str, ...]
    token_axis: str
    head_axes: tuple[str, ...]

    @property
    def token_split(self) -> int:
        return self.mesh.shape[self.token_axis]

    @property
    def head_split(self) -> int:
        """Devices a head count is divided over in self-attention: the token axis times the head axes."""
        return self.token_split * self.head_devices

    @property
    def head_devices(self) -> int:
        """Devices the heads are split over before the exchange (the head axes' sizes multiplied)."""
        return math.prod(self.mesh.shape[a] for a in self.head_axes)

    @property
    def head_spec(self) -> tuple[str, ...] | None:
        """The heads' entry in a PartitionSpec."""
        return self.head_axes or None

    def rows(self, batch: int) -> tuple[str, ...] | None:
        """The batch axes, if `batch` rows split evenly over them (else each of those devices holds all rows)."""
        return self.batch_axes if batch % math.prod(self.mesh.shape[a] for a in self.batch_axes) == 0 else None

    def check(self, heads: int, tokens: int) -> None:
        """Refuses a model whose heads or tokens do not split over this layout, naming the mesh keys."""
        check_sizes(
            heads,
            tokens,
            token_devices=self.token_split,
            head_devices=self.head_devices,
            token_key=f"mesh.{self.token_axis}",
            head_keys=tuple(f"mesh.{a}" for a in self.head_axes),
        )


def check_sizes(
    heads: int, tokens: int, *, token_devices: int, head_devices: int, token_key: str, head_keys: tuple[str, ...]
) -> None:
    """The one rule of a context-parallel model: tokens split over `token_devices` (config key `token_key`) and
    self-attention's heads over `token_devices` x `head_devices` (`head_keys`); else a ConfigError saying so."""
    if token_devices <= 1:
        return
    split = token_devices * head_devices
    if heads % split:
        keys = (token_key, *head_keys)
        raise ConfigError(
            f"context parallelism splits attention heads over {' x '.join(keys)} = {split} devices, and "
            f"{heads} heads do not divide by that; change {' or '.join(keys)}"
        )
    if tokens % token_devices:
        raise ConfigError(
            f"a clip's {tokens} tokens (frames x rows x columns of patches) do not split over {token_key}="
            f"{token_devices} devices; change {token_key} or the clip size"
        )


_LAYOUT: contextvars.ContextVar[TokenLayout | None] = contextvars.ContextVar("token_layout", default=None)


@contextlib.contextmanager
def use_layout(layout: TokenLayout | None) -> Iterator[None]:
    """Models traced inside this context split their tokens as `layout` says (None: no layout).

    Enter it inside the jitted function, around the model call: jit's cache does not see this context."""
    token = _LAYOUT.set(layout)
    try:
        yield
    finally:
        _LAYOUT.reset(token)


def active_layout() -> TokenLayout | None:
    """The layout of the current trace, if it splits tokens (token axis > 1)."""
    layout = _LAYOUT.get()
    return layout if layout is not None and layout.token_split > 1 else None


def check_split(heads: int, tokens: int) -> None:
    """Refuses, before anything compiles, a model whose heads or tokens the current layout cannot split."""
    layout = active_layout()
    if layout is not None:
        layout.check(heads, tokens)


def constrain_tokens(x: jax.Array) -> jax.Array:
    """x (B, L, ...) kept split over tokens (and rows), its other dims left to the compiler."""
    layout = active_layout()
    if layout is None:
        return x
    free = (PartitionSpec.UNCONSTRAINED,) * (x.ndim - 2)
    spec = PartitionSpec(layout.rows(x.shape[0]), layout.token_axis, *free)
    return jax.lax.with_sharding_constraint(x, NamedSharding(layout.mesh, spec))


def self_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, backend: str) -> jax.Array:
    """`attention(q, k, v)` over all L tokens of q, k, v (B, L, H, D), each device holding L / S of them."""
    layout = active_layout()
    if layout is None:
        return attention(q, k, v, backend=backend)
    axis = layout.token_axis
    spec = PartitionSpec(layout.rows(q.shape[0]), axis, layout.head_spec, None)

    def ulysses(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        # (b, L/S, h, D) -> (b, L, h/S, D): this device's share of the heads, over every token.
        whole = [jax.lax.all_to_all(a, axis, split_axis=2, concat_axis=1, tiled=True) for a in (q, k, v)]
        out = attention(*whole, backend=backend)
        return jax.lax.all_to_all(out, axis, split_axis=1, concat_axis=2, tiled=True)

    return _local(ulysses, layout, (spec, spec, spec), spec)(q, k, v)


def cross_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, backend: str) -> jax.Array:
    """`attention(q, k, v)` of token-split queries q (B, L, H, D) over a context k, v (B, T, H, D) whole on
    every device of the token axis: no exchange."""
    layout = active_layout()
    if layout is None:
        return attention(q, k, v, backend=backend)
    rows = layout.rows(q.shape[0])
    heads = layout.head_spec if q.shape[2] % layout.head_devices == 0 else None
    queries = PartitionSpec(rows, layout.token_axis, heads, None)
    context = PartitionSpec(rows, None, heads, None)
    attend = lambda q, k, v: attention(q, k, v, backend=backend)
    return _local(attend, layout, (queries, context, context), queries)(q, k, v)


def _local(fn, layout: TokenLayout, in_specs: tuple, out_spec: PartitionSpec):
    """`fn` on each device's blocks. Unchecked (check_vma=False): fused kernels inside (models/attention.py) do
    not type their outputs as varying over the manual axes, and the specs here say how they vary."""
    return jax.shard_map(fn, mesh=layout.mesh, in_specs=in_specs, out_specs=out_spec, check_vma=False)
