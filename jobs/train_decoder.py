"""spark-submit entry point of ``captioner train-decoder``; the stage itself is captioning.pipeline.train_decoder."""
from captioning.pipeline.train_decoder import main

if __name__ == "__main__":
    raise SystemExit(main())
