"""Placeholder: filled in by the joint work (schema, rules)."""

SCHEMA = ""
