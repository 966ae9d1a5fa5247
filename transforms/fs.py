"""Directory moves through Hadoop's FileSystem, so they work on any lake URI.

A rename is atomic on local disks and HDFS; on object stores it is a copy, which is
why publication also swaps the catalog location and the CURRENT pointer last.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

# The last Spark context's (context, Hadoop's Path class, its Hadoop configuration). Py4J
# resolves `jvm.org.apache.hadoop.fs.Path` one package at a time, a call each: looked
# up afresh, the file-system helpers cost about 0.5 s of a small run.
_hadoop_of_context: tuple | None = None


def _hadoop(spark: SparkSession) -> tuple:
    """``(Path class, Hadoop configuration)`` of ``spark``'s context."""
    global _hadoop_of_context
    context = spark.sparkContext._jsc
    if _hadoop_of_context is None or _hadoop_of_context[0] is not context:
        path_class = spark.sparkContext._jvm.org.apache.hadoop.fs.Path
        _hadoop_of_context = (context, path_class, context.hadoopConfiguration())
    return _hadoop_of_context[1], _hadoop_of_context[2]


def filesystem(spark: SparkSession, path: str):
    """``(Hadoop Path, its FileSystem)`` for a lake URI."""
    path_class, hadoop_conf = _hadoop(spark)
    hadoop_path = path_class(path)
    return hadoop_path, hadoop_path.getFileSystem(hadoop_conf)


def exists(spark: SparkSession, path: str) -> bool:
    hadoop_path, fs = filesystem(spark, path)
    return bool(fs.exists(hadoop_path))


def move(spark: SparkSession, source: str, target: str) -> None:
    source_path, fs = filesystem(spark, source)
    target_path, _ = filesystem(spark, target)
    if fs.exists(target_path):
        fs.delete(target_path, True)
    fs.mkdirs(target_path.getParent())
    if not fs.rename(source_path, target_path):
        raise OSError(f"could not move {source} to {target}")


def file_sizes(spark: SparkSession, folder: str) -> dict[str, int]:
    """Every file under ``folder`` by its path relative to it, with its size (none when
    the folder does not exist): what a copy must hold to be whole."""
    hadoop_path, fs = filesystem(spark, folder)
    if not fs.exists(hadoop_path):
        return {}
    root = fs.makeQualified(hadoop_path).toString().rstrip("/") + "/"
    files, listing = {}, fs.listFiles(hadoop_path, True)
    while listing.hasNext():
        status = listing.next()
        files[status.getPath().toString().removeprefix(root)] = status.getLen()
    return files


def remove(spark: SparkSession, path: str) -> None:
    hadoop_path, fs = filesystem(spark, path)
    fs.delete(hadoop_path, True)


def list_dirs(spark: SparkSession, path: str) -> list[str]:
    """Names of the sub-folders of ``path`` (none when it does not exist), sorted."""
    hadoop_path, fs = filesystem(spark, path)
    if not fs.exists(hadoop_path):
        return []
    return sorted(status.getPath().getName() for status in fs.listStatus(hadoop_path) if status.isDirectory())


def modified_at(spark: SparkSession, path: str) -> float:
    """The path's modification time, in seconds since the epoch."""
    hadoop_path, fs = filesystem(spark, path)
    return fs.getFileStatus(hadoop_path).getModificationTime() / 1000.0


def upload_folder(spark: SparkSession, local_folder: str, target: str) -> None:
    """Copies a local folder to ``target`` (any lake URI), replacing what was there."""
    source_path, _ = filesystem(spark, "file://" + local_folder)
    target_path, fs = filesystem(spark, target)
    if fs.exists(target_path):
        fs.delete(target_path, True)
    fs.mkdirs(target_path.getParent())
    fs.copyFromLocalFile(False, True, source_path, target_path)


def link_folder(spark: SparkSession, source: str, target: str) -> None:
    """Puts a copy of the folder ``source`` at ``target``: hard links on a local lake (the
    files are written once and never changed, so versions can share them), a copy through
    Hadoop's FileSystem elsewhere."""
    from transforms.lake import is_local, local_path

    if is_local(source) and is_local(target):
        import os

        source_root, target_root = local_path(source), local_path(target)
        for folder, _, files in os.walk(source_root):
            copy_folder = os.path.join(target_root, os.path.relpath(folder, source_root))
            os.makedirs(copy_folder, exist_ok=True)
            for name in files:
                os.link(os.path.join(folder, name), os.path.join(copy_folder, name))
        return
    source_path, fs = filesystem(spark, source)
    target_path, target_fs = filesystem(spark, target)
    jvm = spark.sparkContext._jvm
    _, hadoop_conf = _hadoop(spark)
    if not jvm.org.apache.hadoop.fs.FileUtil.copy(fs, source_path, target_fs, target_path, False, hadoop_conf):
        raise OSError(f"could not copy {source} to {target}")
