"""The built-in sample dataset (see :mod:`captioning.data.sample.generate`)."""
