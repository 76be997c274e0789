"""The S3 secret the cluster fixtures hand out never shows in failure output (no cluster needed)."""

from __future__ import annotations

import json
import os
import pprint
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

from _pytest._io.saferepr import saferepr

from support import Secret, masked

TESTS = Path(__file__).resolve().parent


def _env(secret: str) -> dict[str, str]:
    return masked(
        {
            "KUBECONFIG": "/state/kubeconfig",
            "AWS_ACCESS_KEY_ID": "devcluster",
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_SESSION_TOKEN": secret + "-token",
        }
    )


def test_reprs_of_a_masked_env_hide_the_secret() -> None:
    secret = secrets.token_hex(12)
    env = _env(secret)
    merged = {**os.environ, **env}
    shown = [repr(env), str(env), pprint.pformat(env), saferepr(env), repr(merged), str(list(env.values()))]
    shown += [repr(env["AWS_SECRET_ACCESS_KEY"]), repr(env["AWS_SESSION_TOKEN"])]
    for text in shown:
        assert secret not in text
    assert "'AWS_SECRET_ACCESS_KEY': '***'" in repr(env)
    # Only secret-looking names are masked.
    assert repr(env["KUBECONFIG"]) == "'/state/kubeconfig'"
    assert not isinstance(env["AWS_ACCESS_KEY_ID"], Secret)


def test_a_masked_secret_still_works_as_its_value() -> None:
    secret = secrets.token_hex(12)
    value = _env(secret)["AWS_SECRET_ACCESS_KEY"]
    assert value == secret
    assert str(value) == f"{value}" == secret
    assert value.encode() == os.fsencode(value) == secret.encode()
    assert json.dumps({"k": value}) == json.dumps({"k": secret})


def test_failing_tests_do_not_print_the_secret(tmp_path: Path) -> None:
    """Three tests that fail holding the secret, run with -l (locals) and -vv (full diffs)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_leaky.py").write_text(
        textwrap.dedent(
            """
            import os

            from support import masked

            _SECRET = os.environ.pop("LEAK_CHECK_VALUE")


            def _env():
                return masked({"KUBECONFIG": "/kc", "AWS_SECRET_ACCESS_KEY": _SECRET})


            def _helper(env):
                merged = {**os.environ, **env}
                raise RuntimeError(f"failed with {len(merged)} variables")


            def test_locals():
                env = _env()
                _helper(env)


            def test_compare_the_value():
                env = _env()
                assert env["AWS_SECRET_ACCESS_KEY"] == "something else"


            def test_compare_the_env():
                env = _env()
                assert env == {"KUBECONFIG": "/kc"}
            """
        )
    )
    secret = secrets.token_hex(12)
    env = {
        **os.environ,
        "LEAK_CHECK_VALUE": secret,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent / "hack")]),
    }
    # -p conftest loads tests/conftest.py, with its assert hook, as a plugin of the inner run.
    inner = ["-p", "conftest", "-p", "no:cacheprovider", "-l", "-vv", "-rA", "--rootdir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *inner, "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = (result.stdout + result.stderr).replace(secret, "<THE SECRET>")
    assert "<THE SECRET>" not in output, output
    assert "3 failed" in output, output
    assert "'***'" in output, output
    assert "(a secret's value is not shown)" in output, output
