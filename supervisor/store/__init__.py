"""Persistence of settings overrides, runs, logs, audit trail, users and internal state.

``protocols`` holds one Protocol per aggregate (and ``Store``, all of them) with the
errors each method raises; ``sqlite`` is the embedded store (one module per aggregate),
``memory`` a complete in-memory one; ``budget`` (log caps and markers) and ``codec``
(encodings) are shared so every store answers alike. May import ``core``.
"""
