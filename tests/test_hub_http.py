"""Hub round trips over HTTP: a fake Hub on 127.0.0.1 (tests/hub_server.py) takes what huggingface_hub's
upload path sends (create repo, preupload, LFS batch + PUT + verify, NDJSON commit) and serves what its
download path asks (repo info, tree, paths-info, resolve with ETag / X-Repo-Commit / ranges).

Clients run in subprocesses with HF_ENDPOINT pointing at the server: huggingface_hub and datasets read
HF_ENDPOINT (and the offline switches) once, at import, so a fresh interpreter is the one way to point
them elsewhere without patching library state; it also keeps this process offline (CI runs with
HF_HUB_OFFLINE=1) and its caches untouched. Each subprocess does several round trips and writes what it
read back to files; the tests compare them with what was pushed. Nothing leaves 127.0.0.1.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

timm = pytest.importorskip('timm')
pytest.importorskip('datasets')
from hub_server import FakeHub  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from timm_multilabel.errors import UserError  # noqa: E402
from timm_multilabel.hub import checkpoint_label_names, export_checkpoint, save_model_folder  # noqa: E402
from timm_multilabel.relabel.writer import write_maps_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OWNER = 'hf_acme_write'  # acme's token: writes acme/*
OTHER = 'hf_zed_read'  # zed's token: valid, but no access to acme's private repos
NUM_CLASSES = 5
LABELS = ['cat', 'dog', 'bird', 'fish', 'frog']
DATA_CONFIG = dict(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), input_size=(3, 40, 40), interpolation='bicubic',
                   crop_pct=0.8)
ARGS = {'model': 'test_resnet', 'num_classes': NUM_CLASSES, 'dataset': 'digits-grid', 'input_size': [3, 40, 40],
        'mean': [0.1, 0.2, 0.3], 'std': [0.4, 0.5, 0.6], 'crop_pct': 0.8, 'interpolation': 'bicubic',
        'mile': True, 'mile_kt': 4, 'mile_ks': 2, 'mile_rho': 0.1, 'eval_metric': 'top1'}
MAP_INFO = dict(annotator='test', input_size=32, map_size=(2, 2), topk=3, dtype='float32', num_classes=10)


def _model(seed=0):
    torch.manual_seed(seed)
    model = timm.create_model('test_resnet', num_classes=NUM_CLASSES)
    with torch.no_grad():  # non-trivial batch-norm statistics: a loader that drops buffers is caught
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _run_folder(path, model):
    """What train.py leaves in --output: checkpoints (args as a dict), summary.json, and its model folder
    (model.safetensors + config.json with the class names + README.md)."""
    path.mkdir(parents=True)
    ckpt = {'epoch': 1, 'arch': 'test_resnet', 'state_dict': model.state_dict(), 'optimizer': {}, 'args': ARGS,
            'metric': 61.5}
    torch.save(ckpt, path / 'model_best.pth.tar')
    torch.save(ckpt, path / 'last.pth.tar')
    (path / 'summary.json').write_text(json.dumps({'metrics': {'top1': 61.5, 'mAP': 40.25}, 'args': ARGS}))
    save_model_folder(model, path, model_name='test_resnet', num_classes=NUM_CLASSES, label_names=LABELS,
                      data_config=DATA_CONFIG, metrics={'top1': 61.5}, method={'name': 'mile', 'kt': 4},
                      dataset='digits-grid', args=ARGS)
    return path


def _maps(n, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(n, 3, 2, 2, generator=g)
    classes = torch.randint(0, 10, (n, 3, 2, 2), generator=g)
    return [f'img/{seed}-{i:03d}' for i in range(n)], scores, classes


def _hub_env(hub, home, token=OWNER):
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_', 'HUGGING_FACE'))}
    env.update({
        'HF_ENDPOINT': hub.url, 'HF_TOKEN': token, 'HF_HOME': str(home), 'HF_HUB_CACHE': str(home / 'hub'),
        'HF_DATASETS_CACHE': str(home / 'datasets'), 'HF_HUB_OFFLINE': '0', 'HF_DATASETS_OFFLINE': '0',
        # no Xet CAS server here: huggingface_hub uploads LFS files with the basic LFS transfer instead
        'HF_HUB_DISABLE_XET': '1', 'HF_HUB_DISABLE_TELEMETRY': '1', 'HF_HUB_DISABLE_PROGRESS_BARS': '1',
        'NO_PROXY': '127.0.0.1,localhost', 'no_proxy': '127.0.0.1,localhost', 'PYTHONUNBUFFERED': '1',
    })
    return env


def _run_client(script, hub, tmp, token=OWNER, timeout=300):
    """Run ``script`` after ``_PRELUDE`` in a fresh interpreter pointed at ``hub``; returns its ``results``."""
    code = _PRELUDE + textwrap.dedent(script) + "(tmp / 'results.json').write_text(json.dumps(results))\n"
    proc = subprocess.run([sys.executable, '-c', code, str(tmp), OWNER, OTHER], cwd=ROOT,
                          env=_hub_env(hub, tmp / 'hf_home', token), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'client failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}'
    results = json.loads((tmp / 'results.json').read_text())
    print('client CPU seconds by phase:', results['cpu'])
    return results


_PRELUDE = textwrap.dedent('''
    import contextlib, io, json, os, sys
    from pathlib import Path
    tmp = Path(sys.argv[1])
    OWNER, OTHER = sys.argv[2:4]
    results = {'cpu': {}}

    def mark(phase):
        """CPU seconds of this process so far, by phase (the tests' timings are read from these)."""
        results['cpu'][phase] = round(sum(os.times()[:2]), 2)

    def cli_main(*argv):
        """timm-multilabel ARGV -> [exit status, stdout, stderr]."""
        from timm_multilabel import cli
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main([str(a) for a in argv])
        return [rc, out.getvalue(), err.getvalue()]

    def error_of(fn):
        """The UserError line of fn(), or the name of any other exception (None: no error)."""
        from timm_multilabel.errors import UserError
        try:
            fn()
        except UserError as e:
            return str(e)
        except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
            return f'NOT A UserError: {type(e).__name__}: {e}'
        return None
''')


@pytest.fixture(scope='module')
def hub():
    with FakeHub(tokens={OWNER: 'acme', OTHER: 'zed'}) as server:
        yield server


# ------------------------------------------------------------------------------------------------
# model folders: export + push, train.py's folder pushed as is, timm reads both back


_MODEL_CLIENT = '''
    import timm, torch
    from safetensors.torch import save_file
    from timm_multilabel.hub import push_model_folder

    # export the run folder (label names from the config.json train.py wrote there) and push it
    mark('model imports')
    results['export'] = cli_main('export', tmp / 'run', tmp / 'hf', '--push-to-hub', 'acme/tiny-mile')
    # train.py --push-to-hub pushes its --output folder, which also holds checkpoints
    results['push_run'] = push_model_folder(tmp / 'run', 'acme/run-private', private=True)
    mark('export+push')
    for name in ('acme/tiny-mile', 'acme/run-private'):
        model = timm.create_model(f'hf-hub:{name}', pretrained=True).eval()
        torch.manual_seed(123)
        x = torch.randn(2, 3, 40, 40)
        with torch.no_grad():
            y = model(x)
        tensors = {'w.' + k: v.contiguous() for k, v in model.state_dict().items()}
        save_file({**tensors, 'x': x, 'y': y}, str(tmp / (name.split('/')[1] + '.safetensors')))
        cfg = model.pretrained_cfg
        results[name] = {'num_classes': model.num_classes, 'label_names': cfg.get('label_names'),
                         'mean': cfg['mean'], 'std': cfg['std'], 'input_size': cfg['input_size']}
    mark('timm reads')
    # our one-line errors: a token of another user, an unknown token
    os.environ['HF_TOKEN'] = OTHER
    results['other_user'] = error_of(lambda: push_model_folder(tmp / 'hf', 'acme/tiny-mile'))
    os.environ['HF_TOKEN'] = 'hf_not_a_token'
    results['bad_token'] = cli_main('export', tmp / 'run', tmp / 'hf2', '--push-to-hub', 'acme/new')
    os.environ['HF_TOKEN'] = OWNER
    mark('model errors')
'''


@pytest.fixture(scope='module')
def round_trip(hub, tmp_path_factory):
    """One client process (one interpreter start) for every round trip: its inputs, its results."""
    tmp = tmp_path_factory.mktemp('http')
    model = _model()
    _run_folder(tmp / 'run', model)
    v1, v2 = _maps(6, seed=1), _maps(3, seed=2)
    write_maps_folder(tmp / 'maps_v1', v1[0], [v1[1:]], MAP_INFO, shard_size=4)  # two shards
    write_maps_folder(tmp / 'maps_v2', v2[0], [v2[1:]], MAP_INFO, shard_size=4)  # one shard
    (tmp / 'ids.json').write_text(json.dumps({'v1': v1[0], 'v2': v2[0]}))
    results = _run_client(_MODEL_CLIENT + _MAPS_CLIENT, hub, tmp)
    return tmp, model, v1, v2, results


@pytest.fixture(scope='module')
def model_round_trip(round_trip):
    tmp, model, _, _, results = round_trip
    return tmp, model, results


def _check_same_model(model, path):
    loaded = load_file(str(path))
    ref = model.state_dict()
    assert {k[2:] for k in loaded if k.startswith('w.')} == set(ref)
    assert all(torch.equal(loaded['w.' + k], ref[k]) for k in ref)
    with torch.no_grad():
        assert torch.equal(model(loaded['x']), loaded['y'])


def test_exported_folder_pushed_and_read_back_by_timm(model_round_trip, hub):
    tmp, model, results = model_round_trip
    rc, out, err = results['export']
    assert rc == 0, err
    assert 'pushed: ' in out and '/acme/tiny-mile/commit/' in out
    _check_same_model(model, tmp / 'tiny-mile.safetensors')
    got = results['acme/tiny-mile']
    assert got['num_classes'] == NUM_CLASSES and got['label_names'] == LABELS
    assert got['mean'] == list(DATA_CONFIG['mean']) and got['input_size'] == [3, 40, 40]
    # what the Hub holds is what export wrote, byte for byte; the weights went through LFS
    files = hub.files('acme/tiny-mile')
    assert sorted(files) == ['.gitattributes', 'README.md', 'config.json', 'model.safetensors']
    for name in ('README.md', 'config.json', 'model.safetensors'):
        assert files[name] == (tmp / 'hf' / name).read_bytes(), name
    assert hub.lfs_paths('acme/tiny-mile') == ['model.safetensors']
    assert hub.requests('PUT', '/_lfs/') and hub.requests('POST', '/acme/tiny-mile.git/info/lfs/objects/batch')
    # and timm downloaded it over HTTP (a fresh cache)
    assert hub.requests('GET', '/acme/tiny-mile/resolve/main/model.safetensors')


def test_train_output_folder_pushed_without_checkpoints(model_round_trip, hub):
    tmp, model, results = model_round_trip
    assert '/acme/run-private/commit/' in results['push_run']
    assert hub.repos[('model', 'acme/run-private')].private
    files = hub.files('acme/run-private')
    assert sorted(files) == ['.gitattributes', 'README.md', 'config.json', 'model.safetensors', 'summary.json']
    assert files['summary.json'] == (tmp / 'run' / 'summary.json').read_bytes()
    # private: read back with the owner's token
    _check_same_model(model, tmp / 'run-private.safetensors')
    assert results['acme/run-private']['label_names'] == LABELS


def test_push_errors_are_one_line(model_round_trip, hub):
    tmp, _, results = model_round_trip
    other = results['other_user']
    assert other.startswith('cannot push to acme/tiny-mile: HTTP 403: ') and 'write access' in other
    assert str(tmp / 'hf') in other and '\n' not in other
    rc, out, err = results['bad_token']
    assert rc == 2
    assert err.strip() == (f'timm-multilabel export: error: cannot push to acme/new: HTTP 401: Invalid credentials '
                           f'in Authorization header; the model folder {tmp / "hf2"} is complete, push it later')
    assert (tmp / 'hf2' / 'model.safetensors').is_file()  # the folder was written before the push
    assert ('model', 'acme/new') not in hub.repos


# ------------------------------------------------------------------------------------------------
# label maps: push-maps, a second version, load_label_maps (also at the first commit), datasets


_MAPS_CLIENT = '''
    import datasets
    import torch
    from safetensors.torch import save_file
    from timm_multilabel.relabel.store import load_label_maps

    mark('maps imports')
    results['v1'] = cli_main('push-maps', tmp / 'maps_v1', 'acme/maps')
    results['v2'] = cli_main('push-maps', tmp / 'maps_v2', 'acme/maps')
    v1_commit = results['v1'][1].strip().rsplit('/', 1)[-1]
    mark('push-maps x2')
    ids = json.loads((tmp / 'ids.json').read_text())
    tensors = {}
    for key, revision in (('main', None), ('v1', v1_commit)):
        store = load_label_maps('acme/maps', revision=revision, progress=False)
        wanted = ids['v2' if key == 'main' else 'v1']
        results[f'ids_{key}'] = sorted(store.image_ids)
        tensors[f'{key}.scores'], tensors[f'{key}.classes'] = store.get_batch(wanted)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / 'maps.safetensors'))

    mark('load_label_maps x2')

    def rows(ds):
        return sorted(({k: v for k, v in r.items()} for r in ds), key=lambda r: r['image_id'])
    results['rows_hub'] = rows(datasets.load_dataset('acme/maps', split='train'))
    results['rows_stream'] = rows(datasets.load_dataset('acme/maps', split='train', streaming=True))
    results['rows_local'] = rows(datasets.load_dataset(str(tmp / 'maps_v2'), split='train'))

    # private maps and our one-line errors
    mark('datasets x3')
    # (others first: once the owner has it in the cache, huggingface_hub serves it from there)
    results['private'] = cli_main('push-maps', tmp / 'maps_v1', 'acme/private-maps', '--private')
    results['private_other'] = error_of(lambda: load_label_maps('acme/private-maps', token=OTHER))
    results['private_anonymous'] = error_of(lambda: load_label_maps('acme/private-maps', token=False))
    results['private_owner'] = error_of(lambda: load_label_maps('acme/private-maps', progress=False))
    results['bad_revision'] = error_of(lambda: load_label_maps('acme/maps', revision='v9'))
    # (a repo not in the cache: with one there, huggingface_hub serves it after the 401)
    results['load_bad_token'] = error_of(lambda: load_label_maps('acme/unseen-maps', token='hf_not_a_token'))
    os.environ['HF_TOKEN'] = 'hf_not_a_token'
    results['maps_bad_token'] = cli_main('push-maps', tmp / 'maps_v1', 'acme/maps-2')
    os.environ['HF_TOKEN'] = OWNER
    mark('maps errors')
