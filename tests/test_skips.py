"""CI's skip check (`conftest.StrictSkips`, on with TAPEGRAD_STRICT_SKIPS=1): a run that skips
a test for a reason other than the GPU fails and names the test; GPU skips pass.

Each case runs pytest in a subprocess on a small test file (and one that passes) next to a
copy of this conftest.
"""
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

CASES = {
    "skip call": ("import pytest\n"
                  "def test_a():\n    pytest.skip('torch is not installed')\n",
                  "test_case.py::test_a: torch is not installed"),
    "skipif mark": ("import pytest\n"
                    "@pytest.mark.skipif(True, reason='not on this platform')\n"
                    "def test_a():\n    pass\n",
                    "test_case.py::test_a: not on this platform"),
    "module importorskip": ("import pytest\n"
                            "pytest.importorskip('no_such_module_anywhere')\n"
                            "def test_a():\n    pass\n",
                            "test_case.py: could not import 'no_such_module_anywhere'"),
}

GPU_ONLY = ("import pytest\n"
            "def test_a():\n    pytest.skip('needs a real CUDA GPU')\n"
            "@pytest.mark.skipif(True, reason='runs only without a CUDA GPU (one is)')\n"
            "def test_b():\n    pass\n")


def run_pytest(tmp_path, source, strict):
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_case.py").write_text(source)
    (tmp_path / "test_other.py").write_text("def test_ok():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "TAPEGRAD_STRICT_SKIPS"}
    if strict:
        env["TAPEGRAD_STRICT_SKIPS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_case.py", "test_other.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", list(CASES))
def test_a_skip_not_about_the_gpu_fails_the_strict_run(case, tmp_path):
    source, listed = CASES[case]
    proc = run_pytest(tmp_path, source, strict=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"SKIPPED {listed}" in proc.stdout
    assert "1 test(s) skipped for a reason other than the GPU" in proc.stdout


@pytest.mark.parametrize("case", list(CASES))
def test_without_the_variable_skips_pass(case, tmp_path):
    proc = run_pytest(tmp_path, CASES[case][0], strict=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skips not about the GPU" not in proc.stdout


def test_gpu_skips_pass_the_strict_run(tmp_path):
    proc = run_pytest(tmp_path, GPU_ONLY, strict=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 2 skipped" in proc.stdout


def test_a_failure_keeps_its_exit_status(tmp_path):
    source = CASES["skip call"][0] + "def test_b():\n    assert False\n"
    proc = run_pytest(tmp_path, source, strict=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed" in proc.stdout and "SKIPPED test_case.py::test_a" in proc.stdout
