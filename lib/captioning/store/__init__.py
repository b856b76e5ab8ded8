"""Storage: the one module that opens URIs, and the on-disk formats the stages share (each owned by one module)."""
