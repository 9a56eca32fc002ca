"""Admin Center assets: Jinja2 templates, CSS, JS and SVG (data only; no code)."""
