"""EDM schedule, preconditioning, Euler sampler and guidance against k-diffusion and the reference values."""
import numpy as np
import pytest
import torch

from exvideo_ms.diffusion.edm import (append_dims, edm_weight, initial_noise_scale, karras_sigmas,
                                      karras_sigmas_strength, v_scalings)
from exvideo_ms.diffusion.guidance import frame_scales, guide, uses_guidance
from exvideo_ms.diffusion.sampler import sample_euler


@pytest.fixture(scope="module")
def kd():
    from tests import references
    return references.k_diffusion_sampling()


@pytest.mark.parametrize("n", [1, 4, 25, 1000])
def test_karras_sigmas_match_k_diffusion(kd, n):
    ours = karras_sigmas(n, 0.002, 700.0, 7.0)
    ref = kd.get_sigmas_karras(n, 0.002, 700.0, rho=7.0, device="cpu").double().numpy() if n > 1 else None
    assert ours[-1] == 0.0 and len(ours) == n + 1
    if ref is not None:
        np.testing.assert_allclose(ours, ref, rtol=1e-5)  # k-diffusion works in float32


def test_karras_reference_values():
    """reference/svd_architecture.md §8 (n = 4)."""
    np.testing.assert_allclose(karras_sigmas(4, 0.002, 700.0, 7.0), [700.0, 70.54084, 2.26912, 0.002, 0.0], rtol=1e-5)
    np.testing.assert_allclose(v_scalings(karras_sigmas(4, 0.002, 700.0, 7.0)[:-1])[3],
                               [1.63777, 1.06405, 0.20485, -1.55365], atol=1e-5)
    assert initial_noise_scale(700.0) == pytest.approx(700.0007142853)


def test_strength_one_is_the_full_schedule_and_half_starts_lower():
    full = karras_sigmas(25, 0.002, 700.0, 7.0)
    np.testing.assert_allclose(karras_sigmas_strength(25, 0.002, 700.0, 7.0, 1.0), full)
    half = karras_sigmas_strength(25, 0.002, 700.0, 7.0, 0.5)
    assert half[0] == pytest.approx(15.59, rel=2e-3) and half[-2] == pytest.approx(0.002) and half[-1] == 0
    with pytest.raises(ValueError):
        karras_sigmas_strength(25, 0.002, 700.0, 7.0, 0.0)


def test_v_scalings_identities():
    sigma = np.array([0.002, 0.5, 1.0, 15.6, 700.0])
    c_skip, c_out, c_in, c_noise = v_scalings(sigma)
    np.testing.assert_allclose(c_skip, 1 / (sigma ** 2 + 1))
    np.testing.assert_allclose(c_out, -sigma / np.sqrt(sigma ** 2 + 1))
    np.testing.assert_allclose(c_in, 1 / np.sqrt(sigma ** 2 + 1))
    np.testing.assert_allclose(c_noise, 0.25 * np.log(sigma))
    # with the v-target v = (ε − σ·x0)/√(σ²+1) (ExVideo's training_target) the denoiser returns x0 exactly
    x0, eps = 0.7, -1.3
    x = x0 + sigma * eps
    v = (eps - sigma * x0) / np.sqrt(sigma ** 2 + 1)
    np.testing.assert_allclose(c_skip * x + c_out * v, x0, rtol=1e-9)
    np.testing.assert_allclose(edm_weight(sigma), (sigma ** 2 + 1) / sigma ** 2)


def test_euler_matches_k_diffusion_on_a_closed_form_denoiser(kd):
    """Gaussian data N(0, s²): the exact denoiser is D(x; σ) = x·s²/(s² + σ²)."""
    s2 = 0.6 ** 2
    sigmas = karras_sigmas(12, 0.002, 80.0, 7.0)
    x0 = np.random.default_rng(0).standard_normal((3, 4, 5)) * initial_noise_scale(80.0)

    ours = sample_euler(lambda x, sigma: x * s2 / (s2 + sigma ** 2), x0.copy(), sigmas, disable=True)
    ref = kd.sample_euler(lambda x, sigma: x * s2 / (s2 + sigma[0] ** 2), torch.from_numpy(x0.copy()),
                          torch.from_numpy(sigmas), disable=True).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-10)
    # and with many steps it approaches the ODE's exact solution x(0) = x(σ_max)·s/√(s² + σ_max²)
    fine = sample_euler(lambda x, sigma: x * s2 / (s2 + sigma ** 2), x0.copy(), karras_sigmas(400, 0.002, 80.0, 7.0),
                        disable=True)
    exact = x0 * np.sqrt(s2) / np.sqrt(s2 + 80.0 ** 2)
    assert np.abs(fine - exact).max() < 0.01 * np.abs(exact).max()


def test_frame_scales_match_torch_linspace():
    np.testing.assert_allclose(frame_scales(1.5, 3.0, 25), torch.linspace(1.5, 3.0, 25).numpy(), rtol=1e-6)
    assert frame_scales(2.0, 2.0, 4).tolist() == [2.0] * 4


def test_guidance_blend_and_when_it_runs():
    u, c = np.zeros((3, 1, 1, 1)), np.ones((3, 1, 1, 1))
    s = frame_scales(1.0, 2.0, 3).reshape(3, 1, 1, 1)
    np.testing.assert_allclose(guide(u, c, s).ravel(), [1.0, 1.5, 2.0])
    assert uses_guidance(1.0, 3.0) and not uses_guidance(1.0, 1.0) and not uses_guidance(0.5, 1.0)


def test_append_dims_refuses_to_drop_dims():
    assert append_dims(np.zeros(3), 4).shape == (3, 1, 1, 1)
    with pytest.raises(ValueError, match="fewer"):
        append_dims(np.zeros((2, 2, 2)), 2)
