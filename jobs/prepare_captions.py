"""spark-submit entry point of ``captioner prepare-captions``; the stage itself is captioning.pipeline.prepare_captions."""
from captioning.pipeline.prepare_captions import main

if __name__ == "__main__":
    raise SystemExit(main())
