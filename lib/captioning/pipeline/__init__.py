"""The stages: one module per stage with its options and whole body, Spark transforms in transforms/."""
