import pytest

from engine.config import load_job, job_from_dict, parse_override
from engine.errors import ConfigError


def _job(tmp_path, text):
    p = tmp_path / "job.toml"
    p.write_text(text)
    return str(p)


def test_defaults_are_gensims():
    job = job_from_dict({})
    m = job.model
    assert (m.sg, m.hs, m.negative, m.window, m.min_count, m.vector_size, m.epochs) == \
        (0, 0, 5, 5, 5, 100, 5)
    assert (m.alpha, m.min_alpha, m.sample, m.ns_exponent, m.cbow_mean) == \
        (0.025, 0.0001, 1e-3, 0.75, 1)


def test_overrides_and_types(tmp_path):
    job = load_job(_job(tmp_path, "[model]\nsg = 1\nalpha = 1\n"),
                   ["model.window=8", "corpus.path=/x y.txt", "evaluate.analogies=['q.txt']"])
    assert job.model.sg == 1 and job.model.window == 8 and job.model.alpha == 1.0
    assert job.corpus.path == "/x y.txt" and job.evaluate.analogies == ["q.txt"]


@pytest.mark.parametrize("text,msg", [
    ("[model]\nwindw = 3\n", r"\[model\] windw: unknown key"),
    ("[model]\nwindow = -3\n", r"\[model\] window: expected an integer in \[1, 1000\], got -3"),
    ("[model]\nwindow = 2.5\n", r"\[model\] window: expected an integer"),
    ("[model]\nsg = true\n", r"\[model\] sg: expected an integer"),
    ("[model]\nalpha = 0\n", r"\[model\] alpha: expected a number in \(0.0"),
    ("[corpus]\nformat = 'csv'\n", r"\[corpus\] format: expected one of 'auto', 'lines'"),
    ("[modle]\n", r"unknown section \[modle\]"),
    ("[model]\nnegative = 0\n", r"negative: must be > 0 when hs = 0"),
    ("[model\n", r"not valid TOML"),
])
def test_errors_name_the_key(tmp_path, text, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        load_job(_job(tmp_path, text))
    assert "\n" not in str(e.value)


def test_bad_override():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("window=3")
    with pytest.raises(ConfigError, match="missing.toml: job file not found"):
        load_job("missing.toml")


def test_checkpoint_every_takes_a_word_count_written_as_an_integer(tmp_path):
    from engine.word2vec.checkpoint import parse_every

    job = tmp_path / "job.toml"
    job.write_text("[output]\ncheckpoint_every = 1000000\n")
    cfg = load_job(str(job))
    assert cfg.output.checkpoint_every == "1000000"
    assert parse_every(cfg.output.checkpoint_every) == ("words", 1_000_000)
    assert load_job(str(job), ["output.checkpoint_every=5000"]).output.checkpoint_every == "5000"
    assert load_job(str(job), ["output.checkpoint_every=10m"]).output.checkpoint_every == "10m"
    with pytest.raises(ConfigError, match=r"checkpoint_every: expected a time such as "
                                          r"\"10m\" or a word count, got True"):
        load_job(str(job), ["output.checkpoint_every=true"])


def test_every_valid_cluster_setting_is_one_a_node_accepts():
    """The dispatcher sends timeout_seconds + round_seconds + 30 and round_words: at the
    configuration's largest values, a node must still take the job."""
    from engine.cluster.protocol import MAX_JOB_TIMEOUT, MAX_ROUND_WORDS
    from engine.config import ClusterConfig, make_section

    top = make_section(ClusterConfig, {"timeout_seconds": 86400.0, "round_seconds": 600.0,
                                       "round_words": 2**50}, "[cluster]")
    assert top.timeout_seconds + top.round_seconds + 30 <= MAX_JOB_TIMEOUT
    assert top.round_words <= MAX_ROUND_WORDS
    with pytest.raises(ConfigError, match="round_words"):
        make_section(ClusterConfig, {"round_words": 2**50 + 1}, "[cluster]")
