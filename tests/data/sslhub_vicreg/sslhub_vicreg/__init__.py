"""sslhub-vicreg: the VICReg objective and a feature-noise augmentation as an sslhub plugin.

The hooks live in :mod:`sslhub_vicreg.plugin`; the loss (usable alone) in
:mod:`sslhub_vicreg.loss`, the expander in :mod:`sslhub_vicreg.expander`, the objective in
:mod:`sslhub_vicreg.objective` and the augmentation in :mod:`sslhub_vicreg.noise`.
"""

__version__ = "0.2.0"
