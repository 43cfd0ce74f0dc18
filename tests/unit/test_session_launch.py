"""What a session our code launches gets from the install: protobuf-java's jar, the Delta
package's recorded jars, the log4j2 file. Pure lookups on files made here; no JVM."""
import os

from runtime import aws, spark


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()
    return path


def test_protobuf_jar_prefers_the_ivy_cache_then_maven_then_debian(tmp_path, monkeypatch):
    monkeypatch.setattr(aws, "PROTOBUF_JAR", str(tmp_path / "debian" / "protobuf.jar"))
    assert aws.protobuf_jar(home=str(tmp_path)) is None
    debian = _touch(str(tmp_path / "debian" / "protobuf.jar"))
    assert aws.protobuf_jar(home=str(tmp_path)) == debian
    m2 = _touch(str(tmp_path / ".m2/repository/com/google/protobuf/protobuf-java/2.5.0/protobuf-java-2.5.0.jar"))
    assert aws.protobuf_jar(home=str(tmp_path)) == m2
    ivy = _touch(str(tmp_path / ".ivy2/cache/com.google.protobuf/protobuf-java/bundles/protobuf-java-2.5.0.jar"))
    assert aws.protobuf_jar(home=str(tmp_path)) == ivy


def test_cached_packages_gives_the_recorded_jars_only_while_all_exist(tmp_path, monkeypatch):
    monkeypatch.setattr(aws, "java_home_dir", lambda: str(tmp_path))
    settings = {"spark.jars.packages": "io.delta:delta-spark_2.12:3.3.2"}
    assert spark.cached_packages(settings) is None  # nothing recorded: Ivy resolves
    jars = [_touch(str(tmp_path / ".ivy2/jars" / name)) for name in ("a.jar", "b.jar")]
    spark.record_package_jars("io.delta:delta-spark_2.12:3.3.2", jars)
    assert spark.cached_packages(settings) == jars
    assert spark.cached_packages({"spark.jars.packages": "other:pkg:1"}) is None
    os.remove(jars[1])
    assert spark.cached_packages(settings) is None


def test_launch_settings_put_our_log4j2_file_before_given_java_options():
    assert os.path.isfile(spark.LOG4J2_CONF)
    options = spark.launch_settings({"spark.driver.extraJavaOptions": "-Dx=1"})["spark.driver.extraJavaOptions"]
    assert options == f"-Dlog4j.configurationFile=file:{spark.LOG4J2_CONF} -Dx=1"


def test_local_masters():
    assert all(spark.is_local_master(m) for m in (None, "", "local", "local[2]", "local[*]"))
    assert not any(spark.is_local_master(m) for m in ("yarn", "spark://127.0.0.1:7077", "localhost"))
