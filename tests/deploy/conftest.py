"""Fixtures for the deployment tests (tests/deploy): the offline validator."""

from __future__ import annotations

import pytest

from tests.deploy import deploy_support


@pytest.fixture(scope="session")
def validator() -> deploy_support.Validator:
    return deploy_support.make_validator()
