"""Decoder training: Petastorm input, checkpoints with resume and early stopping, single and data-parallel fitting."""
