"""CONSENTGATE_CLASS_ARCHIVE: a driver starts with the class archive only when there is
one, and an archive the JVM cannot use changes nothing a command prints."""

from __future__ import annotations

import subprocess
from pathlib import Path

from pyspark.find_spark_home import _find_spark_home

from transforms.class_archive import VARIABLE, archive_java_options
from transforms.java_options import driver_java_options


def test_no_variable_or_no_file_adds_no_option(monkeypatch, tmp_path):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert archive_java_options() == ""
    monkeypatch.setenv(VARIABLE, str(tmp_path / "missing.jsa"))
    assert archive_java_options() == ""
    assert "SharedArchiveFile" not in driver_java_options("/lake/_catalog")


def test_an_archive_is_named_with_the_jvm_warnings_on_stderr(monkeypatch, tmp_path):
    archive = tmp_path / "classes.jsa"
    archive.write_bytes(b"x")
    monkeypatch.setenv(VARIABLE, str(archive))
    options = driver_java_options("/lake/_catalog").split()
    assert options[:3] == [f"-XX:SharedArchiveFile={archive}", "-Xlog:disable", "-Xlog:all=warning:stderr"]
    assert "-Dderby.system.home=/lake/_catalog" in options


def test_a_jvm_given_an_archive_it_cannot_use_starts_and_keeps_stdout_clean(monkeypatch, tmp_path):
    # An archive of another class path (another pyspark): the JVM starts without it and
    # warns, on stdout unless told otherwise, where the commands print their JSON lines.
    jars = Path(_find_spark_home()) / "jars"
    launcher, tags = (next(jars.glob(f"spark-{name}_*.jar")) for name in ("launcher", "tags"))
    archive = tmp_path / "classes.jsa"
    dump = ["java", f"-XX:ArchiveClassesAtExit={archive}", "-cp", str(launcher), "org.apache.spark.launcher.Main"]
    subprocess.run(dump, capture_output=True, timeout=60)
    assert archive.is_file()
    monkeypatch.setenv(VARIABLE, str(archive))
    plain = [f"-XX:SharedArchiveFile={archive}"]
    for options, warning_on_stdout in (plain, True), (archive_java_options().split(), False):
        started = subprocess.run(
            ["java", *options, "-cp", str(tags), "-version"], capture_output=True, text=True, timeout=60
        )
        assert started.returncode == 0
        assert ("Unable to use shared archive" in started.stdout) is warning_on_stdout
        assert ("Unable to use shared archive" in started.stderr) is not warning_on_stdout
