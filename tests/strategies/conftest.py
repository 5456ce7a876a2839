"""Fixtures of the strategy tests live in ssl_fixtures.py (a unique module name: test files import
its helpers directly, which a module named conftest cannot guarantee when several test folders
have one)."""

from ssl_fixtures import *  # noqa: F403  (registers the fixtures)
