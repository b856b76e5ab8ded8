"""spark-submit entry point of ``captioner caption-images``; the stage itself is captioning.pipeline.caption_images."""
from captioning.pipeline.caption_images import main

if __name__ == "__main__":
    raise SystemExit(main())
