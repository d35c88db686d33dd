"""verify.registry: one registry of Algorithm and Command entries, builtins and installed plug-ins alike.

The plug-in tests install a tiny package the way pip leaves one: a module plus a ``*.dist-info`` folder
(METADATA, entry_points.txt) on the sys.path of a subprocess, found by importlib.metadata."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from verify import registry
from verify.interface import Algorithm, Command, Options

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_ORDER = ("gd", "newton", "copy", "representation", "ar", "decoder-gd", "cot", "linear-gd", "halting",
                 "subleq", "bfs", "dfs", "dijkstra", "symbolic")

PLUGIN = '''
import argparse, dataclasses
import numpy as np
from richardson import ALGORITHM, richardson_construction, richardson_reference
from constructions.api import Temperature
from verify.emulate import emulate
from verify.interface import ArgumentError, Command, Options

GD_AGAIN = dataclasses.replace(ALGORITHM, name="gd")

def _arguments(p):
    p.add_argument("--d", type=int, default=3)
    p.add_argument("--theta", type=float, default=1e-4)

def _run(args):
    """Emulated Richardson after 20 loops against numpy: prints the relative error, 0 if below 1e-6."""
    if not args.theta > 0:
        raise ArgumentError(f"argument --theta: expected a float > 0, got {args.theta!r}")
    o = Options(d=args.d, problems=2)
    p = ALGORITHM.draw(np.random.default_rng(0), o)
    omega = ALGORITHM.choose_step(p)
    con = richardson_construction(args.d, omega, Temperature(0.0, args.theta / np.abs(p.x).max()))
    emu, ref = emulate(con, p, 20, "float64"), richardson_reference(p, 20, omega)
    err = np.abs(emu.predictions[:, -1] - ref.predictions[:, -1]).max() / np.abs(ref.predictions[:, -1]).max()
    print(f"richardson-check: d={args.d}, theta={args.theta:g}, relative error {err:.2e}")
    return 0 if err < 1e-6 else 1

CHECK = Command(name="richardson-check", summary="one emulated Richardson run against numpy (a Command)",
                add_arguments=_arguments, run=_run)
'''
ENTRY_POINTS = {
    "richardson": "tiny_plugin:ALGORITHM",
    "richardson-check": "tiny_plugin:CHECK",
    "broken-import": "no_such_module_for_verify:THING",
    "not-an-entry": "json:dumps",
    "misnamed": "tiny_plugin:CHECK",
    "gd": "tiny_plugin:GD_AGAIN",
}


def install(site: Path, entries: dict[str, str]) -> dict[str, str]:
    """The tiny package and its metadata in ``site``; the environment for a subprocess that sees it."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "tiny_plugin.py").write_text(PLUGIN)
    info = site / "tiny_plugin-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.GROUP}]\n"
                                          + "".join(f"{k} = {v}\n" for k, v in entries.items()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT), str(ROOT / "docs" / "examples")]),
               OMP_NUM_THREADS="1")
    return env


