"""The documentation keeps up with the code: commands, event types, rules."""

from __future__ import annotations

import re

import pytest

from hub import cli
from hub.events import PRIORITY_BY_TYPE
from hub.pipeline import ACTIVE_ALERTS_KEY, DEVICES_KEY, ENGINE_STATE_KEY
from hub.rules.params import RULES_SCHEMA
from tests.conftest import REPO

README = (REPO / "README.md").read_text()
EVENTS_DOC = (REPO / "docs" / "events.md").read_text()
ALERTS_DOC = (REPO / "docs" / "alerts.md").read_text()


def _subcommands():
    parser = cli.build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices, {a.dest: a.help for a in action._choices_actions}


@pytest.mark.parametrize("command", sorted(_subcommands()[0]))
def test_every_command_has_help_and_is_in_the_readme(command):
    _, helps = _subcommands()
    assert helps[command]
    assert f"carehub {command}" in README


def _emitted_types():
    code = "\n".join(p.read_text() for p in (REPO / "hub").rglob("*.py"))
    found = set(re.findall(r'"((?:alert|bed|vitals|sleep|device|hub|store)\.[a-z_]+)"', code))
    state_keys = {ACTIVE_ALERTS_KEY, DEVICES_KEY, ENGINE_STATE_KEY}
    return sorted((found | set(PRIORITY_BY_TYPE)) - state_keys)


@pytest.mark.parametrize("event_type", _emitted_types())
def test_every_event_type_is_in_the_catalogue(event_type):
    assert f"`{event_type}`" in EVENTS_DOC


@pytest.mark.parametrize("rule", sorted(RULES_SCHEMA))
def test_every_rule_is_documented(rule):
    assert f"`{rule}`" in ALERTS_DOC
