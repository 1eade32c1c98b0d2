#!/usr/bin/env bash
# The GPU measurements in one go, for a machine lent for minutes: the attention kernels' equality tests on
# the GPU, our step against the PyTorch peer at SD-1.5 size (16 frames of 32x32x4 latents, bf16), and our
# MagicVideo fine-tuning step (configs/sd15_latent.py as it trains) at a larger batch. Each part has its own
# time limit, so one that fails or runs long still leaves the others' logs.
#
#   bash benchmarks/gpu.sh [LOG_DIR [PART ...]]   (LOG_DIR default runs/gpu, each part's output in
#                                                 LOG_DIR/<part>.log; PARTS: attention_tests peer train_step)
# The tests need JAX_PLATFORMS=cuda (tests/conftest.py defaults it to cpu). XLA_FLAGS=--xla_gpu_autotune_level=0
# skips XLA's autotuning (about 25 s per attention shape in the tests). On a machine with jax, flax, optax,
# orbax, torch and einops but nothing else of ours, add diffusers, ml_collections, grain, array_record,
# portpicker and importlib_metadata to PYTHONPATH, and keep the machine's own flax (0.12.8 needs jax 0.10).
set -u
logs=${1:-runs/gpu}
parts=${*:2}
parts=${parts:-attention_tests peer train_step}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
sd15_text="--config configs/sd15_latent.py --context_tokens 77"

part() {  # part NAME SECONDS COMMAND...: runs COMMAND under a time limit, output to the screen and NAME.log.
  local name=$1 limit=$2
  shift 2
  [[ " $parts " == *" $name "* ]] || return 0
  echo "=== $name (limit $limit s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v -E "^(I|W)[0-9]{4} " | tee "$logs/$name.log"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$python" -c "import jax, flax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'torch', torch.__version__)"
} 2>&1 | tee "$logs/environment.log"
part attention_tests 90 env JAX_PLATFORMS=cuda "$python" -m pytest -q -p no:cacheprovider tests/models/test_attention*.py
part peer 220 "$python" -m benchmarks.peer $sd15_text --context_dim 768 --config.data.global_batch_size=4 \
  --steps 5 --warmup 2
part train_step 170 "$python" -m benchmarks.train_step $sd15_text --random_batches \
  --config.data.global_batch_size=16 --steps 5 --warmup 2
