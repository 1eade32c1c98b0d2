"""Samplers over a denoiser D(x, sigma) in variance-exploding coordinates.

Every formulation is expressed as x = x0 + sigma * noise with a denoiser
D(x, sigma) ~ E[x0 | x]; the samplers below only see D and a decreasing sigma
grid ending at 0, so each works for EDM, DDPM and flow matching alike. Step
coefficients depend only on the (static) grid and options, so they are computed
in float64 NumPy and the loop itself is a single `lax.scan`: one sampling run is
one jit.

Noise that a stochastic sampler injects comes from `noise_fn(key)`, so the
caller decides its distribution (e.g. the PYoCo prior correlated across frames).
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

SAMPLERS = ("heun", "euler", "ddim", "dpmpp_2m", "unipc")
ODE_TIMES = ("sigma", "flow")
"""The time of Heun's trapezoid rule: sigma on x (Karras et al.), or flow time t = sigma / (1 + sigma) on
x_t = x / (1 + sigma) (rectified flow). Euler and the data-prediction solvers (ddim, dpmpp_2m, unipc) take
the same steps in both."""

Denoiser = Callable[[jax.Array, jax.Array], jax.Array]
NoiseFn = Callable[[jax.Array], jax.Array]


def _at(denoise: Denoiser, x: jax.Array, sigma: jax.Array) -> jax.Array:
    """Calls D with one sigma per example, as the models expect."""
    return denoise(x, jnp.full((x.shape[0],), sigma, jnp.float32)).astype(jnp.float32)


def _consts(*arrays: np.ndarray) -> tuple[jax.Array, ...]:
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


def _churned_sigmas(sigmas: np.ndarray, s_churn: float, s_tmin: float, s_tmax: float) -> np.ndarray:
    """sigma_hat_i = sigma_i (1 + gamma_i) of Karras et al. Algorithm 2."""
    num_steps = len(sigmas) - 1
    current = sigmas[:-1]
    gamma = np.where((current >= s_tmin) & (current <= s_tmax), min(s_churn / num_steps, math.sqrt(2.0) - 1.0), 0.0)
    return current * (1.0 + gamma)


def _karras(
    denoise: Denoiser,
    x: jax.Array,
    sigmas: np.ndarray,
    key: jax.Array,
    noise_fn: NoiseFn,
    second_order: bool,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
    ode_time: str,
) -> jax.Array:
    """Euler or Heun (Karras et al. Algorithm 2) with optional churn; the step into sigma=0 is always Euler.

    Heun's trapezoid rule in the time `ode_time`. In flow time (y = x / (1 + sigma), dy/dt = d - D) it is
    Euler's step plus (sigma' - sigma) / (2 (1 + sigma)) times (d' - d) - (D' - D): finite even from
    sigma ~ 1e6 (t ~ 1), where the trapezoid in sigma is far off.
    """
    sigma_hat = _churned_sigmas(sigmas, s_churn, s_tmin, s_tmax)
    churn_std = np.sqrt(sigma_hat**2 - sigmas[:-1] ** 2) * s_noise
    stochastic = bool(np.any(churn_std > 0))
    heun = second_order & (sigmas[1:] > 0)
    flow = ode_time == "flow"
    correction = (sigmas[1:] - sigma_hat) / (2.0 * (1.0 + sigma_hat))  # Flow time's Heun correction scale.
    xs = _consts(sigma_hat, sigmas[1:], churn_std, heun.astype(np.float64), correction)
    xs += (jax.random.split(key, len(sigmas) - 1),)

    def step(x, inputs):
        s_hat, s_next, std, use_heun, scale, step_key = inputs
        if stochastic:
            x = x + std * noise_fn(step_key)
        denoised = _at(denoise, x, s_hat)
        d = (x - denoised) / s_hat
        # x + (s_next - s_hat) d, written without cancelling two ~sigma_max terms.
        x_next = denoised + (s_next / s_hat) * (x - denoised)
        if heun.any():

            def corrected(x_next):
                denoised_next = _at(denoise, x_next, s_next)
                d_next = (x_next - denoised_next) / s_next
                if flow:
                    return x_next + scale * (d_next - d - (denoised_next - denoised))
                return x + (s_next - s_hat) * 0.5 * (d + d_next)  # Karras et al. as written: EDM runs stay bit-exact.

            x_next = jax.lax.cond(use_heun > 0, corrected, lambda x_next: x_next, x_next)
        return x_next, None

    return jax.lax.scan(step, x, xs)[0]


def _ddim(
    denoise: Denoiser, x: jax.Array, sigmas: np.ndarray, key: jax.Array, noise_fn: NoiseFn, eta: float
) -> jax.Array:
    """DDIM (Song et al. 2021) in VE form: x' = D + sigma_down (x - D) / sigma + sigma_up z.

    sigma_up^2 = eta^2 sigma'^2 (sigma^2 - sigma'^2) / sigma^2 is DDIM's variance
    std_t^2 divided by alphabar_prev, so eta=0 is deterministic DDIM (= Euler here)
    and eta=1 is ancestral DDPM sampling.
    """
    current, nxt = sigmas[:-1], sigmas[1:]
    sigma_up = np.minimum(nxt, eta * np.sqrt(nxt**2 * (current**2 - nxt**2) / current**2))
    sigma_down = np.sqrt(nxt**2 - sigma_up**2)
    stochastic = bool(np.any(sigma_up > 0))
    xs = _consts(current, sigma_down / current, sigma_up) + (jax.random.split(key, len(current)),)

    def step(x, inputs):
        sigma, down_ratio, up, step_key = inputs
        denoised = _at(denoise, x, sigma)
        x_next = denoised + down_ratio * (x - denoised)
        if stochastic:
            x_next = x_next + up * noise_fn(step_key)
        return x_next, None

    return jax.lax.scan(step, x, xs)[0]


def _dpmpp_2m(denoise: Denoiser, x: jax.Array, sigmas: np.ndarray) -> jax.Array:
    """DPM-Solver++(2M) (Lu et al. 2022), data prediction, midpoint form, in log-sigma time.

    With lambda = -ln sigma and h_i = lambda_{i+1} - lambda_i:
    x' = (sigma'/sigma) x + (1 - sigma'/sigma) ((1 + 1/(2r)) D_i - 1/(2r) D_{i-1}), r = h_{i-1}/h_i.
    The first step (no history) and a step into sigma=0 are first order.
    """
    current, nxt = sigmas[:-1], sigmas[1:]
    ratio = nxt / current
    weight = np.zeros_like(current)
    inner = np.arange(1, len(current))
    inner = inner[nxt[inner] > 0]
    weight[inner] = np.log(current[inner] / nxt[inner]) / (2.0 * np.log(current[inner - 1] / current[inner]))
    xs = _consts(current, ratio, weight)

    def step(carry, inputs):
        x, previous = carry
        sigma, r, w = inputs
        denoised = _at(denoise, x, sigma)
        blended = (1.0 + w) * denoised - w * previous
        return (r * x + (1.0 - r) * blended, denoised), None

    return jax.lax.scan(step, (x, jnp.zeros_like(x)), xs)[0][0]


def _unipc_orders(num_steps: int, order: int) -> np.ndarray:
    """The predictor's order at each step: it grows with the history, and falls to 1 at the end (lower_order_final)."""
    steps = np.arange(num_steps)
    return np.minimum(np.minimum(order, steps + 1), num_steps - steps)


def _unipc_b(h: float, order: int) -> np.ndarray:
    """The right-hand side b(h) of UniPC's order conditions (Zhao et al. 2023), B(h) = e^-h - 1 (bh2)."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    factorial = 1
    b = []
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / h_phi_1)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return np.array(b)


def _unipc_update(sigmas: np.ndarray, start: int, order: int, corrector: bool) -> tuple[float, dict[int, float]]:
    """One UniP (or, with `corrector`, UniC) update from level `start` to `start + 1` as (r, weights).

    x' = r x + sum_j w_j D_j over the denoised estimates D_j at levels j: start - order + 1 .. start, and
    for UniC also start + 1. In data prediction with lambda = -ln sigma, h = lambda' - lambda and
    r = sigma' / sigma: x' = r x + (1 - r) (D + sum_k rho_k (D_{start-k} - D) / r_k [+ rho_c (D' - D)]),
    r_k = (lambda_{start-k} - lambda) / h, the rho solving UniPC's order conditions (fixed to 1/2 for a
    second-order UniP and a first-order UniC, as diffusers' UniPCMultistepScheduler does).
    """
    ratio = sigmas[start + 1] / sigmas[start]
    if order == 1 and not corrector:
        return ratio, {start: 1.0 - ratio}
    lam = -np.log(sigmas[: start + 2])
    h = lam[start + 1] - lam[start]
    rks = np.array([(lam[start - k] - lam[start]) / h for k in range(1, order)] + [1.0])
    conditions = np.stack([rks**i for i in range(order)])
    b = _unipc_b(h, order)
    if corrector:
        rhos = np.array([0.5]) if order == 1 else np.linalg.solve(conditions, b)
    else:
        rhos = np.array([0.5]) if order == 2 else np.linalg.solve(conditions[:-1, :-1], b[:-1])
    weights = {start: 1.0}
    for k in range(1, order):
        weights[start - k] = rhos[k - 1] / rks[k - 1]
        weights[start] -= rhos[k - 1] / rks[k - 1]
    if corrector:
        weights[start + 1] = rhos[-1]
        weights[start] -= rhos[-1]
    return ratio, {level: (1.0 - ratio) * w for level, w in weights.items()}


def _unipc(denoise: Denoiser, x: jax.Array, sigmas: np.ndarray, order: int) -> jax.Array:
    """UniPC (Zhao et al. 2023): multistep UniP predictor, UniC corrector, bh2, data prediction, as diffusers.

    Step i evaluates D_i at the predicted x_i, corrects x_i with it (UniC, from step 1 on, reusing that
    evaluation), then predicts x_{i+1} (UniP). The denoised estimates of the last `order` levels ride in
    the scan's carry; every weight is fixed by the grid. In VE coordinates lambda = -ln sigma, which is
    ln(alpha / sigma) of any formulation, so the steps are those of UniPC in its own coordinates.
    """
    num_steps = len(sigmas) - 1
    orders = _unipc_orders(num_steps, order)
    window = order + 1  # D_i, D_{i-1}, ..., D_{i-order}
    keep, corrector_ratio, predictor_ratio = np.zeros(num_steps), np.zeros(num_steps), np.zeros(num_steps)
    corrector_weights, predictor_weights = np.zeros((num_steps, window)), np.zeros((num_steps, window))
    keep[0] = 1.0
    for i in range(num_steps):
        predictor_ratio[i], weights = _unipc_update(sigmas, i, orders[i], corrector=False)
        for level, w in weights.items():
            predictor_weights[i, i - level] = w
        if i > 0:
            corrector_ratio[i], weights = _unipc_update(sigmas, i - 1, orders[i - 1], corrector=True)
            for level, w in weights.items():
                corrector_weights[i, i - level] = w
    xs = _consts(sigmas[:-1], keep, corrector_ratio, corrector_weights, predictor_ratio, predictor_weights)

    def step(carry, inputs):
        x, previous_x, history = carry
        sigma, keep_x, c_ratio, c_weights, p_ratio, p_weights = inputs
        estimates = jnp.concatenate([_at(denoise, x, sigma)[None], history])
        x = keep_x * x + c_ratio * previous_x + jnp.tensordot(c_weights, estimates, axes=1)
        x_next = p_ratio * x + jnp.tensordot(p_weights, estimates, axes=1)
        return (x_next, x, estimates[:-1]), None

    history = jnp.zeros((order,) + x.shape, jnp.float32)
    return jax.lax.scan(step, (x, jnp.zeros_like(x), history), xs)[0][0]


def run_sampler(
    sampler: str,
    denoise: Denoiser,
    x: jax.Array,
    sigmas: np.ndarray,
    *,
    key: jax.Array,
    noise_fn: NoiseFn,
    eta: float = 0.0,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    unipc_order: int = 2,
    ode_time: str = "sigma",
) -> jax.Array:
    """Integrates from x at sigmas[0] down the grid `sigmas` and returns x at sigmas[-1].

    `sigmas` is a concrete decreasing NumPy grid (normally ending at 0, where x is
    the sample); the options are Python numbers, fixed at trace time. `unipc_order`:
    UniPC's predictor order (diffusers' solver_order; 2 for guided sampling, 3 is
    also common); `ode_time`: one of ODE_TIMES, the formulation's.
    """
    sigmas = np.asarray(sigmas, np.float64)
    if sigmas.ndim != 1 or len(sigmas) < 2 or np.any(np.diff(sigmas) >= 0) or sigmas[-1] < 0:
        raise ValueError(f"sigmas must be a decreasing grid of >= 2 values ending at >= 0, got {sigmas}")
    if ode_time not in ODE_TIMES:
        raise ValueError(f"ode_time {ode_time!r} is not one of {ODE_TIMES}")
    x = x.astype(jnp.float32)
    if sampler in ("heun", "euler"):
        heun = sampler == "heun"
        return _karras(denoise, x, sigmas, key, noise_fn, heun, s_churn, s_tmin, s_tmax, s_noise, ode_time)
    if sampler == "ddim":
        return _ddim(denoise, x, sigmas, key, noise_fn, eta)
    if sampler == "dpmpp_2m":
        return _dpmpp_2m(denoise, x, sigmas)
    if sampler == "unipc":
        if not (isinstance(unipc_order, int) and unipc_order >= 1):
            raise ValueError(f"the UniPC order must be an integer >= 1, got {unipc_order!r}")
        return _unipc(denoise, x, sigmas, unipc_order)
    raise ValueError(f"sampler {sampler!r} is not one of {SAMPLERS}; set sample.sampler accordingly.")
