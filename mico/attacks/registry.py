"""Every attack by name: ``--attack``'s choices, ``--compare``'s rows and the docs' tables.

A new attack is a module under :mod:`mico.attacks` defining an :class:`~mico.attacks.base.Attack`
subclass, and one entry here. The order is the order of ``--compare``'s rows: the baseline
first.  A *variant* (another code path of a registered attack, picked by a flag of its own, such
as ``--original``) is an entry of :data:`VARIANTS`: not an ``--attack`` choice, not a row.
"""

from __future__ import annotations

from collections.abc import Mapping

from mico.attacks.base import Attack
from mico.attacks.combine import Combine
from mico.attacks.hardness import Hardness
from mico.attacks.lira import Lira
from mico.attacks.logit_lira import LogitLira
from mico.attacks.loss import Loss
from mico.attacks.original import OriginalLira
from mico.attacks.reference import Reference
from mico.attacks.rmia import Rmia
from mico.attacks.rmia_online import RmiaOnline
from mico.errors import InputError

ATTACKS: dict[str, Attack] = {
    attack.name: attack
    for attack in (
        Loss(),
        Lira(),
        Hardness(),
        Rmia(),
        RmiaOnline(),
        Combine(),
        LogitLira(),
        Reference(),
    )
}

#: Variants of the attacks above, by name (:attr:`~mico.attacks.base.Attack.variant_of`).
VARIANTS: dict[str, Attack] = {attack.name: attack for attack in (OriginalLira(),)}

#: The attack ``run_lira_mia.py`` runs without ``--attack``.
DEFAULT_ATTACK = "lira"


def get_attack(name: str) -> Attack:
    """Look up an attack or a variant by name, with an error that lists the attacks."""
    found = ATTACKS.get(name) or VARIANTS.get(name)
    if found is None:
        raise InputError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    return found


def with_variant(attack: Attack, flags: Mapping[str, object]) -> Attack:
    """The variant of ``attack`` whose flag is among the ``flags`` set (``{dest: value}``), or
    ``attack`` itself."""
    for variant in VARIANTS.values():
        if variant.variant_of == attack.name and flags.get(variant.switch):
            return variant
    return attack
