"""NT-Xent against a hand computation and lightly's formula; SimCLR trains on digits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslhub import BuildContext
from sslhub_vision import augmentations as A
from sslhub_vision.encoders import SmallCNN, SmallCNNParams
from sslhub_vision.heads.projection import ProjectionHead
from sslhub_vision.losses import NTXentLoss
from sslhub_vision.modality import ImageModality, ImageParams
from sslhub_vision.objectives.simclr import SimCLRObjective, SimCLRParams


def hand_ntxent(z0: torch.Tensor, z1: torch.Tensor, temperature: float) -> float:
    """The SimCLR paper's loss written as explicit loops over the 2B anchors."""
    z = torch.cat((z0, z1)).double()
    n = z.shape[0]
    batch = n // 2
    total = 0.0
    for i in range(n):
        positive = (i + batch) % n
        sims = [float(torch.dot(z[i], z[k]) / (z[i].norm() * z[k].norm())) / temperature for k in range(n)]
        denominator = sum(math.exp(sims[k]) for k in range(n) if k != i)
        total += -math.log(math.exp(sims[positive]) / denominator)
    return total / n


def lightly_formula(z0: torch.Tensor, z1: torch.Tensor, temperature: float) -> torch.Tensor:
    """lightly's NTXentLoss (single process, no memory bank) as its documentation states it:
    cosine similarities of the 2B normalised outputs, the diagonal removed, cross-entropy with
    the other view as the target."""
    out = F.normalize(torch.cat((z0, z1)), dim=1)
    n = out.shape[0]
    logits = out @ out.T / temperature
    logits = logits[~torch.eye(n, dtype=torch.bool)].view(n, n - 1)
    targets = torch.arange(n)
    targets = (targets + n // 2) % n
    targets = targets - (targets > torch.arange(n)).long()  # the removed diagonal shifts later columns left
    return F.cross_entropy(logits, targets)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_ntxent_matches_hand_computation_and_lightly_formula(temperature):
    torch.manual_seed(0)
    z0, z1 = torch.randn(6, 5), torch.randn(6, 5)
    loss = NTXentLoss(temperature)(z0, z1)
    assert loss.item() == pytest.approx(hand_ntxent(z0, z1, temperature), rel=1e-5)
    torch.testing.assert_close(loss, lightly_formula(z0, z1, temperature))


def test_ntxent_is_low_for_matching_views_and_symmetric():
    torch.manual_seed(0)
    z = torch.randn(8, 16)
    loss_fn = NTXentLoss(0.1)
    assert loss_fn(z, z + 0.01 * torch.randn_like(z)) < 0.1
    assert loss_fn(z, torch.randn(8, 16)) > 1.0
    z1 = torch.randn(8, 16)
    torch.testing.assert_close(loss_fn(z, z1), loss_fn(z1, z))


def test_ntxent_logits_mask_self_and_point_to_positive():
    logits, labels = NTXentLoss(0.5).logits_and_labels(torch.randn(3, 4), torch.randn(3, 4))
    assert logits.shape == (6, 6)
    assert torch.equal(labels, torch.tensor([0, 1, 2, 0, 1, 2]))
    # anchor b's own column (second half of the candidates) is -inf
    assert all(logits[b, 3 + b % 3] == float("-inf") for b in range(6))


def test_ntxent_argument_checks():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        NTXentLoss(0.0)
    with pytest.raises(ValueError, match="z0 and z1 must both be"):
        NTXentLoss()(torch.randn(3, 4), torch.randn(4, 4))


def test_projection_head_shapes_and_checks():
    head = ProjectionHead(16, 32, 8, num_layers=3)
    assert head(torch.randn(4, 16)).shape == (4, 8)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.modules()) == 2
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        ProjectionHead(16, 32, 8, num_layers=0)


def test_simclr_needs_an_encoder():
    with pytest.raises(ValueError, match="needs the built encoder"):
        SimCLRObjective(SimCLRParams(), BuildContext())


def test_simclr_loss_falls_on_digits():
    torch.manual_seed(0)
    modality = ImageModality(ImageParams(image_size=16))
    context = BuildContext(modality=modality, modality_name="image")
    encoder = SmallCNN(SmallCNNParams(width=8, stages=2), context)
    context.encoder = encoder
    objective = SimCLRObjective(SimCLRParams(temperature=0.5, projection_dim=16), context)
    assert objective.num_views == 2
    augment = A.Compose(
        [A.RandomResizedCrop(A.RandomResizedCropParams(scale=(0.3, 1.0))), A.ColorJitter(), A.GaussianBlur()]
    )
    dataset = modality.train_dataset()
    images = modality.on_device(modality.collate([dataset[i] for i in range(64)]))
    optimizer = torch.optim.Adam([*encoder.parameters(), *objective.parameters()], lr=3e-3)
    losses, accuracies = [], []
    for _ in range(40):
        views = A.MultiView(augment, num_views=2)(images)
        output = objective(views, encoder)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        losses.append(output.loss.item())
        accuracies.append(float(output.metrics["contrastive_accuracy"]))
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < first - 0.5, (first, last)
    assert sum(accuracies[-8:]) / 8 > sum(accuracies[:8]) / 8


def _distributed_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        generator = torch.Generator().manual_seed(0)
        z0, z1 = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
        local = slice(rank * 4, rank * 4 + 4)
        a = z0[local].clone().requires_grad_(True)
        b = z1[local].clone().requires_grad_(True)
        loss = NTXentLoss(0.5)(a, b)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad0": a.grad, "grad1": b.grad}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ntxent_gathers_negatives_across_ranks(tmp_path):
    """Two gloo processes with half the batch each see the same loss and gradients as one process."""
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    generator = torch.Generator().manual_seed(0)
    z0 = torch.randn(8, 5, generator=generator).requires_grad_(True)
    z1 = torch.randn(8, 5, generator=generator).requires_grad_(True)
    full = NTXentLoss(0.5)(z0, z1)
    full.backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, full.detach())
    # gather_with_grad sums the gradient over ranks; DDP then averages, i.e. divides by the world size
    torch.testing.assert_close(torch.cat([r["grad0"] for r in ranks]) / 2, z0.grad)
    torch.testing.assert_close(torch.cat([r["grad1"] for r in ranks]) / 2, z1.grad)
