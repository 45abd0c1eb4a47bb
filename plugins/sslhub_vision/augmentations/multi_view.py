"""Building several views in Python: :class:`Compose` and :class:`MultiView`.

The engine already calls the recipe's pipeline once per view (``objective.num_views``);
these are for using the augmentations without the engine (scripts, notebooks, tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from sslhub import Batch

Transform = Callable[[Batch], Batch]


class Compose(nn.Module):
    """Apply augmentations in order: ``batch -> batch``."""

    def __init__(self, transforms: Sequence[Transform]):
        super().__init__()
        self.transforms = list(transforms)
        # nn.Modules are registered so .to(device) and state_dict reach them
        self.modules_ = nn.ModuleList([t for t in self.transforms if isinstance(t, nn.Module)])

    def forward(self, batch: Batch) -> Batch:
        for transform in self.transforms:
            batch = transform(batch)
        return batch


class MultiView(nn.Module):
    """Make several independently augmented views of one batch.

    Args:
        transforms: one pipeline (a callable ``batch -> batch``, e.g. :class:`Compose`) used
            for every view, or a sequence with one pipeline per view (asymmetric views as
            in BYOL: blur on the first view, solarize on the second).
        num_views: how many views when ``transforms`` is a single pipeline.

    Returns (from ``forward``):
        a list of ``num_views`` batches; each view draws fresh random parameters.

    Example::

        views = MultiView(Compose([RandomResizedCrop(), HorizontalFlip()]), num_views=2)(batch)
    """

    def __init__(self, transforms: Transform | Sequence[Transform], num_views: int | None = None):
        super().__init__()
        if callable(transforms):
            if num_views is None:
                num_views = 2
            if num_views < 1:
                raise ValueError(f"num_views must be at least 1, got {num_views}")
            pipelines = [transforms] * num_views
        else:
            pipelines = list(transforms)
            if not pipelines:
                raise ValueError("MultiView needs at least one pipeline")
            if num_views is not None and num_views != len(pipelines):
                raise ValueError(f"num_views={num_views} but {len(pipelines)} pipelines were given")
        self.pipelines = pipelines
        self.modules_ = nn.ModuleList(
            {id(p): p for p in pipelines if isinstance(p, nn.Module)}.values()  # each module once
        )

    @property
    def num_views(self) -> int:
        return len(self.pipelines)

    def forward(self, batch: Batch) -> list[Batch]:
        return [pipeline(batch) for pipeline in self.pipelines]
