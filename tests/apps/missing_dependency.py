"""An app module whose own import of a dependency fails."""

import a_package_that_is_not_installed  # noqa: F401
