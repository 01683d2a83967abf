"""``save_preds.py``'s stage: which models run over which points (``plan``), batched forward
passes reduced to margins (``inference``), running and assembling (``predict``), the on-disk
contract the attacks read (``store``) and what it was computed from (``provenance``).
"""
