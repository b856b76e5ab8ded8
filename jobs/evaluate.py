"""spark-submit entry point of ``captioner evaluate``; the stage itself is captioning.pipeline.evaluate."""
from captioning.pipeline.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
