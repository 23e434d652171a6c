"""Memory geometry (method.md §10): where a trained run's memories lie, labelled by the task's state.

A trajectory is the memory after reading each prefix of a sequence, [B, T+1, K, D]; entry t is the
memory of x_0..x_{t-1} (entry 0: the initial memory, nothing read yet).
- teacher: the encoder's memory of every prefix (`Encoder.prefix_memories`; a bidirectional encoder is
  run on each prefix left-padded to the full length, which it ignores);
- rnn: the RNN's initial memory, then `Networks.rollout` over the sequence.

`task_states` names the task state after each prefix, from the inputs alone:
- retrieval: 'start' (no marker yet), 'marker' (the marker was the last token), then 'hold v' once the
  needle v has been read (until the end). A memory that solves the task needs no more states than these:
  a finite-state machine with num_symbols + 2 states.
- copy: while the string s is read, the prefix read so far ('' , 's0', 's0s1', ...: the nodes of a tree
  of depth M); from the separator on, 'w:' + the part of the answer still to be written. (For the
  reversed copy the part still to write after k outputs is the reverse of s[:M-k], so the write phase
  climbs back up the same tree.)
- any other task: the step t.

`separation` scores how discrete the states are: the nearest-centroid accuracy of each memory's label
(centroids per label, in the memory space itself, no projection) and the ratio of the mean distance of a
memory to its centroid to the mean distance between distinct centroids (0: every state a single point).

Plots: memories of Z = K*D <= 3 numbers are drawn in their own coordinates (D = 2: on the circle of
radius sqrt(2) that RMS normalisation allows; D = 3: on the sphere); larger memories are projected to 2-D
by PCA fitted on the teacher's memories. Trajectories are grey lines, memories dots coloured by state,
and each state's name is written at its centroid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from smtjax import plotting, runs
from smtjax import workdir as workdir_lib
from smtjax.errors import ConfigError
from smtjax.models import Networks

SOURCES = ('teacher', 'rnn')


# -------------------------------------------------------------------------------------- task states

def _retrieval_states(x, n: int):
  B, T = x.shape
  labels = np.zeros((B, T + 1), np.int64)  # 0 start, 1 marker, 2 + v hold v
  state = np.zeros(B, np.int64)
  for t in range(T):
    tok = x[:, t]
    hold = (state == 1) & (tok >= 0) & (tok < n)
    state = np.where(hold, 2 + tok, state)
    state = np.where((state == 0) & (tok == n), 1, state)
    labels[:, t + 1] = state
  return labels, ['start', 'marker'] + [f'hold {v}' for v in range(n)]


def _copy_states(x, n: int, reverse: bool):
  """Tree nodes by name; padding keeps the previous label."""
  B, T = x.shape
  names, index = [], {}
  def label(name):
    if name not in index:
      index[name] = len(names)
      names.append(name)
    return index[name]
  labels = np.zeros((B, T + 1), np.int64)
  for b in range(B):
    s, phase, written = [], 'read', 0
    labels[b, 0] = label("''")
    for t in range(T):
      tok = int(x[b, t])
      if tok >= 0:
        if phase == 'read' and tok == n:
          phase = 'write'
        elif phase == 'read':
          s.append(tok)
        else:
          written += 1
      if phase == 'read':
        name = ''.join(map(str, s)) or "''"
      else:
        answer = s[::-1] if reverse else s
        name = 'w:' + (''.join(map(str, answer[written:])) or "''")
      labels[b, t + 1] = label(name)
  return labels, names


def task_states(data_config, x) -> tuple[np.ndarray, list[str]]:
  """(labels [B, T+1] into `names`, names): the task state after each prefix of x [B, T] (module doc)."""
  x = np.asarray(x)
  opts = data_config.options
  if data_config.name == 'retrieval':
    return _retrieval_states(x, int(opts.num_symbols))
  if data_config.name == 'copy':
    return _copy_states(x, int(opts.num_symbols), bool(opts.reverse))
  B, T = x.shape
  return np.broadcast_to(np.arange(T + 1), (B, T + 1)).copy(), [f't={t}' for t in range(T + 1)]


# -------------------------------------------------------------------------------------- trajectories

def teacher_trajectories(nets: Networks, params, x):
  """[B, T+1, K, D]: entry t is the encoder's memory of x[:, :t]."""
  if nets.cfg.encoder_attention == 'causal':
    return nets.prefix_memories(params, x)
  B, T = x.shape
  # Prefix t left-padded to length T: window [b, t, j] = x[b, j - (T - t)], or -1 where that is < 0.
  idx = jnp.arange(T)[None, :] - (T - jnp.arange(T + 1))[:, None]  # [T+1, T]
  windows = jnp.where(idx[None] >= 0, jnp.take(x, jnp.clip(idx, 0), axis=1), -1)  # [B, T+1, T]
  mems = nets.encode(params, windows.reshape(B * (T + 1), T))
  return mems.reshape((B, T + 1) + mems.shape[1:])


