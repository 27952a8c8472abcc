"""EDM (Karras et al. 2022) schedule and v-prediction preconditioning as SVD uses them
(generative-models ``EDMDiscretization``, ``VScalingWithEDMcNoise``, ``EDMWeighting``).

Functions take NumPy arrays or Python floats for σ (one σ per video); the network-facing code turns
them into tensors.
"""
import numpy as np

SIGMA_DATA = 1.0  # VScalingWithEDMcNoise: σ_data = 1
C_NOISE_SCALE = 0.25  # c_noise = 0.25 · ln σ


def append_zero(sigmas: np.ndarray) -> np.ndarray:
    return np.concatenate([sigmas, np.zeros(1, sigmas.dtype)])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float) -> np.ndarray:
    """The EDM ρ-spaced schedule from σ_max down to σ_min (Karras et al. 2022, eq. 5), then a final 0;
    n + 1 values in float64."""
    if n < 1:
        raise ValueError(f"number of sampling steps must be >= 1, got {n}")
    ramp = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    max_inv, min_inv = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def karras_sigmas_strength(n: int, sigma_min: float, sigma_max: float, rho: float, strength: float) -> np.ndarray:
    """The last ``strength`` fraction of the ρ-ramp in n steps, then 0 (DiffSynth ContinuousODEScheduler
    ``set_timesteps(n, denoising_strength)``): strength 1 is ``karras_sigmas``; 0.5 starts half-way down."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"denoising strength must be in (0, 1], got {strength}")
    ramp = np.linspace(1.0 - strength, 1.0, n) if n > 1 else np.full(1, 1.0 - strength)
    max_inv, min_inv = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return append_zero((max_inv + ramp * (min_inv - max_inv)) ** rho)


def v_scalings(sigma, log=np.log):
    """(c_skip, c_out, c_in, c_noise) of the v-prediction denoiser with EDM c_noise:
    c_skip = σd²/(σ²+σd²), c_out = −σ·σd/√(σ²+σd²), c_in = 1/√(σ²+σd²), c_noise = 0.25·ln σ.
    Plain arithmetic, so ``sigma`` may be floats, NumPy arrays or (with ``log=ops.log``) MindSpore tensors:
    sampling and the training loss use this one function."""
    denom = sigma ** 2 + SIGMA_DATA ** 2
    c_skip = SIGMA_DATA ** 2 / denom
    c_out = -sigma * SIGMA_DATA / denom ** 0.5
    c_in = 1.0 / denom ** 0.5
    c_noise = C_NOISE_SCALE * log(sigma)
    return c_skip, c_out, c_in, c_noise


def edm_weight(sigma):
    """EDM loss weighting λ(σ) = (σ² + σd²)/(σ·σd)² (sgm ``EDMWeighting``); NumPy or MindSpore."""
    return (sigma ** 2 + SIGMA_DATA ** 2) / (sigma * SIGMA_DATA) ** 2


def exvideo_weight(sigma):
    """ExVideo's loss weight √(1 + σ²)/σ, the square root of the EDM weight (ExVideo_svd_train.py)."""
    return (sigma ** 2 + SIGMA_DATA ** 2) ** 0.5 / (sigma * SIGMA_DATA)


def sample_sigma_grid(rng: np.random.Generator, n: int, num_grid: int, sigma_min: float, sigma_max: float,
                      rho: float) -> np.ndarray:
    """ExVideo's training σ: uniform over the ``num_grid`` Karras sigmas (σ_max -> σ_min, no trailing 0)."""
    grid = karras_sigmas(num_grid, sigma_min, sigma_max, rho)[:-1]
    return grid[rng.integers(0, num_grid, size=n)]


def sample_sigma_lognormal(rng: np.random.Generator, n: int, p_mean: float, p_std: float) -> np.ndarray:
    """EDM's training σ: ln σ ~ N(P_mean, P_std²) (sgm ``EDMSampling``)."""
    return np.exp(p_mean + p_std * rng.standard_normal(n))


def initial_noise_scale(sigma_max: float) -> float:
    """x_0 = ε·√(1 + σ_max²) (sgm ``EulerEDMSampler.prepare_sampling_loop``; diffusers ``init_noise_sigma``)."""
    return float(np.sqrt(1.0 + sigma_max ** 2))


def append_dims(x, target_dims: int):
    """Append trailing singleton axes to ``x`` until it has ``target_dims`` axes."""
    missing = target_dims - x.ndim
    if missing < 0:
        raise ValueError(f"append_dims: input has {x.ndim} dims but target_dims is {target_dims}, which is fewer")
    return x.reshape(x.shape + (1,) * missing)
