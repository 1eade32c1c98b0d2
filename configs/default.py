"""Every option of pyoco_jax, documented once. Other configs start from this one.

Run (after `pip install -e .`):
    pyoco-train --config configs/default.py --workdir runs/default

Config files return `get_config()`; any key can be overridden on the command
line, e.g. `--config.noise.prior=mixed --config.noise.alpha=1.0`. A config is
validated against this file when loaded (`pyoco_jax.config.validate`): unknown
keys, wrong types and impossible combinations fail before anything compiles.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # Root of every random draw: params init, data order, noise, dropout.

    # ---- Data: where clips come from and what shape they have. ----
    c.data = ml_collections.ConfigDict()
    # synthetic: moving shapes, embedded, no download | video_folder: videos + metadata file in data.path |
    # tfds: a prepared TFDS dataset of encoded videos (data.tfds_*) | ucf101: official UCF-101 split via TFDS.
    c.data.source = "synthetic"
    c.data.path = ""  # video_folder: the folder; ucf101: manual dir with UCF-101/ + split files (built on first use).
    c.data.num_frames = 8  # F: frames per clip.
    c.data.resolution = 32  # H = W of a frame in pixels (or latent side for latent sources).
    # Aspect-ratio and duration buckets (pyoco_jax/data/buckets.py): ((height, width, frames), ...) in the units of
    # data.resolution, for video_folder (and a latent cache prepared with them). Each video goes to the bucket
    # nearest its aspect ratio among those whose frames it fills; each global batch is one bucket's, buckets drawn
    # in proportion to their clips. (): one shape. data.num_frames/resolution stay the shape samples are drawn at.
    c.data.buckets = ()
    c.data.channels = 3  # C of the model input (3 for RGB pixels, 4 for SD latents).
    c.data.num_examples = 4096  # Size of the synthetic dataset (indices 0..N-1).
    c.data.num_classes = 0  # Class labels in the data (0: unconditional).
    c.data.fps = 8.0  # Nominal frame rate of a clip (used for fps conditioning).
    c.data.max_objects = 2  # Synthetic data: most shapes per clip (1..max_objects, all of the class's type).
    c.data.shape_size = (0.10, 0.20)  # Synthetic data: range of shape radii, as fractions of the shorter side.
    c.data.background = "graded"  # Synthetic data: graded (dark, smooth) | texture (coloured waves); both static.
    c.data.camera_speed = 0.0  # Synthetic data: pan in pixels per frame, random direction per clip (0: fixed camera).
    c.data.occluder = False  # Synthetic data: an opaque bar crossing in front, too narrow to hide any shape.
    c.data.global_batch_size = 8  # Clips per optimizer step, across all hosts.
    c.data.worker_count = 0  # grain worker processes per host (0: in-process).
    c.data.prefetch = 2  # Batches prefetched onto the devices ahead of the step.
    c.data.shuffle = True
    # Real video (video_folder, tfds, ucf101): decoded with PyAV in the loader's workers, bad files skipped.
    c.data.metadata = ""  # video_folder: CSV/JSONL (path, caption, label, start, end, split), relative to data.path;
    # "": data.path/metadata.csv or metadata.jsonl.
    c.data.split = "train"  # TFDS split, or the rows of the metadata's split column (no column: all rows).
    c.data.frame_stride = 1  # Take every n-th native frame (clip fps = native fps / n) ...
    c.data.target_fps = 0.0  # ... or sample frames at this rate (> 0; capped at the native rate); clip fps is a field.
    c.data.temporal_sampling = "random"  # random | center: where in the video the clip starts.
    c.data.crop = "center"  # random | center: spatial crop after resizing the short side to data.resolution.
    c.data.flip = False  # Random horizontal flip.
    c.data.max_failure_fraction = 0.1  # Stop once more than this fraction of a host's video reads failed.
    c.data.tfds_name = ""  # tfds: dataset name, e.g. pyoco_video_folder or pyoco_ucf101/split1.
    c.data.tfds_data_dir = ""  # tfds / ucf101: TFDS data dir ("": TFDS's default, ~/tensorflow_datasets).
    c.data.sample_posterior = True  # latents: train on posterior samples (mean + std * eps), else the mean.
    c.data.ucf101_split = 1  # ucf101: official train/test split 1, 2 or 3.

    # ---- Noise prior (PYoCo): how noise is correlated across frames. ----
    c.noise = ml_collections.ConfigDict()
    c.noise.prior = "progressive"  # iid | mixed | progressive
    c.noise.alpha = 2.0  # Correlation strength a >= 0 (0 is iid). Mixed: 1.0 is common.
    c.noise.in_sampling = True  # Also use the prior for sampling's initial and injected noise.
    # Alpha of sampling's noise (< 0: noise.alpha). Training with a weaker correlation than sampling makes
    # the temporal layers learn to share content across frames; the stronger one then starts frames alike.
    c.noise.sample_alpha = -1.0

    # ---- Diffusion formulation. ----
    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.formulation = "edm"  # edm (Karras et al.; PYoCo) | ddpm (latent diffusion; MagicVideo) | flow (SD3/Wan)
    c.diffusion.edm = ml_collections.ConfigDict()
    c.diffusion.edm.sigma_data = 0.5
    c.diffusion.edm.p_mean = -1.2  # log-normal training sigma: ln(sigma) ~ N(p_mean, p_std^2)
    c.diffusion.edm.p_std = 1.2
    c.diffusion.edm.sigma_min = 0.002  # Sampling grid ends; with a bridged network, training sigmas too.
    c.diffusion.edm.sigma_max = 80.0
    c.diffusion.edm.rho = 7.0  # Sampling step spacing exponent.
    # How the train.init_from network was trained (PYoCo: fine-tune a pretrained DDPM model in EDM):
    # "": no pretrained network (refused with init_from) | edm: with EDM's preconditioning |
    # epsilon | v | x0: a DDPM model predicting that (diffusers scheduler_config.json prediction_type
    # epsilon | v_prediction | sample); it is bridged to EDM through diffusion.ddpm's schedule (set it to the
    # model's), and sigma_min/sigma_max must lie within that schedule's sigmas (SD: [0.0292, 14.6]).
    c.diffusion.edm.pretrained_prediction = ""
    c.diffusion.ddpm = ml_collections.ConfigDict()
    c.diffusion.ddpm.schedule = "scaled_linear"  # linear | scaled_linear | cosine
    c.diffusion.ddpm.num_train_timesteps = 1000
    c.diffusion.ddpm.beta_start = 0.00085
    c.diffusion.ddpm.beta_end = 0.012
    c.diffusion.ddpm.prediction = "epsilon"  # epsilon | v | x0
    c.diffusion.ddpm.zero_terminal_snr = False  # Rescale betas so the last step has SNR 0.
    c.diffusion.ddpm.min_snr_gamma = 0.0  # Min-SNR loss weighting (0: off; 5 is common).
    # Flow matching (rectified flow): x_t = (1 - t) x0 + t noise, the network predicts the velocity noise - x0.
    c.diffusion.flow = ml_collections.ConfigDict()
    c.diffusion.flow.time_sampling = "logit_normal"  # Training t: uniform | logit_normal (SD3: sigmoid of a normal)
    c.diffusion.flow.logit_mean = 0.0  # logit_normal: t = sigmoid(logit_mean + logit_std * N(0, 1))
    c.diffusion.flow.logit_std = 1.0
    c.diffusion.flow.shift = 1.0  # Training t -> shift t / (1 + (shift - 1) t): > 1 trains noisier (SD3: 3).
    c.diffusion.flow.loss_weighting = "none"  # none | cosmap (SD3's CosMap density 2 / (pi (1 - 2t + 2t^2)))
    c.diffusion.flow.timestep_scale = 1000.0  # The network's time input is t * timestep_scale (diffusers, Wan: 1000).
    # Sampling times: euler: diffusers' FlowMatchEulerDiscreteScheduler (SD3) | unipc: its UniPCMultistepScheduler
    # with use_flow_sigmas (Wan 2.1). Both start at t = 1 (run as 1 - 1e-6) and end at 0.
    c.diffusion.flow.grid = "euler"
    c.diffusion.flow.num_train_timesteps = 1000  # The grid's smallest time before shifting is 1 / this (diffusers').
    c.diffusion.flow.sample_shift = -1.0  # Shift of the sampling times (Wan 2.1: 3 at 480p, 5 at 720p; -1: shift).
    # The network's time input while sampling: none: the float t * timestep_scale | floor: its whole part, as
    # diffusers' UniPCMultistepScheduler and Wan's sampler give it (their update keeps the exact times).
    c.diffusion.flow.timestep_rounding = "none"

    # ---- Model: the denoising network. The keys from in_channels to attention_backend serve both backbones
    # except those marked (U-Net) and the temporal section; model.dit holds the DiT's own. Each backbone refuses
    # the other's keys at values other than these defaults, so none is silently ignored. ----
    c.model = ml_collections.ConfigDict()
    # unet: the video U-Net (2D part mirrors diffusers' UNet2DConditionModel) | dit: a Wan-2.1-class video
    # transformer (model.dit; no fps conditioning, no condition input; train.init_from a Wan folder).
    c.model.backbone = "unet"
    c.model.in_channels = 3
    c.model.out_channels = 3
    c.model.block_out_channels = (32, 64)  # (U-Net) Channels per resolution level.
    c.model.layers_per_block = 1  # (U-Net) ResNet blocks per down level (up levels get one more).
    c.model.attention_levels = (False, True)  # (U-Net) Spatial transformer at each level.
    c.model.mid_block_attention = True  # (U-Net)
    c.model.num_attention_heads = 4  # (U-Net) Heads of spatial attention (int, or one per level).
    c.model.transformer_layers_per_block = 1  # (U-Net)
    # Width of text `context` (0: no cross-attention). The DiT's text_dim; a DiT without text cross-attends to
    # one zero token of width 1 instead (diffusers' Wan always cross-attends).
    c.model.cross_attention_dim = 0
    c.model.use_linear_projection = False  # (U-Net) SD 2.x linear vs SD 1.x 1x1-conv proj_in/out (conversion only).
    c.model.norm_num_groups = 8  # (U-Net)
    c.model.norm_eps = 1e-5  # (U-Net)
    # Class-label embedding added to the time embedding (0: none); num_classes + 1 rows, the last the null label
    # of classifier-free guidance. The DiT's is zero at init (a pyoco_jax extension: diffusers' Wan has none).
    c.model.num_classes = 0
    c.model.fps_conditioning = False  # (U-Net) MagicVideo frame-rate embedding added like the timestep's.
    # (U-Net) Conditioning input (cascade stages, image-to-video): its channels, through a zero-initialised conv
    # added to conv_in (0: none), and an embedding of the noise level it was augmented with (zero at init).
    c.model.condition_channels = 0
    c.model.condition_augmentation = False
    c.model.flip_sin_to_cos = True  # (U-Net)
    c.model.freq_shift = 0  # (U-Net)
    c.model.dtype = "float32"  # Compute dtype (bfloat16 on accelerators).
    c.model.param_dtype = "float32"
    c.model.remat = "none"  # Per-block gradient checkpointing: none | full | dots | offload
    # auto: per call, splash on TPU, cuDNN flash on GPU, xla for lengths < 128, a bias, or CPU (the rules:
    # pyoco_jax/models/attention_choice.py) | xla | cudnn | splash (falls back to xla, with a log line).
    c.model.attention_backend = "auto"
    # The DiT (model.backbone=dit, pyoco_jax/models/dit): keys of diffusers' WanTransformer3DModel config.json
    # (WanConfig) beyond the shared ones above: in_channels, out_channels, cross_attention_dim (its text_dim),
    # num_classes, dtype, param_dtype, remat, attention_backend. Not configurable: qk_norm (always
    # rms_norm_across_heads, as every Wan checkpoint) and the image-to-video branch (image_dim,
    # added_kv_proj_dim, pos_embed_seq_len), whose CLIP image tokens no data source gives. Small defaults;
    # Wan 2.1 sizes: configs/wan21_1_3b.py, configs/wan21_14b.py.
    c.model.dit = ml_collections.ConfigDict()
    c.model.dit.patch_size = (1, 2, 2)  # (frames, height, width) per token; data.num_frames and resolution divide.
    c.model.dit.num_attention_heads = 4
    c.model.dit.attention_head_dim = 32  # Even (3D RoPE rotates pairs); the width is heads x head_dim.
    c.model.dit.ffn_dim = 512  # Hidden width of each block's feed-forward.
    c.model.dit.num_layers = 4  # Transformer blocks.
    c.model.dit.freq_dim = 256  # Sinusoid width of the timestep embedding.
    c.model.dit.cross_attn_norm = True  # Affine LayerNorm before cross-attention.
    c.model.dit.eps = 1e-6  # Epsilon of every norm.
    c.model.dit.rope_max_seq_len = 1024  # Most patches along any axis (RoPE table length).
    c.model.dit.scan_layers = True  # Run the blocks as one scan (compile time flat in depth), else unrolled.
    # LoRA (models/lora.py), either backbone: adapters on the linear layers whose path matches `targets`; only
    # they (and what optim.trainable names) train, the base stays frozen. Exports fold them into the weights.
    c.model.lora = ml_collections.ConfigDict()
    c.model.lora.rank = 0  # 0: no adapters (full fine-tuning, or what optim.trainable names).
    c.model.lora.alpha = 0.0  # The update is scaled by alpha / rank (0: alpha = rank, scale 1).
    c.model.lora.dropout = 0.0  # Dropout on the adapters' input, in training only.
    # Regex over layer paths ('blocks/attn1/to_q', 'down_blocks/1/attentions/0/transformer_blocks/0/attn2/to_v'):
    # the self- and cross-attention projections, as diffusers' LoRA trainers default to.
    c.model.lora.targets = r"attn[12]/(to_q|to_k|to_v|to_out)$"
    c.model.temporal = ml_collections.ConfigDict()  # (U-Net) Temporal layers.
    c.model.temporal.levels = (0, 1)  # Resolution levels that get temporal layers.
    c.model.temporal.mid = True  # Temporal layers in the mid block too.
    c.model.temporal.attention = True  # Self-attention across frames at each pixel.
    c.model.temporal.directed = True  # Causal (MagicVideo): frame p sees frames q <= p.
    c.model.temporal.position_encoding = "sinusoidal"  # none | sinusoidal | relative
    c.model.temporal.num_heads = 4
    c.model.temporal.conv = False  # Kernel-3 1D conv across frames after each ResNet (causal if directed).
    c.model.temporal.adaptor = True  # MagicVideo frame-wise adaptor after every 2D conv.
    c.model.temporal.arrangement = "sequential"  # sequential | parallel (z = S-Attn(z) + T-Attn(z))

    # ---- Optimization. ----
    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 2e-4
    c.optim.schedule = "cosine"  # cosine | constant (both after linear warmup)
    c.optim.warmup_steps = 50
    c.optim.end_learning_rate_factor = 0.1  # Cosine decays to learning_rate * this.
    c.optim.weight_decay = 0.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.grad_clip_norm = 1.0  # Global-norm clipping (0: off).
    c.optim.accum_steps = 1  # Micro-batches per optimizer step (gradient accumulation).
    c.optim.ema_decay = 0.999  # EMA of params, updated inside the step (0: off).
    c.optim.trainable = ""  # Regex over param paths; only matches train ("": everything).
    c.optim.lr_scale = 1.0  # Learning-rate factor for the params that lr_scale_pattern matches.
    c.optim.lr_scale_pattern = "temporal"  # Regex over param paths (default: the new temporal layers).
    c.optim.max_nonfinite_steps = 10  # Stop after this many non-finite losses in a row.
    c.optim.label_drop_rate = 0.1  # Drop class/text conditioning for classifier-free guidance.

    # ---- Training loop. ----
    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000
    c.train.log_every = 20  # Log line + TensorBoard scalars.
    c.train.checkpoint_every = 200  # Async Orbax checkpoint.
    c.train.keep_checkpoints = 3  # Keep the last K checkpoints ...
    c.train.keep_every = 0  # ... plus every M-th step forever (0: none).
    c.train.sample_every = 500  # Sample videos with the EMA params (0: only at the end).
    # In-loop evaluation of the EMA params as `pyoco-eval` does it (to eval/*.json, metrics.jsonl, TensorBoard).
    c.train.eval_every = 0  # Every N steps and at the end (0: never).
    c.train.eval_metric = "fvd"  # fvd | clipsim | is | shape (pyoco_jax/evaluate/run_eval.py)
    c.train.eval_protocol = "fvd256_8f"  # FVD protocol fvd<clips>_<frames>f (pyoco_jax/evaluate/fvd_protocol.py).
    c.train.eval_num = 64  # Clips sampled for clipsim, is and shape.
    c.train.eval_clip = ""  # clipsim: transformers CLIPModel folder; prompts are sample.prompts, cycled.
    # diffusers UNet2DConditionModel folder, or a pyoco_jax run's workdir (its latest EMA weights; e.g. an image
    # run without temporal layers), to inflate ("": from scratch).
    c.train.init_from = ""
    c.train.convert_cache_dir = ""  # Orbax cache of converted init_from weights, so they convert once.

    # ---- Sampling. ----
    c.sample = ml_collections.ConfigDict()
    c.sample.sampler = "heun"  # heun | euler (EDM) | ddim | dpmpp_2m | unipc
    c.sample.unipc_order = 2  # unipc: predictor order (diffusers' solver_order; Wan 2.1 samples with 2).
    c.sample.num_steps = 32
    c.sample.num_samples = 4
    c.sample.guidance_scale = 1.0  # Classifier-free guidance (1: off).
    c.sample.eta = 0.0  # DDIM stochasticity.
    c.sample.s_churn = 0.0  # EDM stochastic sampling: churn, range and noise scale.
    c.sample.s_tmin = 0.0
    c.sample.s_tmax = 1e9
    c.sample.s_noise = 1.0
    c.sample.fps = 8  # Frame rate of written videos.
    c.sample.prompts = ("",)  # Text-to-video: prompts of the periodic samples (cycled; "" is unconditional).

    # ---- Conditioning on known frames and low-resolution clips (pyoco_jax/conditioning.py): cascade stages
    # (temporal interpolation, super-resolution), image-to-video, extension. model.condition_channels must match. ----
    c.condition = ml_collections.ConfigDict()
    c.condition.frames = ""  # Given frames: "" (none) | interpolation | first | last | random (one of those per clip).
    c.condition.interpolation_factor = 4  # interpolation: every k-th frame given (clips of (keyframes - 1) * k + 1).
    c.condition.given_frames = 1  # first / last: how many frames are given (first with 1: image-to-video).
    c.condition.low_res_factor = 0  # Super-resolution: the clip downsampled by this factor is given (0: none).
    c.condition.augment_sigma_max = 0.0  # Training noises the condition with sigma ~ U(0, this) (needs
    # model.condition_augmentation, which embeds the level).
    c.condition.sample_augment_sigma = 0.0  # Sampling: the noise level the condition is given with.

    # ---- VAE (latent runs) and VideoVAE fine-tuning (pyoco_jax/train/video_vae.py, configs/video_vae.py). ----
    c.vae = ml_collections.ConfigDict()
    # diffusers AutoencoderKL (SD) or AutoencoderKLWan (Wan 2.1) folder, a pipeline folder holding one in vae/, or
    # a pyoco-convert output; which of the two its config.json names decides (pyoco_jax/convert/families.py).
    c.vae.path = ""
    c.vae.dtype = "float32"  # Compute dtype of the VAE (params stay float32; norms run in float32).
    c.vae.video_decoder = ""  # VideoVAE folder (<workdir>/video_vae of a fine-tune) to decode samples ("": per frame).
    c.vae.allow_pickle = False  # Accept a pickle .bin checkpoint (it can run code: only for trusted files).
    # VideoVAE: temporal layers after the decoder's mid block and every up-block ResNet, zero-init (identity).
    c.vae.temporal_conv = True  # Kernel-3 convolution over frames.
    c.vae.temporal_attention = True  # Self-attention over the frames at every pixel.
    c.vae.temporal_num_heads = 4  # Heads of that attention; must divide every decoder width.
    c.vae.temporal_position_encoding = "sinusoidal"  # none | sinusoidal | relative (frame positions)
    # Fine-tuning on video; the encoder is frozen.
    c.vae.trainable = "temporal"  # temporal: only the temporal layers | decoder: the whole VideoVAE.
    c.vae.loss = "l1"  # l1 | l2: norm of the reconstruction error and of the temporal term.
    c.vae.temporal_weight = 1.0  # Weight of |(x^_{f+1} - x^_f) - (x_{f+1} - x_f)| next to the reconstruction.
    c.vae.sample_posterior = True  # Decode samples of the encoder's posterior (else its mean).
    c.vae.learning_rate = 1e-4  # AdamW, after linear warmup; constant.
    c.vae.warmup_steps = 100
    c.vae.weight_decay = 0.0  # On kernels only.
    c.vae.num_steps = 2000
    c.vae.log_every = 50  # Log line + TensorBoard scalars + metrics.jsonl.

    # ---- Text conditioning (latent text-to-video): the text encoder behind model.cross_attention_dim. ----
    c.text = ml_collections.ConfigDict()
    # CLIPTextModel (SD) or UMT5EncoderModel (Wan 2.1) folder, a pipeline folder holding one in text_encoder/ (and
    # its tokenizer/), or a pyoco-convert output; its config.json's model_type decides which ("": no text).
    c.text.path = ""
    c.text.skip_last_layers = 0  # CLIP skip: take the output this many layers before the last (0: SD 1.x; UMT5: 0).

    # ---- Device mesh (pyoco_jax/parallel.py). ----
    # Axis sizes within a slice (ICI); one may be -1 (all remaining devices). Total axis size = ICI x DCN.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # Data parallelism: batch rows.
    c.mesh.fsdp = 1  # Batch rows too, and params / optimizer state / EMA sharded (ZeRO-3 style).
    c.mesh.tensor = 1  # Tensor parallelism: attention heads, MLP and conv channels.
    c.mesh.sequence = 1  # Frames of the batch (and per-frame params); must divide data.num_frames.
    # Sizes across slices (multi-slice TPU) or processes (DCN); their product is the slice/process count.
    c.mesh.dcn_data = 1
    c.mesh.dcn_fsdp = 1
    c.mesh.dcn_tensor = 1
    c.mesh.dcn_sequence = 1
    # Logical axis (pyoco_jax/models/axes.py) -> mesh axis, tuple of axes, or None (replicate). A name may
    # repeat: a param's dims are placed largest first, each on the first rule whose axes are still free in
    # that param and divide the dim (else the next rule, else replicated). Names without a rule replicate.
    c.mesh.rules = (
        ("embed", "fsdp"),
        ("heads", "tensor"),
        ("mlp", "tensor"),
        ("mlp", "fsdp"),
        ("context", "fsdp"),
        ("temb", "fsdp"),
        ("conv_in", "fsdp"),
        ("conv_out", "tensor"),
        ("conv_out", "fsdp"),
        ("frames", "sequence"),
        ("classes", None),
        ("norm", None),
        ("conv_window", None),
        ("relpos", None),
    )

    # ---- pyoco-prepare (pyoco_jax/prepare.py): which clips of each video the latent cache stores. ----
    c.prepare = ml_collections.ConfigDict()
    c.prepare.frame_strides = ()  # Native-frame strides, one clip rate each (fps = native / stride); (): data's.
    c.prepare.clips_per_stride = 1  # Clips per video at each stride, their random starts spread over the video.
    return c
