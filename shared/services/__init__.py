"""Layer 3: the case services on a node's database (they may use sync/ to emit); no Flask."""
