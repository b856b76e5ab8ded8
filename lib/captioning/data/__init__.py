"""Datasets as files: the Flickr8k layout and its readers, caption text, vocabulary, image decoding, the sample dataset (pure Python: no Spark, no TensorFlow)."""
