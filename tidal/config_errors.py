"""Pydantic's validation errors rewritten for the person who set the value.

Each line names where the value was set - the variable (``TIDAL_SOURCE``) or, for a value a
flow run or command was given, ``parameter source`` - what was wrong, and what the setting
expects, without ever printing a URL or key that was given.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import AliasChoices, ValidationError
from pydantic_settings import BaseSettings


def env_name(settings: type[BaseSettings], field: str) -> str:
    """The environment variable ``settings``' ``field`` is read from: its first alias, else
    the prefixed field name."""
    alias = settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    prefix = settings.model_config.get("env_prefix") or ""
    return f"{prefix}{field.upper()}"


def explain(exc: ValidationError, settings: type[BaseSettings], names: Mapping[str, str]) -> str:
    """One line per error of ``exc``. ``names`` renames a field as the user gave it (a
    parameter); every other field is named by its variable. A message naming another setting's
    variable (a model validator's: "TIDAL_CHUNK_OVERLAP must be under half of
    TIDAL_CHUNK_TOKENS") names it as it was set too."""
    by_alias = _field_by_alias(settings)
    lines = ["invalid configuration:"]
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else ""
        name = by_alias.get(name, name)
        where = names.get(name) or (env_name(settings, name) if name else "settings")
        field = settings.model_fields.get(name)
        hint = f" (expected {field.description})" if field and field.description else ""
        given = err.get("input")
        secret = name.endswith(("_url", "_key"))
        shown = "" if secret or isinstance(given, dict) else f" = {given!r}"
        message = err["msg"].removeprefix("Value error, ")
        for other, said in names.items():
            message = message.replace(env_name(settings, other), said)
        lines.append(f"  {where}{shown}: {message}{hint}")
    return "\n".join(lines)


def _field_by_alias(settings: type[BaseSettings]) -> dict[str, str]:
    """Each alias a field accepts (``OPENAI_API_KEY``), mapped to the field's name."""
    return {
        str(choice): name
        for name, info in settings.model_fields.items()
        if isinstance(info.validation_alias, AliasChoices)
        for choice in info.validation_alias.choices
    }
