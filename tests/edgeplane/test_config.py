"""EdgePlane configuration: ${VAR} interpolation, secrets, options, loading a pipeline."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from byteor.edgeplane._config import (
    DEFAULT_METRICS_ADDR,
    OPTIONS,
    EdgePlaneOptions,
    Redactor,
    add_option_arguments,
    collect_secrets,
    environment_help,
    interpolate,
    is_secret_name,
    load_pipeline,
    resolve_options,
    url_passwords,
)
from byteor.edgeplane._errors import (
    ConfigError,
    InterpolationError,
    MissingVariable,
    OptionError,
    PipelineFileError,
)
from byteor.errors import ByteorError
from byteor.spec import canonical_hash

# -- interpolation ----------------------------------------------------------------------------


def test_plain_default_and_escapes() -> None:
    env = {"HOST": "db1", "EMPTY": "", "PORT": "6380"}
    text = (
        "a = ${HOST}\n"
        "b = ${MISSING:-fallback}\n"
        "c = ${EMPTY:-used when empty}\n"
        "d = ${HOST:-not used}\n"
        "e = costs $$5 and $x stays, ${EMPTY} is empty\n"
        "f = redis://${HOST}:${PORT:-6379}/0\n"
    )
    done = interpolate(text, env)
    assert done.text == (
        "a = db1\n"
        "b = fallback\n"
        "c = used when empty\n"
        "d = db1\n"
        "e = costs $5 and $x stays,  is empty\n"
        "f = redis://db1:6380/0\n"
    )
    assert list(done.values) == ["HOST", "MISSING", "EMPTY", "PORT"]
    assert done.values["MISSING"] == "fallback"
    assert done.values["EMPTY"] == "used when empty"  # first use wins


def test_nested_defaults_are_resolved_only_when_used() -> None:
    env = {"B": "bee"}
    assert interpolate("x = ${A:-${B}}", env).text == "x = bee"
    assert interpolate("x = ${A:-${C:-deep $$}}", env).text == "x = deep $"
    assert interpolate("x = ${A:-pre-${B}-post}", env).text == "x = pre-bee-post"
    # B is set: its default names an unset variable, which is never looked at
    assert interpolate("x = ${B:-${UNSET}}", env).text == "x = bee"
    # ... but it must still be well-formed
    with pytest.raises(InterpolationError, match="not a placeholder"):
        interpolate("x = ${B:-${9}}", env)


def test_spec_comment_lines_are_left_alone() -> None:
    text = "# uses ${NOT_SET} and $$\n  # ${ALSO}\nk = v # ${V}\n"
    assert (
        interpolate(text, {"V": "w"}).text == "# uses ${NOT_SET} and $$\n  # ${ALSO}\nk = v # w\n"
    )


def test_missing_variable_names_it_and_the_line() -> None:
    text = "a = 1\n\nsource.in.param.url = redis://${REDIS_HOST}:6379\n"
    with pytest.raises(MissingVariable) as info:
        interpolate(text, {}, path="p.spec")
    err = info.value
    assert (err.path, err.line, err.variable) == ("p.spec", 3, "REDIS_HOST")
    assert str(err).startswith("p.spec:3: ${REDIS_HOST} is not set")
    assert "${REDIS_HOST:-value}" in str(err)
    assert isinstance(err, InterpolationError)
    assert isinstance(err, ConfigError)
    assert isinstance(err, ByteorError)


@pytest.mark.parametrize(
    ("text", "line", "variable", "match"),
    [
        ("a = ${HOST", 1, "HOST", "not closed"),
        ("a\nb = ${HOST:-x", 2, "HOST", "not closed"),
        ("a = ${}", 1, "", "not a placeholder"),
        ("a = ${1X}", 1, "", "not a placeholder"),
        ("\n\na = ${X-b}", 3, "X", "not supported"),
        ("a = ${X:?msg}", 1, "X", "not supported"),
    ],
)
def test_malformed_placeholders(text: str, line: int, variable: str, match: str) -> None:
    with pytest.raises(InterpolationError, match=match) as info:
        interpolate(text, {"X": "1", "HOST": "h"})
    assert (info.value.line, info.value.variable) == (line, variable)
    assert not isinstance(info.value, MissingVariable)


def test_a_value_with_a_line_break_cannot_inject_spec_keys() -> None:
    env = {"V": "x\nsource.evil.adapter = stdin"}
    with pytest.raises(InterpolationError, match="line break") as info:
        interpolate("k = 1\nk2 = ${V}\n", env, path="a.spec")
    assert info.value.line == 2
    assert "source.evil" not in str(info.value)  # the value is never shown


def test_toml_values_are_escaped_for_the_string_they_land_in() -> None:
    nasty = 'pa"ss\\word\nline2\ttab \x01 é'
    env = {"PW": nasty, "N": "42", "NAME": "orders"}
    text = (
        'a = "${PW}"\n'
        'b = """\n${PW}"""\n'
        "c = '${NAME}'\n"
        "d = '''${NAME}\n'''\n"
        "e = ${N}\n"
        '"f.${NAME}" = "in a key"\n'
    )
    doc = tomllib.loads(interpolate(text, env, syntax="toml").text)
    assert doc == {
        "a": nasty,
        "b": nasty,
        "c": "orders",
        "d": "orders\n",
        "e": 42,
        "f.orders": "in a key",
    }


@given(st.text())
def test_any_value_round_trips_through_a_toml_basic_string(value: str) -> None:
    text = 'x = "${V}" # ${IGNORED}\ny = """${V}"""\n'
    doc = tomllib.loads(interpolate(text, {"V": value}, syntax="toml").text)
    assert doc == {"x": value, "y": value}


def test_toml_comments_are_not_interpolated_but_hashes_in_strings_are_not_comments() -> None:
    text = (
        "# header ${UNSET}\n"
        'a = "x#${A}" # trailing ${UNSET}\n'
        "b = 'y#${A}'\n"
        'c = """\n# not a comment ${A}\n"""\n'
        'd = "esc\\"aped #${A}"\n'
    )
    out = interpolate(text, {"A": "1"}, syntax="toml").text
    assert tomllib.loads(out) == {
        "a": "x#1",
        "b": "y#1",
        "c": "# not a comment 1\n",
        "d": 'esc"aped #1',
    }
    assert "# header ${UNSET}" in out
    assert "# trailing ${UNSET}" in out


