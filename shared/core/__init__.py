"""Layer 0: infrastructure every layer uses (canonical JSON, crypto, clock, SQLite storage, settings, audit, logs, version)."""
