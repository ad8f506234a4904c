"""The command line's bad input: each is one line on stderr and exit status 2, before anything
is trained, and optimizer names are checked against `optimkit.registry`."""

import pytest

from optimkit import cli, registry


def _error(capsys, argv):
  code = cli.main(argv)
  captured = capsys.readouterr()
  assert code == 2, captured
  message = captured.err.strip()
  assert message and "\n" not in message, message  # one line
  assert "Traceback" not in message
  return message


def test_compare_missing_out_directory(capsys, tmp_path):
  out = tmp_path / "no" / "such" / "dir"
  message = _error(capsys, ["compare", "--out", str(out)])
  assert message.startswith("optimkit compare: --out") and "does not exist" in message
  assert not out.parent.exists()  # nothing was created


def test_compare_out_that_is_a_file(capsys, tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  assert "not a directory" in _error(capsys, ["compare", "--out", str(path)])


def test_schedule_missing_out_directory(capsys, tmp_path):
  message = _error(capsys, ["schedule", "cosine", "--peak", "1e-3", "--steps", "10", "--out",
                            str(tmp_path / "missing" / "s.png")])
  assert message.startswith("optimkit schedule: --out") and "does not exist" in message


def test_compare_missing_data_file(capsys, tmp_path):
  message = _error(capsys, ["compare", "--data", str(tmp_path / "corpus.txt"),
                            "--out", str(tmp_path / "out")])
  assert "--data" in message and "no such file" in message


def test_compare_data_too_short(capsys, tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("ab")
  assert "too short" in _error(capsys, ["compare", "--data", str(corpus),
                                        "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("names", ["", " ", "adamw,,lion", "adamw,"])
def test_compare_and_memory_empty_optimizer_name(capsys, tmp_path, names):
  for argv in (["compare", "--optimizers", names, "--out", str(tmp_path / "out")],
               ["memory", "--optimizers", names]):
    assert "empty" in _error(capsys, argv)


@pytest.mark.parametrize("name", ["adamx", "storage", "scale_by_adam", "optimizers", "_build",
                                  "ADAMW"])
def test_names_that_are_not_registered_optimizers(capsys, tmp_path, name):
  """Unknown names, and names of things in optimkit that are not optimizers (a module, a
  primitive, a private helper), are refused with the registry's list of valid names."""
  assert name not in registry.names()
  for argv in (["compare", "--optimizers", f"adamw,{name}", "--out", str(tmp_path / "out")],
               ["compare", "--suite", "--optimizers", name, "--out", str(tmp_path / "out")],
               ["memory", "--optimizers", f"adamw,{name}"],
               ["memory", "--optimizers", f"{name}:8bit"]):
    message = _error(capsys, argv)
    assert repr(name) in message or name in message
    assert "adamw" in message and "lion" in message  # the valid names are listed


def test_memory_accepts_every_registered_name(capsys):
  """The other side of the registry check: a registered optimizer is accepted (one run over
  all of them would be slow; the first few in sorted order and a storage suffix)."""
  names = registry.names()[:3] + ["adamw:8bit"]
  assert cli.main(["memory", "--params", "1e6", "--optimizers", ",".join(names)]) == 0
  out = capsys.readouterr().out
  assert all(name.split(":")[0] in out for name in names)


def test_storage_suffix_only_where_it_means_something(capsys, tmp_path):
  message = _error(capsys, ["compare", "--optimizers", "adamw:8bit", "--out",
                            str(tmp_path / "out")])
  assert "storage suffix" in message
  assert "storage" in _error(capsys, ["memory", "--optimizers", "adamw:9bit"])


@pytest.mark.parametrize("argv, words", [
    (["compare", "--suite", "--steps", "10"], "--steps: not used with --suite"),
    (["compare", "--suite", "--seed", "0"], "--seed: not used with --suite"),
    (["compare", "--suite", "--lr-sweep", "--quick"], "--quick, --lr-sweep: not used"),
    (["compare", "--seeds", "3"], "--seeds: only used with --suite"),
    (["compare", "--budget", "full"], "--budget: only used with --suite"),
    (["compare", "--suite", "--seeds", "0"], "--seeds must be >= 1"),
    (["compare", "--suite", "--tasks", "lm,cifar"], "unknown cifar"),
    (["compare", "--suite", "--tasks", "lm,"], "empty name"),
    (["compare", "--steps", "0"], "--steps must be >= 1"),
])
def test_compare_flag_combinations(capsys, tmp_path, argv, words):
  assert words in _error(capsys, argv + ["--out", str(tmp_path / "out")])
