r"""See a batch of any config's data: decoded text, or a PNG grid of images (smtjax.data.visualize).

  python -m experiments.visualize --config=configs/mnist.py --out=grid.png
  python -m experiments.visualize --config=configs/tinystories.py:small --config.data.path=DIR --num=4
"""

from absl import app, flags
from etils import epath
from ml_collections import config_flags

from experiments import _cli
from smtjax.data import make_source
from smtjax.data.visualize import batch_to_text, save_image_grid

_CONFIG = config_flags.DEFINE_config_file('config', None, 'a configs/*.py file (with :variant)', lock_config=True)
_OUT = flags.DEFINE_string('out', '', 'PNG for image data (default grid.png); a text file for text (default: print)')
_SPLIT = flags.DEFINE_enum('split', 'train', ['train', 'test'], 'which split to draw from')
_INDEX = flags.DEFINE_integer('index', 0, 'which batch')
_NUM = flags.DEFINE_integer('num', 16, 'how many sequences')
_SCALE = flags.DEFINE_integer('scale', 4, 'image pixels per data pixel')
flags.mark_flag_as_required('config')


def main(argv):
  _cli.start(argv)
  config = _CONFIG.value
  with _cli.user_errors():
    source = make_source(config.data, config.seed)
  batch = source.get_batch(_SPLIT.value, _INDEX.value, 0, _NUM.value)
  info = source.info
  if info.kind == 'image':
    out = _OUT.value or 'grid.png'
    save_image_grid(info, batch['x'], out, scale=_SCALE.value)
    print(f'wrote {_NUM.value} sequences of {info.seq_len} pixels ({config.data.name}, '
          f'{info.image_shape[0]}x{info.image_shape[1]} images, {_SPLIT.value} batch {_INDEX.value}) to {out}')
    return
  texts = batch_to_text(info, batch['x'])
  body = ''.join(f'--- {config.data.name} {_SPLIT.value} batch {_INDEX.value} row {i} ---\n{t}\n'
                 for i, t in enumerate(texts))
  if _OUT.value:
    epath.Path(_OUT.value).write_text(body)
    print(f'wrote {len(texts)} sequences to {_OUT.value}')
  else:
    print(body, end='')


if __name__ == '__main__':
  app.run(main)
