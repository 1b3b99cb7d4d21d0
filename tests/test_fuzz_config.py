"""Property-based: whatever a YAML config holds, train.py's config reader and pre-flight either
accept it or refuse it with the project's one-line UserError; never another exception."""
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from timm_multilabel import UserError
from timm_multilabel.training.args import build_parser, check_args, parse_args

KEYS = sorted(a.dest for a in build_parser()._actions if a.dest not in ('help', 'config'))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable, max_size=12))
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(string.ascii_letters, max_size=5),
                                                                          scalars, max_size=2))
configs = st.dictionaries(st.sampled_from(KEYS + ['not_a_flag']), values, max_size=4)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cfg=configs)
def test_any_config_is_accepted_or_refused_in_one_line(tmp_path, cfg):
    path = tmp_path / 'c.yaml'
    path.write_text(yaml.safe_dump(cfg))
    try:
        args, text = parse_args(['-c', str(path), '--data-dir', str(tmp_path)])
        check_args(args)
    except UserError as e:
        assert '\n' not in str(e).strip(), str(e)
        return
    yaml.safe_load(text)  # the args.yaml a run would write reads back


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(string.printable, max_size=80))
def test_any_file_as_config_is_accepted_or_refused_in_one_line(tmp_path, text):
    path = tmp_path / 'c.yaml'
    path.write_text(text)
    try:
        args, _ = parse_args(['-c', str(path), '--data-dir', str(tmp_path)])
        check_args(args)
    except UserError as e:
        assert '\n' not in str(e).strip(), str(e)
