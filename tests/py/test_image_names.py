"""Image names other than plain files, differential against the real qemu-img 7.2:
json:{...} names (nested and dotted keys, backing: null, read-only, driver=file, raw's
offset/size), file:NAME, --image-opts key=value lists (",," escapes, the implied "file"
key, -f conflicts), json: backing names stored in overlays (as libvirt writes them), and
bad names (bad JSON, unknown drivers and options, missing file names, unknown protocols).

Both tools run in one directory with the same arguments, qimg through a symlink named
qemu-img so that message prefixes match; stdout, stderr and the exit code must be equal.
"""

import os

import pytest

import qemu

ENV = {'TZ': 'UTC'}


def both(cwd, *args):
    a = qemu.run(qemu.tool_path('qemu'), *args, cwd=cwd, env=ENV)
    b = qemu.run(qemu.tool_path('qimg'), *args, cwd=cwd, env=ENV)
    return a, b


def assert_same(cwd, *args):
    a, b = both(cwd, *args)
    if 'check' in args and '--output=json' in args and a[0] == b[0] and a[1] and b[1]:
        # qimg's check report adds its own fields ("findings"): compare qemu's ImageCheck
        a = (a[0], qemu.qemu_part(qemu.parse_json(a[1])), a[2])
        b = (b[0], qemu.qemu_part(qemu.parse_json(b[1])), b[2])
    assert b == a, 'qemu-img %s differs' % ' '.join(args)
    return a


@pytest.fixture
def d(tmp_path):
    """b.qcow2 <- t.qcow2 (backing chain with data in both), r.raw, a:b.raw, o3.qcow2 with a
    json: backing name and backing format raw, q.qed, v.vdi."""
    d = str(tmp_path)
    img = lambda *a: qemu.qemu_img(*a, cwd=d, check=True)
    img('create', '-q', '-f', 'qcow2', 'b.qcow2', '1M')
    img('create', '-q', '-f', 'qcow2', '-b', 'b.qcow2', '-F', 'qcow2', 't.qcow2')
    qemu.io(os.path.join(d, 't.qcow2'), 'write -P 1 0 64k', fmt='qcow2', cwd=d)
    qemu.io(os.path.join(d, 'b.qcow2'), 'write -P 2 64k 64k', fmt='qcow2', cwd=d)
    img('create', '-q', '-f', 'raw', 'r.raw', '1M')
    qemu.io(os.path.join(d, 'r.raw'), 'write -P 3 4k 4k', fmt='raw', cwd=d)
    img('create', '-q', '-f', 'raw', './a:b.raw', '1M')
    img('create', '-q', '-f', 'qcow2', '-u', '-b',
        'json:{"driver":"raw","file":{"driver":"file","filename":"r.raw"}}', '-F', 'raw',
        'o3.qcow2', '1M')
    img('create', '-q', '-f', 'qcow2', '-u', '-b',
        'json:{"file":{"driver":"file","filename":"b.qcow2"}}', '-F', 'qcow2',
        'o4.qcow2', '1M')
    img('create', '-q', '-f', 'qcow2', '-u', '-b',
        'json:{"driver":"raw","file":{"driver":"file","filename":"r.raw"}}', '-F', 'qcow2',
        'o5.qcow2', '1M')
    img('create', '-q', '-f', 'qed', 'q.qed', '1M')
    img('create', '-q', '-f', 'vdi', 'v.vdi', '1M')
    return d


T = '"file":{"driver":"file","filename":"t.qcow2"}'

