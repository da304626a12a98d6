"""A RealNVP training step against normflows' RealNVP at equal parameter count (issue 25).

Both flows model the logit-space MNIST vector (784 dims, batch 128) with 8 affine couplings
whose nets are MLPs 392-1024-1024-784 (ReLU, last layer zero-initialised):

* dgm_ext: ``MLPRealNVP`` (checkerboard masks alternating with their complements; each net
  reads the kept half and returns s, t of the transformed half; ``tanh`` log-scales; the
  fused ``affine_coupling`` op);
* normflows 1.7.3: ``AffineCouplingBlock(MLP([392, 1024, 1024, 784], init_zeros=True))``
  followed by ``Permute(784, mode="swap")``, as in its RealNVP examples (``exp`` scales).

A step is ``-mean log p(y)``, backward and a fused Adam update. Rounds alternate between the
two (so a change of the machine's load hits both alike); medians; the parameter counts are
checked equal first. normflows is not a dependency of dgm_ext: run this from a venv that
has both (see benchmarks/RESULTS.md)::

    python benchmarks/normflows_ratio.py [THREADS=1] [ROUNDS=10]
"""

from __future__ import annotations

import statistics
import sys
import time

import normflows as nf
import torch

from dgm_ext.flows.realnvp import MLPRealNVP

BATCH, DIMS, COUPLINGS, HIDDEN = 128, 784, 8, 1024


def dgm_ext_step() -> tuple[torch.nn.Module, callable]:
    torch.manual_seed(0)
    flow = MLPRealNVP((1, 28, 28), COUPLINGS, HIDDEN)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3, fused=True)

    def step(y: torch.Tensor) -> float:
        loss = -flow.log_prob(y.view(-1, 1, 28, 28)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return flow, step


def normflows_step() -> tuple[torch.nn.Module, callable]:
    torch.manual_seed(0)
    flows = []
    for _ in range(COUPLINGS):
        net = nf.nets.MLP([DIMS // 2, HIDDEN, HIDDEN, DIMS], init_zeros=True)
        flows += [nf.flows.AffineCouplingBlock(net), nf.flows.Permute(DIMS, mode="swap")]
    model = nf.NormalizingFlow(q0=nf.distributions.DiagGaussian(DIMS, trainable=False),
                               flows=flows)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    def step(y: torch.Tensor) -> float:
        loss = model.forward_kld(y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return model, step


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    pixels = (torch.randint(0, 256, (BATCH, DIMS), generator=g) + torch.rand(BATCH, DIMS)) / 256
    p = 1e-5 + (1 - 2e-5) * pixels
    y = torch.log(p) - torch.log1p(-p)  # the logit front end both would share
    models = {"dgm_ext": dgm_ext_step(), "normflows": normflows_step()}
    counts = {k: sum(q.numel() for q in m.parameters()) for k, (m, _) in models.items()}
    assert counts["dgm_ext"] == counts["normflows"], counts
    for _, step in models.values():  # warm-up
        step(y)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(rounds):
        for k, (_, step) in models.items():
            t0 = time.perf_counter()
            step(y)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"threads={threads} params={counts['dgm_ext']:,} "
        + " ".join(f"{k}={v * 1000:.1f}ms" for k, v in med.items())
        + f" normflows/dgm_ext={med['normflows'] / med['dgm_ext']:.3f}"
    )


if __name__ == "__main__":
    main()
