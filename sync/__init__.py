"""Signed store-and-forward sync: envelopes, outbox, custody relay, hub ingest, downlink."""
