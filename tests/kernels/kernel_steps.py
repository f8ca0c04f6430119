"""The float64 dense reference of one SAE step that every kernel path is compared with, and its inputs."""

import torch

from vitsae.kernels import reference

TRITON_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

WEIGHT_NAMES = ("x", "W_enc", "b_enc", "b_dec", "W_dec")


def make_sae_tensors(B: int, D: int, F: int, dtype=torch.float64, seed: int = 0, device="cpu") -> dict:
    """Fresh random SAE weights and a batch, scaled so that pre-activations are O(1)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {
        "x": torch.randn(B, D, generator=gen, dtype=dtype),
        "W_enc": torch.randn(D, F, generator=gen, dtype=dtype) / D**0.5,
        "b_enc": 0.1 * torch.randn(F, generator=gen, dtype=dtype),
        "b_dec": 0.1 * torch.randn(D, generator=gen, dtype=dtype),
        "W_dec": torch.randn(F, D, generator=gen, dtype=dtype) / D**0.5,
        "threshold": 0.3 * torch.rand(F, generator=gen, dtype=dtype),
        "d_xhat": torch.randn(B, D, generator=gen, dtype=dtype),
        "d_l1": torch.randn(B, generator=gen, dtype=dtype),
    }
    return {name: t.to(device) for name, t in tensors.items()}


def step_outputs(t: dict[str, torch.Tensor], encode_decode) -> dict[str, torch.Tensor]:
    """Run `encode_decode(x, W_enc, b_enc, b_dec, W_dec) -> (x_hat, l1_B, fire_F)` and backpropagate the
    fixed upstream gradients; returns x_hat, l1, firing counts and every parameter's gradient in float64."""
    leaves = {n: t[n].clone().requires_grad_() for n in WEIGHT_NAMES}
    x_hat, l1_B, fire_F = encode_decode(*(leaves[n] for n in WEIGHT_NAMES))
    (x_hat * t["d_xhat"].to(x_hat.dtype)).sum().add((l1_B * t["d_l1"].to(l1_B.dtype)).sum()).backward()
    out = {"x_hat": x_hat.detach(), "l1": l1_B.detach(), "fire": fire_F}
    out.update({f"grad_{n}": leaves[n].grad for n in WEIGHT_NAMES})
    return {n: v.double() if v.is_floating_point() else v for n, v in out.items()}


def dense_reference_step(t: dict[str, torch.Tensor], activation: str, k: int | None) -> dict:
    """The float64 plain-PyTorch step: dense B x F codes, decoder-norm-weighted L1."""
    threshold = t["threshold"].double() if activation == "jumprelu" else None

    def run(x, W_enc, b_enc, b_dec, W_dec):
        pre = reference.pre_activations(x.double(), W_enc.double(), b_enc.double(), b_dec.double())
        codes = reference.activate(pre, activation, k, threshold)
        l1 = reference.weighted_l1(codes, W_dec.double().norm(dim=1))
        return reference.decode(codes, W_dec.double(), b_dec.double()), l1, reference.firing_counts(codes)

    return step_outputs({n: v.double() for n, v in t.items()}, run)


def assert_step_close(got: dict, want: dict, rtol: float, atol: float) -> None:
    assert torch.equal(got["fire"].cpu(), want["fire"].cpu()), "firing counts differ"
    for name in want:
        if name != "fire":
            torch.testing.assert_close(
                got[name].cpu(), want[name].cpu(), rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}"
            )
