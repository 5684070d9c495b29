"""Layer 1: the domain rules as plain functions: no SQL, no Flask, so every node and every test uses them."""
