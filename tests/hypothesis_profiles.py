"""Hypothesis profiles for the property-based tests: ``dev``, ``ci`` and ``stress``.

- ``dev`` (the default outside CI): a quick run, random each time, failures kept in .hypothesis/.
- ``ci`` (the default when the ``CI`` variable is set, as in ``.ci/run``): the same budget,
  derandomized so that every CI run tries the same examples, no example database.
- ``stress``: 100 times the examples, for hunting bugs by hand (about 15 minutes, so lift
  pytest-timeout's 60 s limit)::

      HUB_HYPOTHESIS_PROFILE=stress .venv/bin/pytest --timeout=0 tests/protocol/test_properties.py

The variable picks the profile because a profile named on the command line
(``--hypothesis-profile``) must be registered before pytest configures its plugins, that is
before any test module is imported. Tests take their settings from :func:`budget`, so that one
test can be given more or fewer examples than another while the profile scales them all.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["PROFILE_NAME", "budget"]

#: Examples per test at weight 1 in the dev and ci profiles; stress multiplies it by 100.
BASE_EXAMPLES = 50

settings.register_profile(
    "dev",
    max_examples=BASE_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "ci",
    settings.get_profile("ci"),  # hypothesis' own: derandomize, no database, print_blob
    max_examples=BASE_EXAMPLES,
    deadline=None,
)
settings.register_profile(
    "stress",
    max_examples=BASE_EXAMPLES * 100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _profile_name() -> str:
    chosen = os.environ.get("HUB_HYPOTHESIS_PROFILE")
    if chosen:
        settings.get_profile(chosen)  # fails loudly on a typo
        return chosen
    # Hypothesis itself switches to its "ci" profile when it detects CI; follow it.
    return "ci" if settings.get_current_profile_name() == "ci" else "dev"


PROFILE_NAME = _profile_name()


def budget(weight: float = 1.0) -> settings:
    """Settings from the chosen profile, with ``weight`` times its number of examples."""
    profile = settings.get_profile(PROFILE_NAME)
    return settings(profile, max_examples=max(1, round(profile.max_examples * weight)))
