"""Every attack by name: ``--attack``'s choices, ``--compare``'s rows and the docs' tables.

A new attack is a module under :mod:`mico.attacks` defining an :class:`~mico.attacks.base.Attack`
subclass, and one entry here. The order is the order of ``--compare``'s rows: the baseline
first.
"""

from __future__ import annotations

from mico.attacks.base import Attack
from mico.attacks.combine import Combine
from mico.attacks.hardness import Hardness
from mico.attacks.lira import Lira
from mico.attacks.logit_lira import LogitLira
from mico.attacks.loss import Loss
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

#: The attack ``run_lira_mia.py`` runs without ``--attack``.
DEFAULT_ATTACK = "lira"


def get_attack(name: str) -> Attack:
    """Look up an attack by name, with an error that lists the known ones."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise InputError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}") from None
