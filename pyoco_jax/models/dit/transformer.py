"""WanTransformer: a Wan-2.1 video diffusion transformer, equal to diffusers' `WanTransformer3DModel`.

Video is channels-last (B, F, H, W, C), as everywhere in pyoco_jax (diffusers takes (B, C, F, H, W)).
Patches become tokens (F/pt * H/ph * W/pw of them), the blocks attend over all of them with a 3D RoPE
and cross-attend to the text (and, for image-to-video, CLIP image tokens), and a modulated linear head
turns each token back into its patch.

The blocks share one module whose parameters carry a leading layer axis (`blocks.attn1.to_q.kernel` is
(num_layers, D, D)); `scan_layers=True` runs them with `jax.lax.scan`, so compile time does not grow with
depth, and `False` unrolls a Python loop over the same parameters (same checkpoints either way).

Two pyoco_jax extensions serve the trainer's class-conditional and text-free runs; diffusers' Wan has
neither, so a model with a class embedding has no diffusers export. `num_classes > 0` adds a class
embedding (num_classes + 1 rows, the last the null label of classifier-free guidance) to the time
embedding; it starts at zero, so a model gains it without changing what it computes. `with_text=False`
builds a model trained without text: it takes no context and cross-attends to one zero token of width
`text_dim` instead (an exported model is given that token as `encoder_hidden_states`).
"""

import math
import operator

import jax
import jax.numpy as jnp
from flax import nnx

from pyoco_jax.models import axes
from pyoco_jax.models.attention import BACKENDS
from pyoco_jax.models.context_parallel import check_split, constrain_tokens
from pyoco_jax.models.dit.block import WanBlock, modulation_table
from pyoco_jax.models.dit.config import WanConfig
from pyoco_jax.models.dit.embeddings import ConditionEmbedder, PatchEmbedding
from pyoco_jax.models.dit.norms import plain_layer_norm
from pyoco_jax.models.dit.rope import rope_tables
from pyoco_jax.models.embeddings import LabelEmbedding
from pyoco_jax.models.keys import ParamKeys
from pyoco_jax.models.layers import Dense, Precision
from pyoco_jax.models.remat import REMAT_MODES, checkpoint_policy


def stacked_blocks(config: WanConfig, key: jax.Array, *, backend: str, precision: Precision) -> WanBlock:
    """`num_layers` independently initialised blocks as one WanBlock whose parameters have a leading layer
    axis (its logical name None: never sharded)."""

    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: None})
    def build(layer_key: jax.Array) -> WanBlock:
        return WanBlock(config, backend=backend, precision=precision, rngs=ParamKeys(nnx.Rngs(layer_key)))

    return build(jax.random.split(key, config.num_layers))


