"""Placeholder: filled in by the oversight work (schema, rules)."""

SCHEMA = ""
