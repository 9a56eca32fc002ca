"""The Admin Center: a Bottle app over the use cases, served by its own HTTP front.

``app.create_app(use_cases, users=...)`` assembles the app: ``guard`` (session, proxy
header, CSRF, permission, errors mapped through ``http_status``) in front of the handler
modules (``account``, ``overview``, ``scheduler_page``, ``logs``, ``audit``, ``streams``),
which share a ``site.Site``. ``httpserver`` serves it against slow and hostile clients;
``server.start_admin`` is the factory ``supervisor run`` calls, ``server.serve_admin``
serves it for any bound use cases (systemd mode). Templates, CSS, JS and SVG live in the
``supervisor.admin`` package (the repository's ``admin/``). Modules here may import the
use cases and everything below them, bottle, jinja2 and the stdlib; nothing below imports
this package.
"""
