"""The DDP loss normalisation (``global_mean``): the averaged gradient of N ranks is the one-process gradient.

Adam is invariant to a constant factor on the loss, so an end-to-end comparison of weights
hides a normalisation off by the world size; these tests compare loss values and gradients.
"""

import pytest
import torch
from torch.nn import functional as F

from noise2map.training.tasks import global_mean

CLASS_WEIGHTS = torch.tensor([1.0, 3.0], dtype=torch.float64)
WORLD = 2


def _batch():
    """A global batch of 5 tiles (4×4) whose two slices differ in size (3, 2) and in class
    weight: rank 0's masks are mostly background, rank 1's mostly positive."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64)
    mask = torch.zeros(5, 4, 4, dtype=torch.long)
    mask[0, :1] = 1
    mask[3:, 1:] = 1
    return x, mask, [slice(0, 3), slice(3, 5)]


def _model():
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, 2, 1).double()


def _nll(logits, mask):
    """As DiscriminativeTask._nll: Σ class-weighted pixel losses and Σ their weights."""
    return F.cross_entropy(logits, mask, weight=CLASS_WEIGHTS, reduction="sum"), CLASS_WEIGHTS[mask].sum()


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def _weighted_mean(nll, weight):
    return nll / weight


def _one_process():
    """The loss and gradient of the whole batch on one process, by the definition."""
    x, mask, _ = _batch()
    model = _model()
    loss = _weighted_mean(*_nll(model(x), mask))
    loss.backward()
    return loss.detach(), _grads(model)


def test_ddp_global_mean_on_one_process_is_the_weighted_mean():
    x, mask, _ = _batch()
    logits = _model()(x).detach()
    nll, weight = _nll(logits, mask)
    per_pixel = -torch.log_softmax(logits, 1).gather(1, mask[:, None])[:, 0] * CLASS_WEIGHTS[mask]
    assert weight.item() == 1 * (mask == 0).sum().item() + 3 * (mask == 1).sum().item() == 52 + 3 * 28
    assert torch.allclose(global_mean(nll, weight), per_pixel.sum() / weight, rtol=1e-15, atol=0)
    # torch's own weighted mean is the same ratio
    assert torch.allclose(global_mean(nll, weight), F.cross_entropy(logits, mask, weight=CLASS_WEIGHTS),
                          rtol=1e-14, atol=0)
    assert global_mean(torch.tensor(0.0), torch.tensor(0.0)) == 0  # an all-ignored batch: no NaN


def _rank(rank: int, init: str, out: str) -> None:
    """One DDP rank: its slice of the batch through a DistributedDataParallel model (gloo)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        x, mask, slices = _batch()
        model = torch.nn.parallel.DistributedDataParallel(_model())
        loss = global_mean(*_nll(model(x[slices[rank]]), mask[slices[rank]]))
        loss.backward()  # DDP: each parameter's gradient is the mean over the ranks
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)  # what train/loss logs with sync_dist: the ranks' mean
        torch.save({"loss": loss.detach(), "mean_loss": mean_loss / WORLD, "grads": _grads(model.module)},
                   f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.usefixtures("one_thread")
def test_ddp_global_mean_gradient_over_two_gloo_ranks_is_the_one_process_gradient(tmp_path):
    """Two gloo ranks with 3 and 2 tiles and unequal class-weight sums: DDP's mean of their
    gradients equals the one-process gradient (equal, not only proportional: normalising by
    the world size twice or not at all is a factor 2 off), and so does the ranks' mean loss."""
    torch.multiprocessing.spawn(_rank, args=(f"file://{tmp_path / 'init'}", str(tmp_path)), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    loss, grads = _one_process()

    for r in ranks:
        assert torch.allclose(r["mean_loss"], loss, rtol=1e-14, atol=0), (r["mean_loss"], loss)
        for ddp, one in zip(r["grads"], grads):
            assert torch.allclose(ddp, one, rtol=1e-13, atol=1e-16), (ddp - one).abs().max()
    # each rank's share: its Σ loss · world / the global Σ weight (not its own weighted mean)
    x, mask, slices = _batch()
    weight = CLASS_WEIGHTS[mask].sum()
    with torch.no_grad():
        for r, s in zip(ranks, slices):
            nll, own = _nll(_model()(x[s]), mask[s])
            assert torch.allclose(r["loss"], nll * WORLD / weight, rtol=1e-14, atol=0)
            assert not torch.allclose(own, weight / WORLD)  # the slices' weights really differ

    # The data tell the normalisations apart: each rank's own weighted mean, averaged by DDP,
    # is another gradient.
    local = []
    for s in slices:
        model = _model()
        _weighted_mean(*_nll(model(x[s]), mask[s])).backward()
        local.append(_grads(model))
    local_mean = [(a + b) / WORLD for a, b in zip(*local)]
    assert max((a - b).abs().max().item() for a, b in zip(local_mean, grads)) > 1e-3