GOOD_NAMES = [
    'json:{"driver":"qcow2",%s}' % T,
    'json:{%s}' % T,
    'json:{"driver":"qcow2","file.filename":"t.qcow2"}',
    'json:{"driver":"qcow2","file":{"filename":"t.qcow2"}}',
    'json:{"driver":"qcow2",%s,"backing":null}' % T,
    'json:{"driver":"qcow2",%s,"read-only":true}' % T,
    'json:{"driver":"qcow2",%s,"read-only":"on"}' % T,
    'json:{"driver":"raw","file":{"driver":"file","filename":"t.qcow2"}}',
    'json:{"driver":"file","filename":"t.qcow2"}',
    'json:{"driver":"qcow2","file.filename":"t.qcow2","file":{"filename":"b.qcow2"}}',
    "json:{'driver':'qcow2','file':{'filename':'t.qcow2'}}",
    'json: {"driver":"qcow2","file":{"filename":"t.qcow2"}}',
    'json:{"driver":"qcow2","file":{"filename":"t.qcow2","driver":"file","locking":"off",'
    '"aio":"threads"},"node-name":"n","cache":{"direct":false,"no-flush":true},'
    '"discard":"unmap","detect-zeroes":"off","force-share":true,"lazy-refcounts":true}',
    'json:{"driver":"raw","file":{"driver":"file","filename":"r.raw"},"offset":512}',
    'json:{"driver":"raw","file":{"driver":"file","filename":"r.raw"},"offset":512,'
    '"size":4096}',
    'json:{"driver":"raw","file.filename":"r.raw","size":512.0}',
    'json:{"driver":"qed","file":{"filename":"q.qed"}}',
    'json:{"driver":"vdi","file":{"filename":"v.vdi"}}',
    'file:t.qcow2',
    'file:a:b.raw',
    './a:b.raw',
]

BAD_NAMES = [
    'json:{"driver":"qcow2","file":"t.qcow2"}',
    'json:{"filename":"t.qcow2"}',
    'json:{"driver":"qcow2",%s,"foo":1}' % T,
    'json:{"driver":"qcow2","file":{"driver":"file","filename":"t.qcow2","foo":1}}',
    'json:{"driver":"foo",%s}' % T,
    'json:{"driver":"qcow2"',
    'json:[1]',
    'json:',
    'json:  ',
    'json:"str"',
    'json:null',
    'json:{"driver":"qcow2","file":{"driver":"file"}}',
    'json:{"driver":"qcow2"}',
    'json:{"driver":"qcow2","filename":"t.qcow2"}',
    'json:{"driver":"qcow2","driver":"raw","file":{"filename":"b.qcow2"}}',
    'json:{"a":}',
    'json:{"a" 1}',
    'json:{"a":1,}',
    'json:{1:2}',
    'json:{"a":1 "b":2}',
    'json:{"a":tru}',
    'json:{"a":[1,}',
    'json:{"a":"\\x"}',
    'json:{"a":1}}',
    'json:{"a":[1 2]}',
    'json:{"driver":"raw","file":{"filename":"r.raw"},"read-only":1}',
    'json:{"driver":"raw","file":{"filename":"r.raw"},"a":[1,2]}',
    'json:{"driver":"raw","file":{"filename":"r.raw"},"a":{}}',
    'json:{"driver":"qcow2","file":{"filename":"t.qcow2"},"backing":"x"}',
    'json:{"driver":"raw","file":{"filename":"t.qcow2"},"backing.driver":"x"}',
    'json:{"driver":"qcow2",%s,"backing":{"driver":"qcow2","file":{"filename":"b.qcow2"}}}' % T,
    'json:{"driver":"qcow2","file":{"driver":"qcow2","filename":"r.raw"}}',
    'json:{"driver":"qcow2","file":{"filename":"file:t.qcow2"}}',
    'json:{"driver":"raw","file":{"filename":"r.raw"},"size":1e3}',
    'json:{"driver":"raw","file":{"filename":"r.raw"},"size":-1}',
    'json:{"driver":"raw","file":{"filename":"r.raw"},"size":true}',
    'json:{"driver":"raw","file":{"filename":"r.raw"},"offset":2097152}',
    'json:{"driver":"raw","file":{"filename":"r.raw"},"offset":512,"size":1048576}',
    'json:{"driver":"qcow2","file":{"filename":"r.raw"}}',
    'file:',
    'file:nonexist',
    'file:json:{"file":{"filename":"t.qcow2"}}',
    'a:b.raw',
]