def rnn_trajectories(nets: Networks, params, x):
  """[B, T+1, K, D]: the RNN's initial memory, then its memory after each input."""
  mem0 = nets.initial_memory(params, x.shape[0])
  return jnp.concatenate([mem0[:, None], nets.rollout(params, mem0, x)], axis=1)


def trajectories(nets: Networks, params, x, source: str):
  if source not in SOURCES:
    raise ConfigError(f'unknown memory source {source!r}; expected one of {", ".join(SOURCES)}')
  fn = teacher_trajectories if source == 'teacher' else rnn_trajectories
  return np.asarray(jax.device_get(jax.jit(fn, static_argnums=0)(nets, params, jnp.asarray(x))), np.float64)


# -------------------------------------------------------------------------------------- measures

def separation(points_NxZ, labels_N) -> dict:
  """Nearest-centroid accuracy and within/between distance ratio of labelled points (module doc)."""
  points, labels = np.asarray(points_NxZ, np.float64), np.asarray(labels_N)
  ids = np.unique(labels)
  centroids = np.stack([points[labels == i].mean(axis=0) for i in ids])
  d = np.linalg.norm(points[:, None, :] - centroids[None], axis=-1)  # [N, C]
  accuracy = float(np.mean(ids[np.argmin(d, axis=1)] == labels))
  within = float(np.mean(d[np.arange(len(labels)), np.searchsorted(ids, labels)]))
  if len(ids) > 1:
    cd = np.linalg.norm(centroids[:, None] - centroids[None], axis=-1)
    between = float(np.mean(cd[~np.eye(len(ids), dtype=bool)]))
  else:
    between = float('nan')
  return {'accuracy': accuracy, 'within': within, 'between': between,
          'ratio': within / between if between > 0 else float('nan'), 'num_states': int(len(ids))}


class PCA:
  """Principal axes of fitted points (float64 SVD)."""

  def __init__(self, points_NxZ, dims: int = 2):
    p = np.asarray(points_NxZ, np.float64)
    self.mean = p.mean(axis=0)
    _, s, vt = np.linalg.svd(p - self.mean, full_matrices=False)
    self.axes = vt[:dims]
    self.explained = float(np.sum(s[:dims] ** 2) / max(np.sum(s ** 2), 1e-30))

  def __call__(self, points_NxZ):
    return (np.asarray(points_NxZ, np.float64) - self.mean) @ self.axes.T


# -------------------------------------------------------------------------------------- workdir level

def memory_space(nets: Networks, params, config, x, sources=SOURCES) -> dict:
  """For each source: 'memories' [B, T+1, Z], 'coords' [B, T+1, P<=3], 'separation' (in the memory
  space); plus 'labels', 'names' and 'projection' ('identity' when Z <= 3, else 'pca' fitted on the
  first source's memories, with its explained variance)."""
  labels, names = task_states(config.data, x)
  out = {'labels': labels, 'names': names, 'sources': {}}
  pca = None
  for source in sources:
    m = trajectories(nets, params, x, source)
    B, T1 = m.shape[:2]
    flat = m.reshape(B * T1, -1)
    if flat.shape[1] <= 3:
      coords, out['projection'] = flat, 'identity'
    else:
      pca = pca or PCA(flat, 2)
      coords, out['projection'], out['pca_explained'] = pca(flat), 'pca', pca.explained
    out['sources'][source] = {'memories': m.reshape(B, T1, -1), 'coords': coords.reshape(B, T1, -1),
                              'separation': separation(flat, labels.reshape(-1))}
  return out


def geometry_workdir(workdir: str, out: str | None = None, num_sequences: int = 64,
                     sources=SOURCES) -> dict:
  """Memory spaces of a trained run on `num_sequences` held-out sequences: writes memory_<source>.png
  and geometry.json (separation per source, the state names and the projection) into `out` (default
  workdir); returns the json's content."""
  config, params, nets, source = runs.load_run(workdir)
  x = source.get_batch('test', 0, 0, num_sequences)['x']
  space = memory_space(nets, params, config, x, sources)
  out = epath.Path(out or workdir)
  out.mkdir(parents=True, exist_ok=True)
  D = nets.mem_dim
  z = nets.num_mem_tokens * D
  radius = float(np.sqrt(D)) if z == 2 else None
  result = {'task': config.data.name, 'num_sequences': int(num_sequences), 'mem_tokens': nets.num_mem_tokens,
            'mem_dim': D, 'projection': space['projection'], 'states': space['names'], 'sources': {}}
  if 'pca_explained' in space:
    result['pca_explained'] = space['pca_explained']
  for s, r in space['sources'].items():
    path = str(out / f'memory_{s}.png')
    what = {'teacher': 'teacher encoder memories', 'rnn': 'RNN memories (rolled from its initial memory)'}[s]
    sep = r['separation']
    plotting.memory_space(r['coords'], space['labels'], space['names'], path, radius=radius,
                      title=f'{config.data.name}: {what}\nZ={z} ({space["projection"]}); '
                            f'nearest-state accuracy {sep["accuracy"]:.2f}, within/between {sep["ratio"]:.2f}')
    result['sources'][s] = dict(sep, plot=path)
  workdir_lib.write_json(out / 'geometry.json', result)
  return result
