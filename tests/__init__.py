"""Tests of sched-supervisor (a package, so helpers import as ``tests.<module>``)."""
