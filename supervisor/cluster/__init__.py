"""Coordination of several hosts running one app on one PostgreSQL database.

Leases with fencing tokens (``lease``), slot claims and fenced run writes (``slots``), a
command channel between hosts (``commands``), the tables they use (``schema``), and the
loop that ties them together on one host (``node``). Needs psycopg 3 (the ``postgresql``
extra). May import ``core`` and psycopg; nothing in the package imports it yet.
"""
