"""CI's skip check (`conftest.StrictSkips`, on with TAPEGRAD_STRICT_SKIPS=1): a run that skips
a test for a reason other than the GPU fails and names the test; GPU skips pass.

Each case runs pytest in a subprocess on small test files next to a copy of this conftest.
"""
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

NOT_ABOUT_THE_GPU = {      # file: (source, how the strict run lists its skip)
    "test_call.py": ("import pytest\n"
                     "def test_a():\n    pytest.skip('torch is not installed')\n",
                     "test_call.py::test_a: torch is not installed"),
    "test_mark.py": ("import pytest\n"
                     "@pytest.mark.skipif(True, reason='not on this platform')\n"
                     "def test_a():\n    pass\n",
                     "test_mark.py::test_a: not on this platform"),
    "test_module.py": ("import pytest\n"
                       "pytest.importorskip('no_such_module_anywhere')\n"
                       "def test_a():\n    pass\n",
                       "test_module.py: could not import 'no_such_module_anywhere'"),
}

GPU_ONLY = {
    "test_gpu.py": "import pytest\n"
                   "def test_a():\n    pytest.skip('needs a real CUDA GPU')\n"
                   "@pytest.mark.skipif(True, reason='runs only without a CUDA GPU (one is)')\n"
                   "def test_b():\n    pass\n"
                   "def test_c():\n    pass\n",
}


def run_pytest(tmp_path, files, strict):
    shutil.copy(os.path.join(HERE, "conftest.py"), tmp_path / "conftest.py")
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "TAPEGRAD_STRICT_SKIPS"}
    if strict:
        env["TAPEGRAD_STRICT_SKIPS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *files], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def everything():
    return {**{name: case[0] for name, case in NOT_ABOUT_THE_GPU.items()}, **GPU_ONLY}


def test_skips_not_about_the_gpu_fail_the_strict_run(tmp_path):
    proc = run_pytest(tmp_path, everything(), strict=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    listed = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED ")]
    assert len(listed) == 3
    for _, shown in NOT_ABOUT_THE_GPU.values():
        assert sum(line.startswith(f"SKIPPED {shown}") for line in listed) == 1, listed
    assert "3 test(s) skipped for a reason other than the GPU" in proc.stdout


def test_gpu_skips_pass_the_strict_run(tmp_path):
    proc = run_pytest(tmp_path, GPU_ONLY, strict=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed, 2 skipped" in proc.stdout
    assert "skips not about the GPU" not in proc.stdout


def test_without_the_variable_skips_pass(tmp_path):
    proc = run_pytest(tmp_path, everything(), strict=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skips not about the GPU" not in proc.stdout
