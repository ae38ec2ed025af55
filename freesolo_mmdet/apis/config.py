"""Configs for the stages: loaded with command-line overrides that must name existing keys, and
output paths checked before any work is done."""
import difflib
import inspect
import os
import os.path as osp
import tempfile
from typing import Dict, Iterable, Optional

from mmengine.config import Config, ConfigDict
from mmengine.runner import Runner

__all__ = ['InputError', 'load_config', 'check_cfg_options', 'check_custom_hooks', 'check_keys', 'check_writable']

#: top-level keys that mmengine's Runner reads although a config need not define them
RUNNER_KEYS = frozenset(inspect.signature(Runner.__init__).parameters) | {
    'find_unused_parameters', 'model_wrapper_cfg', 'runner_type', 'compile', 'strategy', 'launcher',
    'resume', 'load_from', 'work_dir', 'randomness', 'experiment_name', 'custom_hooks', 'auto_scale_lr'}


class InputError(ValueError):
    """A bad input of the user's (path, image folder, option, config key): the command lines print its
    message on one line and exit with code 2."""


def _component_accepts(type_name, key: str) -> bool:
    """Whether the registered class ``type_name`` (looked up in mmdet's registries, which reach
    mmengine's) takes an argument ``key``; unknown types and ``**kwargs`` count as yes."""
    import mmdet.registry
    from mmengine.registry import Registry
    if not isinstance(type_name, str):
        return True
    for registry in vars(mmdet.registry).values():
        if not isinstance(registry, Registry):
            continue
        try:
            cls = registry.get(type_name)
        except Exception:  # a scope it cannot import
            cls = None
        if cls is None:
            continue
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError):
            return True
        return key in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
    return True


def _suggest(key: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1)
    return f'; did you mean {close[0]!r}?' if close else ''


def check_cfg_options(cfg: Config, options: Dict[str, object], what: str = '--cfg-options') -> None:
    """Refuse overrides that would silently create a key nothing reads.

    Every dotted key must exist in ``cfg`` up to its last part. The last part may be new only inside
    a component (a dict with ``type``) whose class takes an argument of that name, or, at the top
    level, when it is one of the keys mmengine's Runner reads (``load_from``, ``find_unused_parameters``,
    ...). List items are addressed by index (``pipeline.2.scale``). So a typo fails before any work,
    not when the stage that builds the component starts.

    Raises:
        InputError: naming the key and the closest existing one.
    """
    for key in options:
        node, parts = cfg._cfg_dict if isinstance(cfg, Config) else cfg, key.split('.')
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, (list, tuple)):
                if not part.isdigit() or int(part) >= len(node):
                    raise InputError(f'{what} {key}: {".".join(parts[:depth]) or "the config"} is a list of '
                                     f'{len(node)} items; {part!r} is no index of it')
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise InputError(f'{what} {key}: {".".join(parts[:depth])} is a {type(node).__name__}, not a dict')
            if part not in node:
                allowed = (depth == 0 and part in RUNNER_KEYS) or \
                    (last and depth > 0 and 'type' in node and _component_accepts(node['type'], part))
                if not allowed:
                    where = '.'.join(parts[:depth]) or 'the config'
                    raise InputError(f'{what} {key}: {part!r} is not a key of {where}{_suggest(part, node)}')
                break
            node = node[part]


def check_keys(given: Dict[str, object], known: Iterable[str], what: str) -> None:
    """Refuse keys of ``given`` (e.g. a config's ``free_mask_cfg``) that are not in ``known``."""
    known = list(known)
    for key in given:
        if key not in known:
            raise InputError(f'{what}: unknown key {key!r}{_suggest(key, known)} (known: {", ".join(known)})')


def check_custom_hooks(cfg: Config) -> None:
    """Refuse a ``custom_hooks`` entry whose ``type`` names no registered hook (mmdet's registry, which reaches
    mmengine's and the scopes it names). The runner would refuse it only when training starts, and the stages
    that build their models outside a runner (Free Mask, pseudo labels, predictions) would ignore it: a misspelt
    ``ChannelsLastHook`` would silently run them in the other memory format.

    Raises:
        InputError: naming the type and the closest registered hook.
    """
    from mmdet.registry import HOOKS
    hooks = cfg.get('custom_hooks') or []
    if not isinstance(hooks, (list, tuple)):
        raise InputError(f'custom_hooks must be a list of hook dicts, got {type(hooks).__name__}')
    for hook in hooks:
        type_name = hook.get('type') if isinstance(hook, dict) else None
        if not isinstance(type_name, str):
            continue  # a class given directly, or not a dict: the runner's own check
        try:
            found = HOOKS.get(type_name)
        except Exception:  # a scope that cannot be imported
            found = None
        if found is None:
            known = set(HOOKS.module_dict) | set(HOOKS.parent.module_dict if HOOKS.parent else ())
            raise InputError(f'custom_hooks: no hook is registered as {type_name!r}{_suggest(type_name, known)}')


def load_config(path: str, cfg_options: Optional[Dict[str, object]] = None) -> Config:
    """``Config.fromfile(path)`` with ``cfg_options`` merged after :func:`check_cfg_options`, then
    :func:`check_custom_hooks`.

    Raises:
        InputError: no such file, an override names no existing key, or a custom hook no registered hook.
    """
    if not osp.isfile(path):
        raise InputError(f'no such config: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    check_custom_hooks(cfg)
    return cfg


def check_writable(path: str, what: str = '--out') -> str:
    """Make sure a file can be written at ``path`` before the work that produces it starts.

    Creates its folder, and writes and removes a temporary file there. Returns the absolute path.

    Raises:
        InputError: ``path`` is a folder, or its folder cannot be created or written.
    """
    path = osp.abspath(path)
    if osp.isdir(path):
        raise InputError(f'{what} {path} is a folder; give a file name, e.g. {osp.join(path, "out.json")}')
    folder = osp.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix='.write_test_'):
            pass
    except OSError as e:
        raise InputError(f'{what} {path}: cannot write in {folder}: {e.strerror or e}') from e
    return path


def as_dict(cfg) -> dict:
    """A plain dict of a Config / ConfigDict (for hashing and json)."""
    if isinstance(cfg, Config):
        return cfg.to_dict()
    if isinstance(cfg, ConfigDict):
        return cfg.to_dict()
    return dict(cfg)