def test_toml_lines_are_counted_through_multiline_strings() -> None:
    text = 'a = """\none\ntwo"""\nb = """x\\\n  y"""\nc = "${MISSING}"\n'
    with pytest.raises(MissingVariable) as info:
        interpolate(text, {}, syntax="toml")
    assert info.value.line == 6


def test_toml_refuses_what_a_string_cannot_hold() -> None:
    with pytest.raises(InterpolationError, match="single-quoted") as info:
        interpolate("\na = '${Q}'\n", {"Q": "it's"}, syntax="toml")
    assert (info.value.line, info.value.variable) == (2, "Q")
    with pytest.raises(InterpolationError, match="literal"):
        interpolate("a = '''${Q}'''", {"Q": "a'''b"}, syntax="toml")
    with pytest.raises(InterpolationError, match="line break"):
        interpolate("a = ${Q}", {"Q": "1\nb = 2"}, syntax="toml")


# -- secrets ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("DB_PASSWORD", True),
        ("db_passwd", True),
        ("API_TOKEN", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("GOOGLE_CREDENTIALS", True),
        ("PRIVATE_KEY", True),
        ("HOST", False),
        ("REDIS_URL", False),
        ("STREAM", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_url_passwords() -> None:
    text = (
        "postgres://app:s3cr%40t@db:5432/x redis://:onlypw@r:6379 "
        "amqp://guest@h/ nats://h:4222 'mysql://u:p@ss@h/db' https://a:b@c/?q=1"
    )
    assert url_passwords(text) == ["s3cr%40t", "onlypw", "p@ss", "b"]
    # a value on its own: quotes are part of the password
    assert url_passwords("redis://u:it's\"x@h:1/0", value=True) == ["it's\"x"]
    assert url_passwords("redis://u:it's\"x@h:1/0") == []


def test_collect_secrets_from_names_listed_variables_defaults_and_urls() -> None:
    env = {
        "DB_PASSWORD": "hunter22",
        "HOST": "db1",
        "EXTRA": "listed-value",
        "UNUSED_LISTED": "also-secret",
    }
    text = (
        "a = ${DB_PASSWORD}\n"
        "b = ${HOST}\n"
        "c = ${EXTRA}\n"
        "d = ${API_TOKEN:-dev-token}\n"
        "e = postgres://app:lit%2Fpw@db/x\n"
    )
    done = interpolate(text, env)
    red = collect_secrets(done, env, secret_env=["EXTRA", "UNUSED_LISTED"])
    assert len(red) == 5
    line = "hunter22 db1 listed-value dev-token lit%2Fpw lit/pw also-secret"
    assert red.redact(line) == "*** db1 *** *** *** *** ***"
    assert "hunter22" not in repr(red)
    assert repr(red) == "Redactor(5 secrets)"
    assert "hunter22" not in repr(done)


def test_redactor_forms_and_order() -> None:
    red = Redactor(['p"w\\1', "abc", "abcdef", "", "a b/c"])
    assert len(red) == 4  # the empty one is ignored
    assert red.redact("abcdef abc") == "*** ***"  # the longer secret is hidden whole
    assert red.redact('json "p\\"w\\\\1" repr p"w\\\\1 raw p"w\\1') == 'json "***" repr *** raw ***'
    assert red.redact("url a%20b%2Fc and a b/c") == "url *** and ***"
    assert Redactor().redact("nothing to hide") == "nothing to hide"
    assert not Redactor([""])


# -- options ----------------------------------------------------------------------------------


def test_defaults() -> None:
    opts = resolve_options(None, {})
    assert opts == EdgePlaneOptions()
    assert opts.metrics_addr == DEFAULT_METRICS_ADDR == ("127.0.0.1", 9464)
    assert (opts.log_format, opts.log_level, opts.progress) == ("text", "info", "auto")
    assert (opts.restart, opts.max_restarts, opts.drain_timeout) == ("restart", 5, 30.0)
    assert opts.name is None
    assert opts.secret_env == ()


ENV = {
    "EDGEPLANE_NAME": "from-env",
    "EDGEPLANE_METRICS_ADDR": "0.0.0.0:9100",
    "EDGEPLANE_LOG_FORMAT": "JSON",
    "EDGEPLANE_LOG_LEVEL": "debug",
    "EDGEPLANE_DRAIN_TIMEOUT": "12.5",
    "EDGEPLANE_RESTART": "fail",
    "EDGEPLANE_MAX_RESTARTS": "0",
    "EDGEPLANE_PROGRESS": "off",
    "EDGEPLANE_SECRET_ENV": "A_VAR, B_VAR",
}


def test_environment_over_defaults() -> None:
    opts = resolve_options({}, ENV)
    assert opts == EdgePlaneOptions(
        name="from-env",
        metrics_addr=("0.0.0.0", 9100),
        log_format="json",
        log_level="debug",
        drain_timeout=12.5,
        restart="fail",
        max_restarts=0,
        progress="off",
        secret_env=("A_VAR", "B_VAR"),
    )


def test_flags_over_environment() -> None:
    parser = argparse.ArgumentParser()
    add_option_arguments(parser)
    args = parser.parse_args(
        [
            "--name",
            "from-flag",
            "--metrics-addr",
            "off",
            "--log-format",
            "text",
            "--log-level",
            "WARNING",
            "--drain-timeout",
            "3",
            "--restart",
            "restart",
            "--max-restarts",
            "7",
            "--progress",
            "--secret-env",
            "C_VAR",
            "--secret-env",
            "A_VAR",
        ]
    )
    opts = resolve_options(args, ENV)
    assert opts == EdgePlaneOptions(
        name="from-flag",
        metrics_addr=None,
        log_format="text",
        log_level="warning",
        drain_timeout=3.0,
        restart="restart",
        max_restarts=7,
        progress="on",
        secret_env=("A_VAR", "B_VAR", "C_VAR"),  # secrets add up, never dropped
    )
    # a flag not given falls back to its variable
    only_one = parser.parse_args(["--no-progress"])
    opts = resolve_options(only_one, ENV)
    assert opts.progress == "off"
    assert opts.name == "from-env"
    assert opts.metrics_addr == ("0.0.0.0", 9100)


def test_ipv6_and_port_zero() -> None:
    assert resolve_options({"metrics_addr": "[::1]:0"}, {}).metrics_addr == ("::1", 0)


@pytest.mark.parametrize(
    ("source", "field", "value", "match"),
    [
        ("env", "EDGEPLANE_LOG_FORMAT", "xml", "EDGEPLANE_LOG_FORMAT='xml': use one of text, json"),
        ("flag", "log_format", "xml", "--log-format='xml': use one of text, json"),
        ("env", "EDGEPLANE_METRICS_ADDR", "9464", "give HOST:PORT"),
        ("flag", "metrics_addr", "h:99999", "give HOST:PORT"),
        ("env", "EDGEPLANE_DRAIN_TIMEOUT", "-1", "seconds > 0"),
        ("env", "EDGEPLANE_DRAIN_TIMEOUT", "nan", "seconds > 0"),
        ("env", "EDGEPLANE_MAX_RESTARTS", "two", "whole number"),
        ("env", "EDGEPLANE_NAME", "has space", "run name"),
        ("env", "EDGEPLANE_RESTART", "never", "use one of restart, fail"),
        ("env", "EDGEPLANE_SECRET_ENV", "OK,1BAD", "'1BAD' is not a variable name"),
    ],
)
def test_bad_values_name_their_source(source: str, field: str, value: str, match: str) -> None:
    with pytest.raises(OptionError, match=match) as info:
        if source == "env":
            resolve_options({}, {field: value})
        else:
            resolve_options({field: value}, {})
    assert info.value.option.startswith("EDGEPLANE_" if source == "env" else "--")


def test_environment_help_lists_every_variable() -> None:
    text = environment_help()
    for opt in OPTIONS:
        assert opt.env in text
        assert opt.flag in text
    assert "EDGEPLANE_METRICS_ADDR" in text and "127.0.0.1:9464" in text
    assert "${VAR:-default}" in text


# -- loading a pipeline -----------------------------------------------------------------------

SPEC = """\
byteor.spec = 1
pipeline.name = orders
pipeline.target = lane_graph
lane.raw.kind = events
lane.raw.capacity = 1024
lane.raw.slot_bytes = 256
source.in.adapter = redis
source.in.out = raw
source.in.param.url = redis://app:{pw}@127.0.0.1:6379/0
source.in.param.stream = {stream}
sink.out.adapter = file
sink.out.in = raw
sink.out.param.path = /tmp/orders.ndjson
"""

PLAN = """\
name = "orders"  # ${{NOT_SET}} in a comment
[sources.in]
adapter = "redis"
params = {{ url = "redis://app:{pw}@127.0.0.1:6379/0", stream = "{stream}" }}

[sinks.out]
adapter = "file"
inputs = ["in"]
params = {{ path = "/tmp/orders.ndjson" }}
"""


def test_load_spec_interpolated_equals_the_literal_spec(tmp_path: Path) -> None:
    path = tmp_path / "orders.spec"
    path.write_text(SPEC.format(pw="${REDIS_PASSWORD}", stream="${STREAM:-orders}"))
    loaded = load_pipeline(str(path), {"REDIS_PASSWORD": "s3cret!"})
    literal = SPEC.format(pw="s3cret!", stream="orders")
    assert loaded.kind == "spec"
    assert loaded.spec_hash == canonical_hash(literal)
    assert loaded.spec.sources["in"].params["url"] == "redis://app:s3cret!@127.0.0.1:6379/0"
    assert loaded.variables == ("REDIS_PASSWORD", "STREAM")
    assert loaded.source_text == path.read_text()
    assert loaded.redactor.redact(str(loaded.spec.sources["in"].params)) == (
        "{'url': 'redis://app:***@127.0.0.1:6379/0', 'stream': 'orders'}"
    )
    assert "s3cret" not in repr(loaded)


def test_load_plan_finds_url_passwords_as_the_adapter_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "orders.toml"
    # not a secret name: found because it is a URL's password, after TOML unescaping
    path.write_text(PLAN.format(pw="${REDIS_AUTH}", stream="${STREAM}"))
    loaded = load_pipeline(str(path), {"REDIS_AUTH": 'q"uo\\te', "STREAM": "s1"})
    assert loaded.kind == "plan"
    url = loaded.spec.sources["in"].params["url"]
    assert url == 'redis://app:q"uo\\te@127.0.0.1:6379/0'
    assert loaded.redactor.redact(url) == "redis://app:***@127.0.0.1:6379/0"
    assert loaded.spec.sources["in"].params["stream"] == "s1"


def test_bad_pipeline_is_one_redacted_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    text = PLAN.format(pw="${DB_PASSWORD}", stream="orders").replace(
        'stream = "orders"', 'stream = "orders", bogus = "${DB_PASSWORD}"'
    )
    path.write_text(text)
    with pytest.raises(PipelineFileError) as info:
        load_pipeline(str(path), {"DB_PASSWORD": "hunter22"})
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:4: error AD501 [source.in.param.bogus]")
    assert "hunter22" not in message
    assert info.value.line == 4


def test_spec_error_count_and_redaction(tmp_path: Path) -> None:
    path = tmp_path / "bad.spec"
    text = SPEC.format(pw="${TOKEN}", stream="s") + "lane.raw.capacity2 = ${TOKEN}\nnonsense\n"
    path.write_text(text)
    with pytest.raises(PipelineFileError) as info:
        load_pipeline(str(path), {"TOKEN": "tok-123"})
    message = str(info.value)
    assert "\n" not in message
    assert "tok-123" not in message
    assert "more error" in message
    assert f"edgeplane validate {path}" in message


def test_unreadable_and_missing_variable(tmp_path: Path) -> None:
    with pytest.raises(PipelineFileError, match="no such file"):
        load_pipeline(str(tmp_path / "nope.spec"), {})
    with pytest.raises(PipelineFileError, match="is a directory"):
        load_pipeline(str(tmp_path), {})
    binary = tmp_path / "bin.spec"
    binary.write_bytes(b"a = \xff\n")
    with pytest.raises(PipelineFileError, match="not UTF-8"):
        load_pipeline(str(binary), {})
    path = tmp_path / "orders.spec"
    path.write_text(SPEC.format(pw="${REDIS_PASSWORD}", stream="x"))
    with pytest.raises(MissingVariable) as info:
        load_pipeline(str(path), {})
    assert (info.value.line, info.value.variable) == (9, "REDIS_PASSWORD")
