"""The pure modules and the fast unit tests load neither Spark nor TensorFlow."""
import glob
import os
import subprocess
import sys

PURE_MODULES = [
    "captioning.data.text", "captioning.data.vocab", "captioning.data.flickr8k", "captioning.data.sample_dataset", "captioning.store.storage",
    "captioning.data.images", "captioning.model.search.reference", "captioning.report.metrics", "captioning.report.gallery", "captioning.store.feature_store",
    "captioning.model.encoder", "captioning.cli",
]


def test_pure_modules_and_unit_tests_import_neither_spark_nor_tensorflow():
    here = os.path.dirname(__file__)
    unit_tests = sorted(f"tests.unit.{os.path.basename(p)[:-3]}" for p in glob.glob(os.path.join(here, "test_*.py")))
    code = (
        "import importlib, sys\n"
        f"for name in {PURE_MODULES + unit_tests!r}:\n"
        "    importlib.import_module(name)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'tensorflow', 'keras', 'petastorm'))\n"
        "print(','.join(heavy))\n"
    )
    root = os.path.dirname(os.path.dirname(here))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
