"""Membership-inference attacks on stored shadow-model outputs.

``stats`` (shared IN/OUT statistics), ``base`` (the :class:`~mico.attacks.base.Attack`
interface and typed configurations), one module per attack (``loss``, ``lira``, ``hardness``,
``rmia``), ``registry`` (every attack by name), ``compare`` (the comparison table's rows) and
``run`` (the library behind ``run_lira_mia.py``).
"""
