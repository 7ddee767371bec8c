import subprocess
import sys

import pytest

from nemo_latent_thoughts.cli import build_parser, main


def run(*args, check=False):
    return subprocess.run([sys.executable, "-m", "nemo_latent_thoughts.cli", *args],
                          capture_output=True, text=True, check=check)


def test_help_for_every_subcommand():
    assert "COMMAND" in run("--help", check=True).stdout
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert {"config", "em", "eval", "report", "teacher"} <= set(subcommands)
    for name in subcommands:
        out = run(name, "--help")
        assert out.returncode == 0, name
        expected = {"report": "RUN_DIR", "em": "EM_COMMAND", "init-base": "HF_DIR OUT_DIR"}.get(name, "KEY=VALUE")
        assert expected in out.stdout, name
    assert "KEY=VALUE" in run("em", "run", "--help", check=True).stdout
    assert "RUN_DIR" in run("em", "status", "--help", check=True).stdout


def test_console_script_is_installed():
    import shutil

    nlt = shutil.which("nlt") or str(__import__("pathlib").Path(sys.executable).parent / "nlt")
    out = subprocess.run([nlt, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "nlt" in out.stdout


def test_config_prints_resolved_yaml_with_overrides(capsys):
    assert main(["config", "synthetic.num_docs=7"]) == 0
    assert "num_docs: 7" in capsys.readouterr().out


def test_errors_are_one_line_with_nonzero_exit(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("synthetic:\n  nmu_docs: 1\n")
    out = run("config", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "synthetic.nmu_docs: unknown key" in out.stderr and "Traceback" not in out.stderr


def test_debug_shows_the_traceback(tmp_path):
    out = run("--debug", "config", str(tmp_path / "missing.yaml"))
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_unexpected_exceptions_are_one_line(monkeypatch, capsys):
    import nemo_latent_thoughts.config as config

    monkeypatch.setattr(config, "load_config", lambda *a, **k: 1 / 0)
    assert main(["config"]) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError" in err and "--debug" in err and err.count("\n") == 1


def test_docs_lists_keys(capsys):
    assert main(["config", "--docs"]) == 0
    assert "synthetic.num_docs: int = 200" in capsys.readouterr().out


@pytest.mark.parametrize("module", ["nemo_latent_thoughts", "nemo_latent_thoughts.cli",
                                    "nemo_latent_thoughts.config", "nemo_latent_thoughts.testing",
                                    "nemo_latent_thoughts.nemo.export", "nemo_latent_thoughts.launch.slurm"])
def test_import_pulls_no_heavy_optional_modules(module):
    code = (f"import sys, {module}; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('nemo', 'nemo_run', 'tensorrt_llm', 'transformer_engine', 'megatron')]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
