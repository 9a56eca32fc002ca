"""Coordination of several hosts running one app on one PostgreSQL database.

Leases with fencing tokens (``lease``), slot claims and fenced run writes (``slots``), a
command channel between hosts (``commands``, sent through ``sender``), the owners'
statuses (``shown``) and shared settings changes (``settings_feed``), the tables they use
(``schema``), the loop of a bare host (``node``) and the manager's membership
(``member``, behind ``manager/cluster_gate.py``). Needs psycopg 3 (the ``postgresql``
extra); only ``service.manager_mode`` imports it, for ``--cluster``. May import ``core``
and psycopg.
"""