@pytest.mark.parametrize('name', GOOD_NAMES + BAD_NAMES)
@pytest.mark.parametrize('out', [[], ['--output=json']])
def test_info_names(d, name, out):
    assert_same(d, 'info', *out, name)


@pytest.mark.parametrize('name', GOOD_NAMES[:12] + BAD_NAMES[:16])
def test_map_names(d, name):
    assert_same(d, 'map', name)
    assert_same(d, 'map', '--output=json', name)


@pytest.mark.parametrize('name', GOOD_NAMES[:8] + ['file:t.qcow2', 'file:a:b.raw']
                         + BAD_NAMES[:14])
def test_check_names(d, name):
    assert_same(d, 'check', name)
    assert_same(d, 'check', '--output=json', name)


@pytest.mark.parametrize('name', GOOD_NAMES[:6] + BAD_NAMES[:8])
def test_compare_names(d, name):
    assert_same(d, 'compare', name, 't.qcow2')
    assert_same(d, 'compare', 'b.qcow2', name)


@pytest.mark.parametrize('name', GOOD_NAMES[:4] + ['file:a:b.raw'] + BAD_NAMES[:6])
def test_measure_names(d, name):
    assert_same(d, 'measure', '-O', 'qcow2', name)


IMAGE_OPTS = [
    'driver=qcow2,file.filename=t.qcow2',
    'file.filename=t.qcow2',
    'driver=qcow2,file.driver=file,file.filename=t.qcow2',
    'driver=qcow2,file.filename=t.qcow2,backing=null',
    'driver=raw,file.filename=r.raw,size=1024',
    'driver=raw,file.filename=r.raw,size=1024,offset=1',
    'driver=raw,read-only=on,file.filename=r.raw,file.driver=file,file.locking=off',
    'driver=raw,file.filename=a:b.raw',
    'driver=raw,file.filename=r.raw,,x',
    'driver=raw,file.filename=r.raw,x=1',
    'driver=raw,file.filename=r.raw,driver=qcow2',
    'driver=raw,file.filename=r.raw,file=x',
    'driver=raw,file.filename=r.raw,size=512.5',
    't.qcow2',
    '',
    'driver=raw,,',
    '=raw',
    'file.filename=r.raw,',
    'driver=file,filename=r.raw',
    'driver=qcow2,file.filename=t.qcow2,backing.driver=raw,backing.file.filename=b.qcow2',
]


@pytest.mark.parametrize('spec', IMAGE_OPTS)
def test_image_opts(d, spec):
    assert_same(d, 'info', '--image-opts', spec)
    assert_same(d, 'info', '--image-opts', '--output=json', spec)
    assert_same(d, 'map', '--image-opts', spec)
    assert_same(d, 'check', '--image-opts', spec)
    assert_same(d, 'check', '--image-opts', '--output=json', spec)
    assert_same(d, 'compare', '--image-opts', spec, 'file.filename=r.raw')


@pytest.mark.parametrize('args', [
    ['info', '--image-opts', '-f', 'qcow2', 't.qcow2'],
    ['map', '--image-opts', '-f', 'raw', 'r.raw'],
    ['check', '--image-opts', '-f', 'raw', 'r.raw'],
    ['compare', '--image-opts', '-f', 'raw', 'r.raw', 'r.raw'],
    ['compare', '--image-opts', '-F', 'raw', 'file.filename=r.raw', 'r.raw'],
    ['compare', '--image-opts', 'driver=raw,file.filename=r.raw', 'file.filename=r.raw'],
    ['measure', '--image-opts', '--size', '1M'],
    ['measure', '--image-opts', '-f', 'qcow2', 'file.filename=t.qcow2'],
    ['measure', '-O', 'qcow2', '--image-opts', 'driver=qcow2,file.filename=t.qcow2'],
    ['info', '-f', 'raw', 'json:{"driver":"qcow2","file":{"filename":"t.qcow2"}}'],
    ['info', '-f', 'foo', 'json:{"driver":"qcow2","file":{"filename":"t.qcow2"}}'],
    ['resize', '--image-opts', '-f', 'raw', 'r.raw', '2M'],
])
def test_image_opts_and_format(d, args):
    assert_same(d, *args)


