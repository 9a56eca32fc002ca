"""Metrics in the Prometheus text format: runs by outcome, durations, last success, next
planned start, state and log truncation per scheduler. May import ``core``, ``notify.feed``
and prometheus_client."""
