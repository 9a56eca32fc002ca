"""Loading the app from MODULE:ATTRIBUTE: every failure names what is wrong."""

from __future__ import annotations

import pytest

from supervisor.cfgscheduler import enable
from supervisor.core.app import Configurator, load_app
from supervisor.core.errors import AppLoadError, DefinitionError


def test_loads_the_configurator_and_enable_is_idempotent() -> None:
    app = load_app("tests.apps.manager_jobs:cfg")
    assert isinstance(app, Configurator)
    assert enable(app) is enable(app)
    assert "m.oneshot" in enable(app).registry


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.apps.no_such_module:cfg", "cannot import module: No module named"),
        (
            "tests.apps.missing_dependency:cfg",
            "importing tests.apps.missing_dependency failed: No module named "
            "'a_package_that_is_not_installed'",
        ),
        ("tests.apps.exits_at_import:cfg", "raised SystemExit: 3"),
        ("tests.apps.manager_jobs:nothing", "has no 'nothing'"),
        ("tests.apps.manager_jobs:schedulers", "not a supervisor.Configurator"),
        (":cfg", "expected MODULE:ATTRIBUTE"),
    ],
)
def test_load_failures_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(AppLoadError) as caught:
        load_app(spec)
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"--app {spec!r}")


@pytest.mark.parametrize("name", ["demo\udc80", "de\x00mo", "  ", "", 3])
def test_an_app_name_that_cannot_be_shown_is_refused_naming_the_field(name: object) -> None:
    # Regression: Configurator("demo\udc80") was accepted and made GET /login answer 500.
    with pytest.raises(DefinitionError) as caught:
        Configurator(name)  # type: ignore[arg-type]
    assert caught.value.field == "name"
    assert isinstance(caught.value, ValueError)