def test_short_form_boolean_warns(d):
    assert_same(d, 'info', '--image-opts', 'driver=raw,file.filename=r.raw,x')
    assert_same(d, 'info', '--image-opts', 'driver=raw,file.filename=r.raw,nox')


@pytest.mark.parametrize('ov', ['o3.qcow2', 'o4.qcow2', 'o5.qcow2'])
def test_json_backing_names(d, ov):
    """Overlays whose backing file name is a json: text (libvirt writes these after block
    jobs); the stored backing format wins over the json's driver (o5: qcow2 over raw)."""
    for args in (['info'], ['info', '--backing-chain'], ['info', '--output=json',
                                                         '--backing-chain'],
                 ['map'], ['map', '--output=json'], ['check'], ['compare', ov, 'r.raw']):
        if args[0] == 'compare':
            assert_same(d, *args)
        else:
            assert_same(d, *args, ov)


def test_resize_through_names(d):
    """resize writes through a json: and an --image-opts name to the file they name."""
    for tool in ('qemu', 'qimg'):
        qemu.qemu_img('create', '-q', '-f', 'qcow2', 'z-%s.qcow2' % tool, '1M', cwd=d,
                      check=True)
        rc, out, err = qemu.run(qemu.tool_path(tool), 'resize',
                                'json:{"driver":"qcow2","file":{"filename":"z-%s.qcow2"}}'
                                % tool, '2M', cwd=d)
        assert (rc, out, err) == (0, 'Image resized.\n', '')
        rc, out, err = qemu.run(qemu.tool_path(tool), 'resize', '--image-opts',
                                'driver=qcow2,file.filename=z-%s.qcow2' % tool, '3M', cwd=d)
        assert (rc, out, err) == (0, 'Image resized.\n', '')
    a = qemu.qemu_img('info', '--output=json', 'z-qemu.qcow2', cwd=d)[1]
    b = qemu.qemu_img('info', '--output=json', 'z-qimg.qcow2', cwd=d)[1]
    assert a.replace('z-qemu', 'z-qimg') == b
    assert '"virtual-size": 3145728' in b


def test_raw_window_reads(d):
    """raw's offset/size options select a window of the file: compare against a plain
    copy of that window, and map it."""
    name = 'json:{"driver":"raw","file":{"filename":"r.raw"},"offset":4096,"size":8192}'
    qemu.qemu_img('create', '-q', '-f', 'raw', 'w.raw', '8k', cwd=d, check=True)
    qemu.io(os.path.join(d, 'w.raw'), 'write -P 3 0 4k', fmt='raw', cwd=d)
    assert_same(d, 'compare', name, 'w.raw')
    assert_same(d, 'compare', '-f', 'raw', 'w.raw', name)
    assert_same(d, 'map', '--output=json', name)


@pytest.mark.parametrize('backing', [
    ('json:{"driver":"qcow2","file":{"driver":"file","filename":"b.qcow2"}}', 'qcow2'),
    ('json:{"driver":"raw","file":{"driver":"file","filename":"r.raw"}}', 'raw'),
    ('json:{"driver":"raw","file":{"driver":"file","filename":"r.raw"},"size":4096}', 'raw'),
    ('json:{"driver":"raw","file":{"driver":"file","filename":"r.raw"}', 'raw'),
    ('json:{"file":{"filename":"nonexist"}}', 'raw'),
    ('file:a:b.raw', 'raw'),
])
def test_create_with_named_backing(d, backing):
    """create -b with json:/file: backing names: the Formatting line (commas doubled), the
    size taken from the backing image, errors; then info/map of the overlay."""
    name, fmt = backing
    a, b = both(d, 'create', '-f', 'qcow2', '-b', name, '-F', fmt, 'c.qcow2')
    assert b == a
    if a[0] == 0:
        assert_same(d, 'info', '--backing-chain', 'c.qcow2')
        assert_same(d, 'map', '--output=json', 'c.qcow2')


