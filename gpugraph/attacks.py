"""Adversarial examples for curve studies: FGSM and PGD under an L-infinity budget.

The public face of :mod:`gpugraph.models.attacks`, where they are implemented and documented.
"""

from gpugraph.models.attacks import Attack, fgsm, pgd

__all__ = ["Attack", "fgsm", "pgd"]
