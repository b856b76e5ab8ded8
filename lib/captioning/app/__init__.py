"""Trying a model by hand: ``captioner caption`` (images in one process, no Spark) and ``captioner serve`` (a web page)."""
