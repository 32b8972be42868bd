"""Reading the rules file (YAML or TOML) and handing it to the pure validator."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from processors.errors import RulesError
from processors.rules import DEFAULT_RULES, Rules, parse_rules


def load_rules(path: str | Path | None) -> Rules:
    """The rules in ``path``; the documented defaults when ``path`` is empty."""
    if not path:
        return DEFAULT_RULES
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise RulesError(str(p), f"cannot read: {exc.strerror}") from None
    data: Any
    try:
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(str(p), f"not valid {p.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RulesError(str(p), "the top level must be a mapping of sections")
    return parse_rules(data)
