"""``/metrics``: the schedulers in the Prometheus text format (see ``metrics.collector``).

Readable with the bearer token of ``--metrics-token-file`` (for a scraper) or by a
logged-in user allowed to list schedulers. May import ``web`` and ``metrics``.
"""

from __future__ import annotations

from typing import Any

from supervisor.web.replies import reply
from supervisor.web.site import Request, Site


def metrics(site: Site, _request: Request) -> Any:
    page = site.metrics
    response = reply(page.render(), 200, content_type=page.content_type)
    response.set_header("Cache-Control", "no-store")
    return response