def test_read_only_option_refuses_writes(d):
    assert_same(d, 'resize', '--image-opts', 'driver=raw,file.filename=r.raw,read-only=on', '2M')
    assert_same(d, 'resize', 'json:{"driver":"raw","file":{"filename":"r.raw"},"size":4096}',
                '2M')


def test_check_backing_null_skips_missing_backing(d):
    """"backing": null: neither tool opens the (here missing) backing file."""
    qemu.qemu_img('create', '-q', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2',
                  'm.qcow2', '1M', cwd=d, check=True)
    assert_same(d, 'check', 'm.qcow2')
    for name in ('json:{"driver":"qcow2","file":{"filename":"m.qcow2"},"backing":null}',):
        assert_same(d, 'check', name)
        assert_same(d, 'map', name)
        assert_same(d, 'compare', name, 'r.raw')
    assert_same(d, 'check', '--image-opts', 'driver=qcow2,file.filename=m.qcow2')


@pytest.mark.parametrize('target', ['file:x.qcow2', 'file:w:1.qcow2',
                                    'json:{"driver":"file","filename":"z.qcow2"}',
                                    'a:b.qcow2', 'nbd:localhost:10809'])
def test_create_target_names(tmp_path, target):
    """create's target: "file:NAME" creates NAME (./NAME with a colon), other protocol
    prefixes are refused before anything is printed, as qemu's bdrv_find_protocol."""
    res = {}
    for tool in ('qemu', 'qimg'):
        d = tmp_path / tool
        d.mkdir()
        res[tool] = qemu.run(qemu.tool_path(tool), 'create', '-f', 'qcow2', target, '1M',
                             cwd=str(d))
        res[tool + '-files'] = sorted(os.listdir(str(d)))
        if res[tool][0] == 0:
            res[tool + '-info'] = qemu.run(qemu.tool_path(tool), 'info', target, cwd=str(d))
    assert res['qimg'] == res['qemu'] or target.startswith('nbd:')
    assert res['qimg-files'] == res['qemu-files']
    assert res.get('qimg-info') == res.get('qemu-info')


def test_data_file_option(d):
    """qcow2's data-file.filename option replaces the name in the header (iotest 061 uses
    it with --image-opts); a missing one fails as in qemu."""
    qemu.qemu_img('create', '-q', '-f', 'qcow2', '-o', 'data_file=df.data', 'df.qcow2', '1M',
                  cwd=d, check=True)
    qemu.io(os.path.join(d, 'df.qcow2'), 'write -P 5 0 64k', fmt='qcow2', cwd=d)
    os.rename(os.path.join(d, 'df.data'), os.path.join(d, 'df2.data'))
    spec = 'data-file.filename=df2.data,file.filename=df.qcow2'
    for args in (['info'], ['map'], ['map', '--output=json'], ['check'],
                 ['check', '--output=json'], ['compare', '-U', spec, 'file.filename=df.qcow2'],
                 ['measure', '-O', 'qcow2']):
        if args[0] == 'compare':
            assert_same(d, 'compare', '--image-opts', spec, 'driver=raw,file.filename=df2.data')
        else:
            assert_same(d, *args[:1], '--image-opts', *args[1:], spec)
    assert_same(d, 'map', 'json:{"file":{"filename":"df.qcow2"},"data-file":{"filename":"x"}}')
    assert_same(d, 'map', 'json:{"file":{"filename":"df.qcow2"},"data-file":"x"}')
    assert_same(d, 'check', 'df.qcow2')
