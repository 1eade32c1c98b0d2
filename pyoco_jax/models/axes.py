"""The logical axis names that model parameters carry, documented in one place.

Model code names what a parameter axis *means*; `pyoco_jax.parallel` maps these
names to mesh axes (`data`, `fsdp`, `tensor`, `sequence`) with rules from the
config, so no mesh axis name ever appears in a model.

Vocabulary:
    embed        width of a linear layer's input on the residual stream (channels)
    heads        attention width (heads * head_dim): q/k/v outputs, output-projection input
    context      width of the cross-attention `context` (text embedding), to_k/to_v input
    mlp          hidden width of a feed-forward (GEGLU) layer
    temb         width of the time embedding (time MLP, class/fps embeddings, ResNet time projections)
    conv_in      input channels of a convolution (incl. 1x1 projections)
    conv_out     output channels of a convolution (incl. 1x1 projections)
    conv_window  spatial or temporal window of a convolution kernel (kh, kw or kt); never sharded
    norm         scale/bias of a GroupNorm or LayerNorm
    frames       per-frame parameters (frame-wise adaptor rows)
    classes      rows of the class-label embedding table (num_classes + 1, last = null label)
    relpos       relative frame-distance table of temporal attention (2 * num_frames - 1)

Parameters are created with eager sharding off, so a model builds without a mesh; shard
by jitting the constructor with out_shardings derived from `nnx.get_partition_spec`.
"""

from collections.abc import Callable

from flax import nnx

EMBED = "embed"
HEADS = "heads"
CONTEXT = "context"
MLP = "mlp"
TEMB = "temb"
CONV_IN = "conv_in"
CONV_OUT = "conv_out"
CONV_WINDOW = "conv_window"
NORM = "norm"
FRAMES = "frames"
CLASSES = "classes"
RELPOS = "relpos"

VOCABULARY = (EMBED, HEADS, CONTEXT, MLP, TEMB, CONV_IN, CONV_OUT, CONV_WINDOW, NORM, FRAMES, CLASSES, RELPOS)


def partitioned(init: Callable, *names: str | None) -> Callable:
    """Wraps an initializer so its parameter carries the logical axis `names`."""
    unknown = [n for n in names if n is not None and n not in VOCABULARY]
    if unknown:
        raise ValueError(f"unknown logical axis names {unknown}; the vocabulary is {VOCABULARY}")
    return nnx.with_partitioning(init, tuple(names), eager_sharding=False)
