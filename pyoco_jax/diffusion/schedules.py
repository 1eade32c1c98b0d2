"""Noise-level schedules: DDPM beta schedules and the sampling discretisations.

Everything here is computed once, in float64 NumPy, from the config: the arrays
become constants of the jitted training step or sampling loop, so their
precision does not depend on the compute dtype.
"""

import math

import numpy as np

DDPM_SCHEDULES = ("linear", "scaled_linear", "cosine")


def _cosine_alpha_bar(t: np.ndarray) -> np.ndarray:
    return np.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def ddpm_betas(schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """Per-step betas: linear (DDPM), scaled_linear (Stable Diffusion), cosine (Nichol & Dhariwal, capped)."""
    if schedule == "linear":
        return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    if schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    if schedule == "cosine":
        steps = np.arange(num_train_timesteps + 1, dtype=np.float64) / num_train_timesteps
        alpha_bar = _cosine_alpha_bar(steps)
        return np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.999)
    raise ValueError(f"DDPM schedule {schedule!r} is not one of {DDPM_SCHEDULES}; set diffusion.ddpm.schedule.")


def rescale_zero_terminal_snr(alphas_cumprod: np.ndarray) -> np.ndarray:
    """Shifts and scales sqrt(alphas_cumprod) so the last step has SNR 0 and the first is unchanged.

    Lin et al. 2023 (Algorithm 1): without it the last training step still leaks
    signal, so a model never learns to start from pure noise.
    """
    root = np.sqrt(alphas_cumprod)
    first, last = root[0], root[-1]
    return ((root - last) * (first / (first - last))) ** 2


def ddpm_alphas_cumprod(
    schedule: str,
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    zero_terminal_snr: bool = False,
) -> np.ndarray:
    """alphabar_t = prod_{s<=t} (1 - beta_s) for t = 0..T-1, optionally with zero terminal SNR."""
    alphas_cumprod = np.cumprod(1.0 - ddpm_betas(schedule, num_train_timesteps, beta_start, beta_end))
    return rescale_zero_terminal_snr(alphas_cumprod) if zero_terminal_snr else alphas_cumprod


def trailing_timesteps(num_steps: int, num_train_timesteps: int) -> np.ndarray:
    """Descending integer timesteps that start at the last training step T-1 ("trailing", Lin et al. Table 2).

    Starting at T-1 is what makes a zero-terminal-SNR model start from pure noise;
    it is also diffusers' `timestep_spacing="trailing"`.
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(
            f"{num_steps} sampling steps do not fit {num_train_timesteps} training timesteps; "
            "set sample.num_steps between 1 and diffusion.ddpm.num_train_timesteps."
        )
    ratio = num_train_timesteps / num_steps
    return np.round(np.arange(num_train_timesteps, 0, -ratio)).astype(np.int64) - 1


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float) -> np.ndarray:
    """Karras et al. (2022) eq. 5: num_steps sigmas from sigma_max to sigma_min, then a final 0."""
    if num_steps < 1:
        raise ValueError(f"sample.num_steps must be >= 1, got {num_steps}")
    ramp = np.linspace(0.0, 1.0, num_steps) if num_steps > 1 else np.zeros(1)
    inv_rho = 1.0 / rho
    sigmas = (sigma_max**inv_rho + ramp * (sigma_min**inv_rho - sigma_max**inv_rho)) ** rho
    return np.append(sigmas, 0.0)


FLOW_GRIDS = ("euler", "unipc")


def shift_flow_time(t, shift: float):
    """t -> shift t / (1 + (shift - 1) t) (SD3's timestep shift): shift > 1 moves times toward the noise end t = 1.

    Works on floats, NumPy and JAX arrays alike; t = 0 and t = 1 stay fixed.
    """
    return shift * t / (1 + (shift - 1) * t)


def flow_times(num_steps: int, shift: float, num_train_timesteps: int, grid: str) -> np.ndarray:
    """num_steps decreasing flow times from t = 1, shifted, then a final 0: diffusers' sampling grids.

    euler: FlowMatchEulerDiscreteScheduler (SD3): num_steps times evenly spaced from 1 to
    shift(1/T), then shifted, so the last non-zero time is shifted twice, as there.
    unipc: UniPCMultistepScheduler with use_flow_sigmas (Wan 2.1): the first num_steps of
    num_steps + 1 times evenly spaced from 1 to 1/T, then shifted.
    """
    if num_steps < 1:
        raise ValueError(f"sample.num_steps must be >= 1, got {num_steps}")
    if grid == "euler":
        times = np.linspace(1.0, shift_flow_time(1.0 / num_train_timesteps, shift), num_steps)
    elif grid == "unipc":
        times = np.linspace(1.0, 1.0 / num_train_timesteps, num_steps + 1)[:-1]
    else:
        raise ValueError(f"flow grid {grid!r} is not one of {FLOW_GRIDS}; set diffusion.flow.grid.")
    return np.append(shift_flow_time(times, shift), 0.0)