'''


@pytest.fixture(scope='module')
def maps_round_trip(round_trip):
    tmp, _, v1, v2, results = round_trip
    return tmp, v1, v2, results


def test_push_maps_then_load_label_maps_gives_the_same_maps(maps_round_trip, hub):
    tmp, v1, v2, results = maps_round_trip
    for key in ('v1', 'v2'):
        rc, out, err = results[key]
        assert rc == 0 and err == '' and '/datasets/acme/maps/commit/' in out, (key, err)
    loaded = load_file(str(tmp / 'maps.safetensors'))
    assert results['ids_main'] == sorted(v2[0]) and results['ids_v1'] == sorted(v1[0])
    for key, (_, scores, classes) in (('main', v2), ('v1', v1)):
        assert torch.equal(loaded[f'{key}.scores'].float(), scores), key
        assert torch.equal(loaded[f'{key}.classes'].long(), classes), key
    # the second push replaced the shards: the first version's second shard is gone from main
    files = hub.files('acme/maps', 'dataset')
    shards = sorted(p for p in files if p.startswith('data/'))
    assert shards == [p.relative_to(tmp / 'maps_v2').as_posix() for p in sorted((tmp / 'maps_v2' / 'data').iterdir())]
    assert len(shards) == 1 and files['README.md'] == (tmp / 'maps_v2' / 'README.md').read_bytes()
    assert hub.lfs_paths('acme/maps', 'dataset') == shards


def test_datasets_reads_the_pushed_maps_like_the_local_folder(maps_round_trip, hub):
    _, _, v2, results = maps_round_trip
    local = results['rows_local']
    assert [r['image_id'] for r in local] == sorted(v2[0])
    assert results['rows_hub'] == local
    assert results['rows_stream'] == local
    # streaming read the Parquet shard with byte ranges
    assert any(status == 206 for _, path, status in hub.requests('GET', '/datasets/acme/maps/resolve/'))


def test_private_maps_and_bad_revisions_give_one_line_errors(maps_round_trip, hub):
    tmp, _, _, results = maps_round_trip
    assert results['private'][0] == 0 and hub.repos[('dataset', 'acme/private-maps')].private
    assert results['private_owner'] is None
    for key in ('private_other', 'private_anonymous', 'bad_revision'):
        msg = results[key]
        assert msg is not None and not msg.startswith('NOT A UserError') and '\n' not in msg, (key, msg)
    # the Hub's own words (huggingface_hub's server_message), not only its first line "404 Client Error."
    assert results['private_other'] == ('label maps acme/private-maps: no such folder, and no Hub dataset '
                                        'acme/private-maps you can read (RepositoryNotFoundError: HTTP 404: '
                                        'Repository not found)')
    assert 'RevisionNotFoundError: HTTP 404: Invalid rev id: v9' in results['bad_revision']
    assert results['load_bad_token'] == ('label maps acme/unseen-maps: no such folder, and cannot download the Hub '
                                         'dataset acme/unseen-maps (HfHubHTTPError: HTTP 401: Invalid credentials in '
                                         'Authorization header)')
    rc, _, err = results['maps_bad_token']
    assert rc == 2
    assert err.strip() == (f'timm-multilabel push-maps: error: cannot push {tmp / "maps_v1"} to the Hub dataset '
                           f'acme/maps-2: HfHubHTTPError: HTTP 401: Invalid credentials in Authorization header')
    assert ('dataset', 'acme/maps-2') not in hub.repos


# ------------------------------------------------------------------------------------------------
# a network failure (nothing listening)


@pytest.mark.slow
def test_push_to_an_endpoint_that_is_down_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    folder = save_model_folder(_model(), tmp_path / 'hf', model_name='test_resnet', num_classes=NUM_CLASSES)
    env = {k: v for k, v in os.environ.items() if not k.startswith('HF_')}
    env.update({'HF_ENDPOINT': f'http://127.0.0.1:{port}', 'HF_TOKEN': OWNER, 'HF_HUB_OFFLINE': '0',
                'HF_HOME': str(tmp_path / 'home'), 'NO_PROXY': '127.0.0.1', 'no_proxy': '127.0.0.1'})
    code = 'import sys; from timm_multilabel.hub import push_model_folder; push_model_folder(sys.argv[1], "acme/x")'
    proc = subprocess.run([sys.executable, '-c', code, str(folder)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('timm_multilabel.errors.UserError: cannot push to acme/x: ') and 'push it later' in last


# ------------------------------------------------------------------------------------------------
# export keeps the class names (no Hub involved)


def test_export_keeps_label_names_of_the_run_folder(tmp_path):
    model = _model(1)
    run = _run_folder(tmp_path / 'run', model)
    out = export_checkpoint(run / 'model_best.pth.tar', tmp_path / 'hf')
    assert json.loads((out / 'config.json').read_text())['label_names'] == LABELS
    loaded = timm.create_model(f'local-dir:{out}', pretrained=True)
    assert loaded.pretrained_cfg['label_names'] == LABELS and loaded.num_classes == NUM_CLASSES
    # names given on the command line win over the run folder's
    out2 = export_checkpoint(run / 'last.pth.tar', tmp_path / 'hf2', label_names=list('abcde'))
    assert json.loads((out2 / 'config.json').read_text())['label_names'] == list('abcde')


def test_checkpoint_label_names_sources(tmp_path):
    model = _model(2)
    ckpt = tmp_path / 'ckpt.pth.tar'
    ckpt.write_bytes(b'')  # only its folder matters here
    assert checkpoint_label_names(ckpt, model, {}) is None
    # timm's --class-map: one name per line, line i is class i
    (tmp_path / 'classes.txt').write_text('\n'.join(reversed(LABELS)) + '\n')
    assert checkpoint_label_names(ckpt, model, {'class_map': str(tmp_path / 'classes.txt')}) == LABELS[::-1]
    assert checkpoint_label_names(ckpt, model, {'class_map': str(tmp_path / 'gone.txt')}) is None
    # a config.json of another model (other class count or architecture) is not this checkpoint's
    for config in ({'architecture': 'test_resnet', 'num_classes': 4, 'label_names': LABELS[:4]},
                   {'architecture': 'test_vit', 'num_classes': 5, 'label_names': LABELS}):
        (tmp_path / 'config.json').write_text(json.dumps(config))
        assert checkpoint_label_names(ckpt, model, {}) is None
    # timm's {index: name} form is read in index order
    by_index = {str(4 - i): n for i, n in enumerate(LABELS)}
    (tmp_path / 'config.json').write_text(json.dumps(
        {'architecture': 'test_resnet', 'num_classes': 5, 'label_names': by_index}))
    assert checkpoint_label_names(ckpt, model, {}) == LABELS[::-1]


def test_export_label_names_of_the_wrong_length_still_refused(tmp_path):
    run = _run_folder(tmp_path / 'run', _model(3))
    with pytest.raises(UserError, match='label_names has 2 names for 5 classes'):
        export_checkpoint(run / 'model_best.pth.tar', tmp_path / 'hf', label_names=['a', 'b'])


# ------------------------------------------------------------------------------------------------
# train.py --push-to-hub, end to end


@pytest.mark.slow
def test_train_py_pushes_its_model_folder(hub, tmp_path):
    out = tmp_path / 'out'
    tiny = ['--model', 'test_resnet', '--train-num-samples', '64', '--val-num-samples', '32', '-b', '32',
            '--workers', '0', '--seed', '3', '--epochs', '1']
    proc = subprocess.run([sys.executable, 'train.py', '--dataset', 'digits-grid', *tiny, '--output', str(out),
                           '--push-to-hub', 'acme/digits', '--hub-private'], cwd=ROOT,
                          env=_hub_env(hub, tmp_path / 'hf_home'), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    repo = hub.repos[('model', 'acme/digits')]
    assert repo.private
    files = hub.files('acme/digits')
    assert {'model.safetensors', 'config.json', 'README.md', 'summary.json'} <= set(files)
    assert not [p for p in files if p.endswith('.pth.tar')]  # checkpoints stay local
    for name in files:
        if name != '.gitattributes':
            assert files[name] == (out / name).read_bytes(), name
    config = json.loads(files['config.json'])
    assert config['label_names'] == [str(d) for d in range(10)] and config['num_classes'] == 10