def cli(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "verify", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


def test_builtins_in_order_of_both_kinds():
    names = registry.names()
    assert names[:len(BUILTIN_ORDER)] == BUILTIN_ORDER
    assert all(registry.origin(n) == "builtin" for n in BUILTIN_ORDER)
    assert isinstance(registry.get("symbolic"), Command) and isinstance(registry.get("newton"), Algorithm)
    assert "symbolic" not in registry.algorithms() and "newton" in registry.algorithms()


def test_get_register_and_bad_entries_name_the_problem():
    with pytest.raises(ValueError, match="name='nope' is invalid: expected one of gd, newton"):
        registry.get("nope")
    with pytest.raises(ValueError, match="'gd' is taken \\(by builtin\\)"):
        registry.register(registry.get("gd"))
    with pytest.raises(ValueError, match="expected a verify.interface.Algorithm or Command, got builtins.dict"):
        registry.register({"name": "x"})
    with pytest.raises(ValueError, match="name='-x' is invalid"):
        registry.register(Command("-x", "s", lambda p: None, lambda a: 0))
    with pytest.raises(ValueError, match="was not added by register"):
        registry.unregister("gd")


def test_no_algorithm_module_imports_the_registry_or_another_algorithm_module():
    """The former cycle (algorithms <-> algorithms_representation / algorithms_decoder) is gone: the
    algorithm modules import only ``interface`` and the helpers; the registry imports them by name."""
    mods = {"algorithms", "algorithms_representation", "algorithms_decoder", "commands", "registry", "cli"}
    for name in ("algorithms", "algorithms_representation", "algorithms_decoder", "commands", "interface"):
        tree = ast.parse((ROOT / "verify" / f"{name}.py").read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        imported = {a.name for n in top if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module is None
                    for a in n.names} | {n.module for n in top if isinstance(n, ast.ImportFrom) and n.level == 1}
        assert not (imported & mods - {name}), (name, imported & mods)


def test_importing_the_registry_loads_no_algorithm():
    code = "import sys, verify.registry; print(sorted(m for m in sys.modules if m.startswith('verify.algo')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
    assert out.strip() == "[]"


def test_installed_plugin_runs_from_the_cli_with_every_standard_output(tmp_path):
    env = install(tmp_path / "site", {k: ENTRY_POINTS[k] for k in ("richardson", "richardson-check")})
    help_ = cli(env, "--help")
    assert help_.returncode == 0 and help_.stderr == ""
    listed = help_.stdout.replace("\n", " ")
    for name in BUILTIN_ORDER + ("richardson", "richardson-check"):
        assert f" {name} " in listed
    assert "Richardson iteration x <- x + omega" in listed and "(a Command)" in listed
    out = tmp_path / "out"
    run = cli(env, "richardson", "--iters", "6", "--d", "3", "--problems", "2", "--dtype", "float64",
              "--json", f"{out}.json", "--plot", f"{out}.png", "--show-layout", f"{out}-layout.png")
    assert run.returncode == 0, run.stderr
    assert "configuration: algorithm=richardson" in run.stdout and "verdict:" in run.stdout
    assert "float64 odd+mirror: the prediction error falls as theta^2.0" in run.stdout
    saved = json.loads(Path(f"{out}.json").read_text())
    assert saved["config"]["algorithm"] == "richardson" and saved["rows"] and saved["verdict"]
    assert Path(f"{out}.png").stat().st_size > 0 and Path(f"{out}-layout.png").stat().st_size > 0
    check = cli(env, "richardson-check", "--d", "4")
    assert check.returncode == 0 and check.stdout.startswith("richardson-check: d=4, theta=0.0001")
    bad = cli(env, "richardson-check", "--theta", "-1")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "argument --theta" in bad.stderr


def test_broken_plugins_warn_once_each_and_leave_the_builtins_alone(tmp_path):
    env = install(tmp_path / "site", ENTRY_POINTS)
    help_ = cli(env, "--help")
    assert help_.returncode == 0
    lines = help_.stderr.splitlines()
    assert len(lines) == 4 and all(l.startswith("python -m verify: warning: entry point ") for l in lines)
    why = {l.split("entry point ")[1].split(" ")[0]: l for l in lines}
    assert "No module named 'no_such_module_for_verify'" in why["broken-import"]
    assert "expected a verify.interface.Algorithm or Command, got builtins.function" in why["not-an-entry"]
    assert "holds an entry named 'richardson-check'" in why["misnamed"]
    assert "the name 'gd' is taken by builtin" in why["gd"] and "tiny-plugin" in why["gd"]
    assert " richardson " in help_.stdout.replace("\n", " ") and "broken-import" not in help_.stdout
    asked = cli(env, "broken-import", "--iters", "1")
    assert asked.returncode == 2 and asked.stderr.count("\n") == 1
    assert asked.stderr.startswith("python -m verify: error: argument ALGORITHM: entry point broken-import = ")
    gd = cli(env, "gd", "--iters", "1", "--N", "4", "--d", "2", "--problems", "2", "--dtype", "float64", "--quiet")
    assert gd.returncode == 0 and "configuration: algorithm=gd, N=4" in gd.stdout


def test_an_algorithm_with_options_of_its_own_gets_them_beside_the_standard_ones(capsys):
    """``Algorithm.add_arguments``: the values reach draw/build as ``opts.extra`` and the configuration."""
    import dataclasses

    import numpy as np

    from richardson import ALGORITHM
    from verify.cli import main

    seen = []

    def draw(rng, o):
        seen.append(o.extra["scale"])
        p = ALGORITHM.draw(rng, o)
        return type(p)(p.x * o.extra["scale"], p.y, p.x_test, p.y_test)

    def add(parser):
        parser.add_argument("--scale", type=float, default=1.0, help="multiplies A")

    registry.register(dataclasses.replace(ALGORITHM, name="richardson-scaled", draw=draw, add_arguments=add))
    try:
        code = main(["richardson-scaled", "--iters", "2", "--d", "3", "--problems", "2", "--dtype", "float64",
                     "--scale", "2.5"])          # not --quiet: the score-bound line is wanted
        out = capsys.readouterr().out
        bad = main(["richardson-scaled", "--scale", "x"])
        err = capsys.readouterr().err
    finally:
        registry.unregister("richardson-scaled")
    assert code == 0 and seen and set(seen) == {2.5} and "scale=2.5" in out.splitlines()[0]
    p = ALGORITHM.draw(np.random.default_rng(0), Options(d=3, problems=2))
    assert f"loop={2.5 * np.abs(p.x).max():.4g}" in out      # the score bound saw the scaled A
    assert bad == 2 and err.count("\n") == 1 and "argument --scale" in err
