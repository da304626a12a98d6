"""Write the legacy model files of tests/test_persistence.py (run once, with the code of commit
1b241a5, before the persistence contract of issue 23; kept to show how the files were made).

Each family's file is written by that version's ``save_*`` (the VAE file has no format tag),
read back by that version's ``load_*``, and the outputs of the loaded model on fixed inputs are
stored in ``expected.pt``: the current loaders must reproduce them from the same files.

    python tests/data/legacy/make_legacy_files.py   # from the repository root
"""

from __future__ import annotations

from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _perturb(module: torch.nn.Module, seed: int) -> None:
    """Move every parameter off its initialisation (a trained-looking, reproducible model)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def main() -> None:
    from dgm_ext.flows import PlanarFitConfig, load_planar, save_planar
    from dgm_ext.flows.fit import FitResult
    from dgm_ext.flows.realnvp import build_realnvp, load_realnvp, save_realnvp
    from dgm_ext.gan import GAN, GANConfig, load_gan, save_gan
    from dgm_ext.gan.ema import GeneratorEMA
    from dgm_ext.vae import build_vae, load_vae, save_vae

    expected: dict[str, dict[str, torch.Tensor]] = {}
    g = torch.Generator().manual_seed(123)

    # VAE: hidden 1, latent 2, one amortised planar layer (no format tag in this version)
    torch.manual_seed(0)
    vae = build_vae(arch="mlp", latent_dim=2, hidden=1, flow_length=1)
    _perturb(vae, 1)
    save_vae(vae, HERE / "vae.pt")
    vae = load_vae(HERE / "vae.pt")
    x = torch.rand(2, 1, 28, 28, generator=g)
    z = torch.randn(2, 2, generator=g)
    mu, logvar, h = vae.encode(x)
    z0 = torch.randn(3, 2, 2, generator=g)
    with torch.no_grad():
        zk, logdet = vae.flow(z0, h, vae.ops)
    expected["vae"] = {
        "x": x,
        "z": z,
        "z0": z0,
        "mu": mu.detach(),
        "logvar": logvar.detach(),
        "decode": vae.decode(z).detach(),
        "flow_z": zk,
        "flow_logdet": logdet,
    }

    # GAN: the DCGAN at width 2 (a few thousand parameters), saved with its generator EMA
    torch.manual_seed(0)
    gan = GAN(GANConfig(arch="dcgan", z_dim=2, image_shape=(1, 32, 32), width=2))
    ema = GeneratorEMA(gan.generator, 0.9)
    _perturb(gan, 2)  # the live generator now differs from the EMA shadow
    with torch.no_grad():
        for k in ema.buffer_keys:  # BatchNorm statistics off their defaults too
            if ema.shadow[k].is_floating_point():
                ema.shadow[k].add_(0.5)
    save_gan(gan, HERE / "gan.pt", ema=ema)
    gan = load_gan(HERE / "gan.pt")
    zg = torch.randn(2, 2, generator=g)
    xg = torch.rand(1, 1, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        expected["gan"] = {"z": zg, "x": xg, "decode": gan.decode(zg), "critic": gan.critic(xg)}

    # RealNVP: MLP couplings on 2x2 images
    torch.manual_seed(0)
    nvp = build_realnvp(arch="mlp", image_shape=(1, 2, 2), couplings=2, hidden=3)
    _perturb(nvp, 3)
    save_realnvp(nvp, HERE / "realnvp.pt")
    nvp = load_realnvp(HERE / "realnvp.pt")
    xn = torch.rand(5, 1, 2, 2, generator=g) * 0.9 + 0.05
    with torch.no_grad():
        zn, ldn = nvp(xn)
    expected["realnvp"] = {"x": xn, "z": zn, "logdet": ldn}

    # planar fit: K=2 layers, reverse-KL mode, a short fake loss curve
    cfg = PlanarFitConfig(mode="kl", target="u1", k=2, steps=10, seed=4)
    flow = cfg.build()
    _perturb(flow, 4)
    save_planar(FitResult(flow, cfg, [5, 10], [1.5, 1.25], 0.5), HERE / "planar.pt", note="x")
    fit = load_planar(HERE / "planar.pt")
    zp = torch.randn(4, 2, generator=g)
    with torch.no_grad():
        yp, ldp = fit.flow.inverse(zp)
    expected["planar"] = {"z": zp, "x": yp, "logdet": ldp}

    torch.save(expected, HERE / "expected.pt")


if __name__ == "__main__":
    main()
