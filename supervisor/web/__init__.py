"""The Admin Center: a Bottle app over the use cases, served threaded.

``app.create_app(use_cases, users=...)`` builds the app; ``server.start_admin`` is the
factory ``supervisor run`` calls, ``server.serve_admin`` serves it for any bound use cases
(systemd mode). Templates, CSS, JS and SVG live in the ``supervisor.admin`` package
(the repository's ``admin/``). Modules here may import the use cases and everything
below them, bottle, jinja2 and the stdlib; nothing below imports this package.
"""
