"""One module per MICO track, each ending in its registry entry (a :class:`~mico.tracks.base.Task`).

Everything that differs between tracks lives in that track's module: sizes, architecture, base
dataset loader, training recipe, download sources, and the offline demo's presets, synthesiser
and writer.  :mod:`mico.tracks.registry` collects the entries; no other module branches on a
track's name.
"""
