"""The `mlt` command line: --help everywhere, config printing, `mlt windows`, clean errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from PIL import Image

from mlt.cli import cli, main


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, (*prefix, name)))
        else:
            out.append((*prefix, name))
    return out


ALL = _commands(cli)


def test_every_expected_command_exists() -> None:
    assert {("data", "inspect"), ("data", "download"), ("windows",), ("config",)} <= set(ALL)


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p) or "mlt")
def test_help_everywhere(capsys, path: tuple[str, ...]) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: mlt") and len(out.splitlines()) > 4


def test_console_script_runs() -> None:
    exe = Path(sys.executable).parent / "mlt"
    res = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert "mlt, version" in res.stdout


def test_config_prints_resolved_yaml(capsys) -> None:
    assert main(["config", "pretrain.epochs=3", "windows.stride_fraction=0.25"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["pretrain"]["epochs"] == 3 and data["windows"]["stride_fraction"] == 0.25


def test_bad_override_is_one_clear_line_not_a_traceback(capsys) -> None:
    assert main(["config", "pretrain.epochs=lots"]) == 2
    err = capsys.readouterr().err
    assert "pretrain.epochs" in err and "'lots'" in err and "Traceback" not in err


def test_windows_draws_and_counts(capsys, tmp_path: Path, tinyvoc_root: Path) -> None:
    out = tmp_path / "w.png"
    assert main(["windows", "000004", "--dataset", str(tinyvoc_root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for label in ("bird", "boat", "diningtable", "train", "background", "dropped (multi-object)"):
        assert label in text  # 000004 holds a boat, a bird, a dining table and a train
    assert "kept for training" in text
    with Image.open(out) as im:
        assert im.width == 3 * 160  # 000004 is 160x128, drawn 3x
    # a denser grid via an override gives more windows
    assert (
        main(
            [
                "windows",
                "000004",
                "--dataset",
                str(tinyvoc_root),
                "--out",
                str(out),
                "windows.stride_fraction=0.2",
            ]
        )
        == 0
    )
    dense = capsys.readouterr().out

    def count(s: str) -> int:
        return int(s.split(" windows over")[0].rsplit(" ", 1)[1])

    assert count(dense) > count(text)


def test_windows_print_config_does_not_run(capsys, tmp_path: Path) -> None:
    assert main(["windows", "000001", "--dataset", str(tmp_path), "--print-config"]) == 0
    assert "stride_fraction" in capsys.readouterr().out


def test_windows_unknown_image_names_it(capsys, tinyvoc_root: Path) -> None:
    assert main(["windows", "999999", "--dataset", str(tinyvoc_root)]) == 2
    err = capsys.readouterr().err
    assert "999999.xml" in err and "missing annotation" in err
