"""spark-submit entry point of ``captioner extract-features``; the stage itself is captioning.pipeline.extract_features."""
from captioning.pipeline.extract_features import main

if __name__ == "__main__":
    raise SystemExit(main())
