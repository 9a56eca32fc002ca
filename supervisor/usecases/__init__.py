"""The use cases: the only way to change state, each checking the subject's permission and
writing the audit trail; the Backend protocol both backends implement. May import ``core``."""
