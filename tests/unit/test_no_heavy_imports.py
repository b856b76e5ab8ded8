"""The pure modules and the fast unit tests load neither Spark nor TensorFlow."""
import glob
import os
import subprocess
import sys

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "lib")
# Folders whose every module is pure, and pure modules of the other folders.
PURE_FOLDERS = ("captioning/data", "captioning/store", "captioning/report", "captioning/aws")
PURE_MODULES = ["captioning.cli", "captioning.model.search.reference", "captioning.model.encoder", "captioning.model.image_captioner"]
# The web page's modules too: the server loads TensorFlow only when it builds the model.
PURE_MODULES += ["captioning.app.caption", "captioning.app.serve", "captioning.app.browse", "captioning.app.cards", "captioning.app.speech", "captioning.app.resources", "captioning.app.page"]


def pure_modules() -> list[str]:
    found = []
    for folder in PURE_FOLDERS:
        for path in sorted(glob.glob(os.path.join(LIB, folder, "**", "*.py"), recursive=True)):
            module = os.path.relpath(path, LIB)[:-3].replace(os.sep, ".")
            found.append(module.removesuffix(".__init__"))
    return found + PURE_MODULES


def test_pure_modules_and_unit_tests_import_neither_spark_nor_tensorflow():
    here = os.path.dirname(__file__)
    unit_tests = sorted(f"tests.unit.{os.path.basename(p)[:-3]}" for p in glob.glob(os.path.join(here, "test_*.py")))
    code = (
        "import importlib, sys\n"
        f"for name in {pure_modules() + unit_tests!r}:\n"
        "    importlib.import_module(name)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'tensorflow', 'keras', 'petastorm'))\n"
        "print(','.join(heavy))\n"
    )
    root = os.path.dirname(os.path.dirname(here))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
