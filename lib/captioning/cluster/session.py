"""Spark session creation shared by every job.

Under ``spark-submit`` the master and resources come from the submit command (EMR, a
standalone cluster, ``local[*]``); run directly (``captioner ...``, tests) the session is
local. Arrow is on because the stages move batches between the JVM and Python workers.

``s3://`` URIs mean the same everywhere. On EMR, EMRFS serves them (its core-site.xml
names a filesystem for the ``s3`` scheme) and nothing here changes that. Elsewhere the
pip pyspark has no S3 filesystem at all, so the project's set-up installs Hadoop's S3A
connector, matching pyspark's Hadoop client (hadoop-aws and the AWS SDK bundle it
declares), into ``<venv>/spark-jars/``; a local session puts those jars on its class
path, and every session without an ``s3`` filesystem of its own maps ``s3://`` (and
``s3a://``) to S3A with the standard AWS credential chain, and with ``AWS_ENDPOINT_URL``
as the endpoint when set (path-style, as local S3 servers need). Clusters other than EMR
get the jars from ``spark-submit --jars`` (:func:`s3a_jars`).
"""
from __future__ import annotations

import glob
import os
import shutil
import sys
from typing import Mapping

from captioning.errors import UserError


LOG_PROFILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")


class JavaMissingError(UserError, RuntimeError):
    pass


class S3UnavailableError(UserError, RuntimeError):
    pass


def require_java() -> None:
    """Fail with one line instead of a py4j stack trace when Java is absent."""
    java_home = os.environ.get("JAVA_HOME")
    if shutil.which("java") is None and not (java_home and os.path.exists(os.path.join(java_home, "bin", "java"))):
        raise JavaMissingError("Java not found: Spark needs Java 17 (e.g. apt-get install openjdk-17-jre-headless, or set JAVA_HOME)")


def s3a_jars() -> list[str]:
    """The S3A connector's jars installed beside this Python environment (empty when not installed)."""
    return sorted(glob.glob(os.path.join(sys.prefix, "spark-jars", "*.jar")))


def s3a_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Hadoop settings that serve ``s3://`` and ``s3a://`` with S3A."""
    settings = {
        "fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        "fs.s3a.aws.credentials.provider": "com.amazonaws.auth.DefaultAWSCredentialsProviderChain",
    }
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        settings["fs.s3a.endpoint.region"] = region
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        settings.update({
            "fs.s3a.endpoint": endpoint,
            "fs.s3a.path.style.access": "true",
            "fs.s3a.connection.ssl.enabled": str(endpoint.startswith("https://")).lower(),
        })
    return settings


def _hadoop_settings(session):
    return session.sparkContext._jsc.hadoopConfiguration()  # noqa: SLF001 - the one handle on Hadoop's settings


def _has_s3a(session) -> bool:
    jvm = session.sparkContext._jvm  # noqa: SLF001
    try:
        jvm.java.lang.Class.forName("org.apache.hadoop.fs.s3a.S3AFileSystem", False, jvm.java.lang.Thread.currentThread().getContextClassLoader())
        return True
    except Exception:  # noqa: BLE001 - py4j reports the ClassNotFoundException
        return False


def serve_s3(session) -> bool:
    """Map ``s3://`` to S3A unless the cluster serves it already (EMRFS); True when mapped."""
    hadoop = _hadoop_settings(session)
    if hadoop.get("fs.s3.impl") or not _has_s3a(session):
        return False
    for key, value in s3a_settings().items():
        hadoop.set(key, value)
    return True


def require_s3(session, uris) -> None:
    """Fail before any work when Spark here cannot read or write the ``s3://`` URIs a job needs."""
    needed = [uri for uri in uris if uri and uri.startswith(("s3://", "s3a://"))]
    if needed and not _hadoop_settings(session).get("fs.s3.impl"):
        raise S3UnavailableError(
            f"{needed[0]}: this Spark has no S3 filesystem; install Hadoop's S3A connector for it "
            "(`make venv` puts it in .venv/spark-jars/; on a cluster pass those jars with spark-submit --jars), or run on EMR"
        )


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
    if not launched_by_spark_submit():  # the driver JVM starts here: its log profile and S3 connector
        conf["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={LOG_PROFILE}"
        if s3a_jars():
            conf["spark.jars"] = ",".join(s3a_jars())
    for key, value in {**conf, **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    serve_s3(session)
    return session
