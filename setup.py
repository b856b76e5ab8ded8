"""Installable package for the Spark image-captioning pipeline.

Exact versions live in ``requirements/constraints.txt`` (one pinned set used by the
Makefile, CI and the EMR bootstrap); the ranges here only say what the code needs.
"""
from setuptools import find_packages, setup

setup(
    name="spark-captioning",
    version="0.1.0",
    description="Image captioning (CNN features + LSTM decoder) as Spark batch jobs for EMR and laptops",
    python_requires=">=3.11,<3.12",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    package_data={"captioning.cluster": ["log4j2.properties"]},
    install_requires=[
        "numpy>=1.26,<2",
        "pillow>=10",
        "boto3",
        "s3fs>=2024.6",
        "fsspec",
    ],
    extras_require={
        "spark": [
            "pyspark>=3.5,<3.6",
            "pyarrow>=14,<15",
            "pandas>=2,<3",
            "petastorm==0.13.1",
        ],
        "tf": [
            "tensorflow-cpu>=2.16,<2.20",
            "keras>=3",
            "matplotlib",
        ],
        "metrics": [
            "nltk",
            "pycocoevalcap",
        ],
        "app": [
            "streamlit>=1.40,<2",  # the page of `captioner serve`
        ],
        "test": [
            "pytest",
            "pytest-xdist",
            "moto[server]",
            "playwright",  # drives the system Chromium (/usr/bin/chromium); Playwright's own browsers are never downloaded
        ],
    },
    entry_points={"console_scripts": ["captioner=captioning.cli:main"]},
)
