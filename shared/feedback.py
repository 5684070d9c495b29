"""Placeholder: filled in by the feedback work (schema, rules)."""

SCHEMA = ""
