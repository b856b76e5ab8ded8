"""Spark session creation shared by every job.

Under ``spark-submit`` the master and resources come from the submit command (EMR, a
standalone cluster, ``local[*]``); run directly (``captioner ...``, tests) the session is
local. Arrow is on because the stages move batches between the JVM and Python workers.
"""
from __future__ import annotations

import os
import shutil
import sys
from typing import Mapping

from captioning.errors import UserError


LOG_PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")


class JavaMissingError(UserError, RuntimeError):
    pass


def require_java() -> None:
    """Fail with one line instead of a py4j stack trace when Java is absent."""
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and os.path.exists(os.path.join(java_home, "bin", "java"))):
        raise JavaMissingError("Java not found: Spark needs Java 17 (e.g. apt-get install openjdk-17-jre-headless, or set JAVA_HOME)")


def launched_by_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_session(app_name: str, master: str | None = None, extra_conf: Mapping[str, str] | None = None):
    """A SparkSession; ``master`` wins, else spark-submit's, else ``local[*]``.

    On a terminal Spark draws its console progress bar (tasks done per stage), so a long
    stage shows that it moves; in logs (spark-submit on a cluster, CI) it stays off.
    """
    require_java()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    conf = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.compression.codec": "snappy",
        "spark.ui.showConsoleProgress": "true" if sys.stderr.isatty() else "false",
    }
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:  # the console's choice, for executors' Python workers too
        conf["spark.executorEnv.TF_CPP_MIN_LOG_LEVEL"] = os.environ["TF_CPP_MIN_LOG_LEVEL"]
    if master:
        builder = builder.master(master)
    elif not launched_by_spark_submit():
        builder = builder.master("local[*]")
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if not launched_by_spark_submit():  # the driver JVM starts here: give it the quiet log profile
        conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={LOG_PROFILE}"
    for key, value in {**conf, **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session
