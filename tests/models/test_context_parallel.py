"""Ulysses context parallelism of the DiT on 8 fake CPU devices: the forward and the gradients of a tiny Wan
(scanned, rematerialised blocks, text and image cross-attention) with its tokens split over `sequence` equal the
unsharded model; the compiled program exchanges tokens for heads (all-to-all) and never gathers the token axis;
heads or tokens that do not split are refused before anything compiles."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pyoco_jax import parallel
from pyoco_jax.config import load_config, validate
from pyoco_jax.errors import ConfigError
from pyoco_jax.models import context_parallel
from pyoco_jax.models.attention import attention
from pyoco_jax.models.dit import WanConfig, WanTransformer
from tests.train.helpers import REPO

# 8 heads of width 6; 2 frames of 8 x 8 patches = 128 tokens, a size no parameter has, so a gathered token
# axis shows in the compiled program.
CONFIG = WanConfig(
    num_attention_heads=8,
    attention_head_dim=6,
    in_channels=4,
    out_channels=4,
    text_dim=16,
    freq_dim=16,
    ffn_dim=32,
    num_layers=2,
    image_dim=12,
    added_kv_proj_dim=48,
)
VIDEO = (2, 2, 16, 16, 4)  # B, F, H, W, C: (1, 2, 2) patches.
TOKENS = 2 * 8 * 8
MESHES = {  # (data, fsdp, tensor, sequence)
    "sequence 8": (1, 1, 1, 8),
    "fsdp 2 x sequence 4": (1, 2, 1, 4),
    "fsdp 2 x tensor 2 x sequence 2": (1, 2, 2, 2),
}
# float32 throughout; the sharded program sums in another order. Measured: outputs within 9.6e-7 of a max of 3.1,
# gradients within 3.1e-6 of each leaf's largest value (1.1 without the all-to-all: attention within a slice).
OUTPUT_ATOL = 1e-5
GRAD_RTOL = 2e-5


def _mesh(shape: tuple[int, ...]) -> Mesh:
    return Mesh(np.array(jax.devices()[: int(np.prod(shape))]).reshape(shape), parallel.MESH_AXES)


@pytest.fixture(scope="module")
def problem():
    """(graphdef, params moved off their init, inputs, target): the zero-initialised head would hide the blocks."""
    graphdef, params = nnx.split(WanTransformer(CONFIG, remat="full", rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: a + 0.1 * rng.standard_normal(a.shape).astype(a.dtype), params)
    inputs = dict(
        x=rng.standard_normal(VIDEO).astype(np.float32),
        t=np.array([100.0, 700.0], np.float32),
        context=rng.standard_normal((2, 5, CONFIG.text_dim)).astype(np.float32),
        image_context=rng.standard_normal((2, 3, CONFIG.image_dim)).astype(np.float32),
    )
    target = rng.standard_normal(VIDEO).astype(np.float32)
    return graphdef, params, inputs, target


def _loss_and_grads(graphdef, mesh: Mesh | None):
    """(output, grads) of a squared error, the model traced on `mesh` (None: one device)."""

    def loss(params, inputs, target):
        with parallel.model_context(mesh):
            out = nnx.merge(graphdef, params)(**inputs)
        return jnp.mean(jnp.square(out - target)), out

    grads = lambda params, inputs, target: jax.grad(loss, has_aux=True)(params, inputs, target)[::-1]
    return jax.jit(grads)


@pytest.fixture(scope="module")
def reference(problem):
    graphdef, params, inputs, target = problem
    return jax.device_get(_loss_and_grads(graphdef, None)(params, inputs, target))


@pytest.mark.parametrize("mesh_name", list(MESHES))
def test_token_split_model_equals_one_device(problem, reference, mesh_name):
    graphdef, params, inputs, target = problem
    step = _loss_and_grads(graphdef, _mesh(MESHES[mesh_name])).lower(params, inputs, target).compile()
    out, grads = jax.device_get(step(params, inputs, target))
    want_out, want_grads = reference
    np.testing.assert_allclose(out, want_out, rtol=0, atol=OUTPUT_ATOL)
    for (path, got), want in zip(jax.tree.leaves_with_path(grads), jax.tree.leaves(want_grads), strict=True):
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=GRAD_RTOL * scale, err_msg=jax.tree_util.keystr(path))

    # Forward and backward trade tokens for heads, and no collective ever assembles a clip's token axis.
    hlo = step.as_text()
    assert len(re.findall(r" all-to-all\(", hlo)) >= 8  # q, k, v and output, forward and backward.
    gathered = re.findall(r"= \w+\[([\d,]*)\]\S* (?:all-gather|all-reduce)\(", hlo)
    assert gathered and not [shape for shape in gathered if str(TOKENS) in shape.split(",")]
    # Per-device shapes: the residual stream (width 48) and feed-forward (32) of all tokens exist nowhere.
    assert not re.search(rf"\[\d+,{TOKENS},(?:{CONFIG.inner_dim}|{CONFIG.ffn_dim})\]", hlo)


@pytest.mark.parametrize(("heads_rule", "head_axes"), [("tensor", parallel.TENSOR_AXIS), (None, None)])
def test_self_attention_output_stays_split_over_sequence_with_heads_where_the_rules_put_them(heads_rule, head_axes):
    mesh = _mesh(MESHES["fsdp 2 x tensor 2 x sequence 2"])
    mesh_config = load_config(str(REPO / "configs" / "tiny_dit.py")).mesh
    mesh_config.rules = tuple(("heads", heads_rule) if name == "heads" else (name, t) for name, t in mesh_config.rules)
    q, k, v = np.random.default_rng(1).standard_normal((3, 2, 16, 4, 8)).astype(np.float32)

    def split(q, k, v):
        with parallel.model_context(mesh, mesh_config):
            return context_parallel.self_attention(q, k, v, backend="xla")

    tokens = NamedSharding(mesh, PartitionSpec(parallel.BATCH_AXES, parallel.SEQUENCE_AXIS))
    out = jax.jit(split, in_shardings=(tokens,) * 3)(q, k, v)
    heads = NamedSharding(mesh, PartitionSpec(parallel.BATCH_AXES, parallel.SEQUENCE_AXIS, head_axes))
    assert out.sharding.is_equivalent_to(heads, out.ndim)
    np.testing.assert_allclose(out, attention(q, k, v), rtol=0, atol=1e-6)


def test_heads_the_rules_leave_whole_need_only_divide_by_the_sequence_axis():
    """6 heads over sequence 2 x tensor 2: refused under the default rules (heads on tensor), accepted when the
    rules replicate heads: in the config check and in the layout the traced model checks alike."""
    overrides = ["mesh.data=1", "mesh.sequence=2", "mesh.tensor=2", "model.dit.num_attention_heads=6"]
    with pytest.raises(ConfigError, match=re.escape("over mesh.sequence x mesh.tensor = 4 devices, and 6 heads")):
        load_config(str(REPO / "configs" / "tiny_dit.py"), overrides)
    config = load_config(str(REPO / "configs" / "tiny_dit.py"), overrides[:3])
    config.model.dit.num_attention_heads = 6
    config.mesh.rules = tuple(rule for rule in config.mesh.rules if rule[0] != "heads")
    validate(config)
    layout = parallel.token_layout(_mesh((1, 2, 2, 2)), parallel.attention_heads_axes(config.mesh))
    assert layout.head_axes == ()
    layout.check(heads=6, tokens=TOKENS)
    with pytest.raises(ConfigError, match=re.escape("over mesh.sequence = 2 devices, and 5 heads")):
        layout.check(heads=5, tokens=TOKENS)


@pytest.mark.parametrize(
    ("heads", "sequence", "tensor", "message"),
    [
        (6, 4, 1, "over mesh.sequence x mesh.tensor = 4 devices, and 6 heads"),
        (4, 4, 2, "4 heads do not divide by that"),
        (6, 3, 1, f"{TOKENS} tokens (frames x rows x columns of patches) do not split over mesh.sequence=3"),
    ],
)
def test_unsplittable_model_is_refused_before_compiling(problem, heads, sequence, tensor, message):
    _, _, inputs, _ = problem
    width = heads * CONFIG.attention_head_dim
    config = dataclasses.replace(CONFIG, num_attention_heads=heads, added_kv_proj_dim=width)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: WanTransformer(config, rngs=nnx.Rngs(0))))
    mesh = _mesh((1, 1, tensor, sequence))

    def forward(params, inputs):
        with parallel.model_context(mesh):
            return nnx.merge(graphdef, params)(**inputs)

    with pytest.raises(ConfigError, match=re.escape(message)):
        jax.eval_shape(forward, params, inputs)


def test_config_refuses_heads_that_do_not_split():
    overrides = ["mesh.data=1", "mesh.sequence=8"]  # configs/tiny_dit.py: 4 heads.
    with pytest.raises(ConfigError, match=re.escape("4 heads do not divide by that; change mesh.sequence")):
        load_config(str(REPO / "configs" / "tiny_dit.py"), overrides)


def test_dit_frames_need_not_split_over_sequence():
    """The DiT splits tokens, so 6 frames of 16 patches go over sequence 4; the batch keeps each clip's frames whole
    there (an uneven split would not place), and the model splits the tokens."""
    overrides = ["mesh.data=2", "mesh.sequence=4", "data.num_frames=6"]
    config = load_config(str(REPO / "configs" / "tiny_dit.py"), overrides)
    mesh = parallel.make_mesh(config.mesh)
    example = {"video": np.zeros((6, 16, 16, 3), np.uint8), "label": np.zeros((), np.int32)}
    shardings = parallel.batch_shardings(mesh, example)
    assert shardings["video"].spec == PartitionSpec(parallel.BATCH_AXES)
    assert parallel.video_spec(mesh, 8) == PartitionSpec(parallel.BATCH_AXES, parallel.SEQUENCE_AXIS)
