"""Smoke test of the benchmarks: each script runs in --quick mode, exits 0, prints ratio lines
and writes its JSON. Numbers are not checked (quick mode is too short to be meaningful)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name, tmp_path):
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", f"{name}.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert any(line.startswith("ratio tapegrad/") for line in proc.stdout.splitlines()), \
        proc.stdout
    return proc.stdout, json.loads(out.read_text())


# what the benchmarks import; each imports further modules, some only if they are installed
PEERS = ("numpy", "numba", "scipy", "dask.array", "distributed", "jax", "torch", "autograd",
         "matplotlib")


def test_no_script_shadows_a_module_the_peers_import():
    """A script runs with bench/ first on sys.path, so a script named like a module that a
    peer imports is what the peer gets: `bench/sparse.py` made dask's optional `import sparse`
    load it, and dask.array failed at import. Imports every peer with bench/ first on the path
    and lists the modules that came from bench/."""
    code = ("import importlib, os, sys\n"
            f"bench = {os.path.join(ROOT, 'bench')!r}\n"
            "sys.path.insert(0, bench)\n"
            f"for name in {PEERS!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ImportError:\n"
            "        pass\n"
            "print(sorted(n for n, m in list(sys.modules.items())\n"
            "             if os.path.dirname(getattr(m, '__file__', None) or '') == bench))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == "[]", f"bench/ scripts shadowing modules: {proc.stdout}"


def test_eager_quick(tmp_path):
    stdout, data = run_script("eager", tmp_path)
    assert "tutorial-1" in stdout
    assert data["results"]["tutorial-1 (7 ops + backward)"]["tapegrad"] > 0


@pytest.mark.slow          # about 20-30 s: fresh processes import JAX and compile
def test_transforms_quick(tmp_path):
    stdout, data = run_script("transforms", tmp_path)
    assert "first gradient" in stdout
    assert data["results"]["Rosenbrock n=1000"]["tapegrad"] > 0
    assert data["results"]["logistic regression 10000x100"]["tapegrad"] > 0
    assert data["imports"]["tapegrad"] > 0


@pytest.mark.slow          # three fresh processes, one of them importing JAX
def test_one_gradient_runs_each_library_in_its_own_process():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "one_gradient.py"),
                           "--processes", "1", "--rounds", "1", "--number", "20"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    for library in ("tapegrad", "jax", "hand numba"):
        assert any(line.split()[:1] == [library.split()[0]] and " us " in line
                   for line in lines), proc.stdout
    assert any("tapegrad / jax" in line for line in lines), proc.stdout


def run_faw(tmp_path, *options):
    out = tmp_path / "faw.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "faw.py"), "--quick",
                           "--json", str(out), *options], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout, json.loads(out.read_text())


def test_faw_quick(tmp_path):
    """The FAW graph through tapegrad (value_and_grad and vmap) and the hand-written
    interpreter: verified against each other (faw.py raises otherwise), timed, ratios printed."""
    stdout, data = run_faw(tmp_path, "--n", "200", "--batch", "8", "--columns", "hand numba",
                           "tapegrad", "tapegrad vmap")
    assert "ratio N=200 tapegrad/hand" in stdout
    notes = data["results"]["200"]["notes"]
    assert notes["tape entries"] > 200
    assert data["results"]["200"]["us"]["tapegrad vmap"] > 0


def test_faw_load_quick(tmp_path):
    stdout, data = run_faw(tmp_path, "--load")
    assert "busy/alone" in stdout
    assert data["results"]["busy_us"]["fused B=1,000"] > 0


@pytest.mark.slow          # about 10 s: compiles the njit loops and the fused kernel
def test_njit_quick(tmp_path):
    stdout, data = run_script("njit", tmp_path)
    assert "ratio tapegrad/fused (fused_grad_into)" in stdout and "ratio tapegrad/hand" in stdout
    assert data["per_point_ns"]["compiled (njit loop)"] > 0


def test_interp_costs_runs():
    """bench/interp_costs.py (no --quick: a small graph and single runs) prints each section,
    the programs' rows too."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "interp_costs.py"),
                           "--n", "400", "--number", "1", "--repeat", "1"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    for heading in ("whole tape:", "programs (grad's sweeps", "one-element (resolved)",
                    "one primitive at a time", "mini-interpreters", "hand-written FAW"):
        assert heading in proc.stdout, proc.stdout
