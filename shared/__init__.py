"""The common library, in layers: core (0), rules (1), services (3) and web (4); sync/ is layer 2 (docs/architecture.md)."""