class WanTransformer(nnx.Module):
    """Denoiser on channels-last video (B, F, H, W, in_channels) -> (B, F, H, W, out_channels) float32.

    `remat` (models/remat.py) rematerialises each block in the backward pass; `attention_backend` picks the
    attention kernel (models/attention.py); `num_classes` and `with_text`: the module docstring.
    """

    def __init__(
        self,
        config: WanConfig,
        *,
        num_classes: int = 0,
        with_text: bool = True,
        precision: Precision | None = None,
        scan_layers: bool = True,
        remat: str = "none",
        attention_backend: str = "xla",
        rngs: nnx.Rngs,
    ):
        if remat not in REMAT_MODES:
            raise ValueError(f"remat={remat!r} is not one of {REMAT_MODES}")
        if attention_backend not in BACKENDS:
            raise ValueError(f"attention_backend={attention_backend!r} is not one of {BACKENDS}")
        precision = precision or Precision()
        keys = ParamKeys(rngs)
        dim = config.inner_dim
        self.config, self.dtype, self.with_text = config, precision.dtype, with_text
        self.scan_layers, self.remat = scan_layers, remat
        self.patch_embedding = PatchEmbedding(config, precision=precision, rngs=keys)
        self.condition_embedder = ConditionEmbedder(config, precision=precision, rngs=keys)
        self.blocks = stacked_blocks(config, keys.params(), backend=attention_backend, precision=precision)
        # Zero-initialised head, as Wan's: a fresh model predicts 0 while the blocks start learning.
        self.proj_out = Dense(
            dim,
            config.out_channels * config.patch_volume,
            names=(axes.EMBED, axes.CONV_OUT),
            precision=precision,
            rngs=keys,
            zero_init=True,
        )
        self.scale_shift_table = modulation_table(2, dim, precision, keys)
        # Drawn last, so the other parameters are those of the same seed without it.
        self.class_embedding = _class_embedding(num_classes, dim, precision, keys) if num_classes else None

    def _grid(self, x: jax.Array) -> tuple[int, int, int]:
        """The (frames, rows, columns) of patches of a video x, checked."""
        config = self.config
        if x.ndim != 5 or x.shape[-1] != config.in_channels:
            raise ValueError(f"WanTransformer takes video (B, F, H, W, {config.in_channels}), got shape {x.shape}")
        sides = zip(("frames", "height", "width"), x.shape[1:4], config.patch_size, strict=True)
        uneven = [f"{name} {size} by {patch}" for name, size, patch in sides if size % patch]
        if uneven:
            raise ValueError(f"the video does not split into {config.patch_size} patches: {', '.join(uneven)}")
        grid = tuple(size // patch for size, patch in zip(x.shape[1:4], config.patch_size, strict=True))
        if max(grid) > config.rope_max_seq_len:
            raise ValueError(f"{grid} patches exceed rope_max_seq_len={config.rope_max_seq_len} positions on an axis")
        return grid

    def _check_conditions(self, batch: int, t, context: jax.Array | None, image_context: jax.Array | None) -> None:
        config = self.config
        if jnp.ndim(t) > 1:
            raise ValueError(f"t must be a scalar or (B,) timesteps (no per-token timesteps), got shape {jnp.shape(t)}")
        got = None if context is None else context.shape
        if not self.with_text and context is not None:
            raise ValueError("context was given but the model was built without text (with_text=False)")
        if self.with_text and (got is None or len(got) != 3 or got[0] != batch or got[-1] != config.text_dim):
            raise ValueError(f"context must be text embeddings (B={batch}, T, {config.text_dim}), got {got}")
        if config.has_image_branch != (image_context is not None):
            need = "needs image_context (image-to-video model)" if config.has_image_branch else "takes no image_context"
            raise ValueError(f"the model {need}")
        if image_context is None:
            return
        shape = image_context.shape
        if config.pos_embed_seq_len is None and (len(shape) != 3 or shape[0] != batch or shape[-1] != config.image_dim):
            raise ValueError(f"image_context must be (B={batch}, S, {config.image_dim}), got {shape}")
        tokens = config.pos_embed_seq_len
        if tokens is not None and (len(shape) != 3 or image_context.size != batch * tokens * config.image_dim):
            raise ValueError(
                f"image_context must hold {tokens} tokens of width {config.image_dim} per clip (pos_embed_seq_len): "
                f"(B={batch}, {tokens}, {config.image_dim}) or diffusers' (2B, {tokens // 2}, {config.image_dim}), "
                f"got {shape}"
            )

    def _text_tokens(self, context: jax.Array | None, batch: int) -> jax.Array:
        """Projected text (B, T, D); a model without text reads one zero token."""
        if context is None:
            context = jnp.zeros((batch, 1, self.config.text_dim), self.dtype)
        return self.condition_embedder.text_embedder(context.astype(self.dtype))

    def _label_embedding(self, labels: jax.Array | None, batch: int) -> jax.Array | None:
        if self.class_embedding is None:
            if labels is not None:
                raise ValueError("labels were given but the model has no class embedding (num_classes=0)")
            return None
        return self.class_embedding(labels, batch)

    def _image_tokens(self, image_context: jax.Array | None, batch: int) -> jax.Array | None:
        """Projected image tokens (B, S, D); a first-last-frame model's (2B, S, E) pairs become (B, 2S, E)."""
        if image_context is None:
            return None
        return self.condition_embedder.image_embedder(image_context.reshape(batch, -1, image_context.shape[-1]))

    def _run_blocks(self, x: jax.Array, *inputs) -> jax.Array:
        """The blocks as pure functions of their (sliced) state, so the model runs inside any trace: a sampler's
        loop calls it with Variables made outside that loop, which NNX's own transforms refuse."""
        graphdef, state = nnx.split(self.blocks)

        def step(layer_state, x):
            return nnx.merge(graphdef, layer_state)(x, *inputs)

        if self.remat != "none":
            step = jax.checkpoint(step, policy=checkpoint_policy(self.remat))
        if self.scan_layers:
            return jax.lax.scan(lambda x, layer_state: (step(layer_state, x), None), x, state)[0]
        for layer in range(self.config.num_layers):
            x = step(jax.tree.map(operator.itemgetter(layer), state), x)
        return x

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        context: jax.Array | None = None,
        image_context: jax.Array | None = None,
        labels: jax.Array | None = None,
        fps: jax.Array | None = None,
        condition: jax.Array | None = None,
        augmentation: jax.Array | None = None,
    ) -> jax.Array:
        """x: (B, F, H, W, in_channels), F/H/W multiples of patch_size; t: (B,) or scalar timestep (Wan's flow
        matching: sigma * 1000); context: (B, T, text_dim) text embeddings (UMT5), None without text;
        image_context: (B, S, image_dim) CLIP image tokens, for image-to-video models only (first-last-frame:
        both images' tokens, S = pos_embed_seq_len, or diffusers' (2B, S/2, image_dim)); labels: (B,) int class
        (None: the null label), with a class embedding only. `fps`, `condition` and `augmentation` complete the
        trainer's keyword call shared with VideoUNet and must stay None: the DiT has none of those inputs.
        Returns (B, F, H, W, out_channels) float32."""
        given = {"fps": fps, "condition": condition, "augmentation": augmentation}
        unsupported = [name for name, value in given.items() if value is not None]
        if unsupported:
            raise ValueError(f"the DiT takes no {', '.join(unsupported)} (VideoUNet inputs); pass None")
        grid = self._grid(x)
        self._check_conditions(x.shape[0], t, context, image_context)
        config = self.config
        b, f, h, w, _ = x.shape
        pt, ph, pw = config.patch_size
        check_split(config.num_attention_heads, math.prod(grid))
        tokens = constrain_tokens(self.patch_embedding(x))
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))
        temb, modulations = self.condition_embedder.time(t, self._label_embedding(labels, b))
        text = self._text_tokens(context, b)
        image = self._image_tokens(image_context, b)
        rope = rope_tables(grid, config.attention_head_dim)
        tokens = self._run_blocks(tokens, text, image, modulations, rope)

        shift, scale = jnp.split(self.scale_shift_table[...].astype(jnp.float32) + temb[:, None], 2, axis=1)
        out = self.proj_out((plain_layer_norm(tokens, config.eps) * (1 + scale) + shift).astype(self.dtype))
        out = out.reshape(b, *grid, pt, ph, pw, -1).transpose(0, 1, 4, 2, 5, 3, 6, 7)
        return out.reshape(b, f, h, w, -1).astype(jnp.float32)


def _class_embedding(num_classes: int, dim: int, precision: Precision, keys: ParamKeys) -> LabelEmbedding:
    """The class table, float32 like the time embedding it joins, zeroed: it changes nothing until it trains."""
    table = LabelEmbedding(num_classes, dim, precision=Precision(jnp.float32, precision.param_dtype), rngs=keys)
    table.embedding.set_value(jnp.zeros_like(table.embedding.get_value()))
    return table
