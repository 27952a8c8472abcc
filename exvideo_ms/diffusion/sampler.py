"""Samplers as functions of ``(denoiser, x, sigmas)``, as in k-diffusion: ``denoiser(x, sigma)`` returns
the x0 estimate; ``sigmas`` ends with 0. The sampler never sees a network or a condition."""
from typing import Callable, Optional

from tqdm.auto import tqdm


def to_d(x, sigma: float, denoised):
    """The probability-flow ODE derivative dx/dσ = (x − D(x; σ))/σ (Karras et al. 2022, eq. 3)."""
    return (x - denoised) / sigma


def sample_euler(denoiser: Callable, x, sigmas, callback: Optional[Callable] = None, disable: bool = False,
                 desc: str = "sampling"):
    """Euler steps of the EDM ODE (Karras et al. 2022, Algorithm 2 without churn or the Heun correction):
    x ← x + (σ_{i+1} − σ_i)·(x − D(x; σ_i))/σ_i; the last step to σ = 0 lands on D(x; σ_last)."""
    for i in tqdm(range(len(sigmas) - 1), desc=desc, disable=disable):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        denoised = denoiser(x, sigma)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "denoised": denoised})
        x = x + to_d(x, sigma, denoised) * (sigma_next - sigma)
    return x
