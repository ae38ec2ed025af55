"""Fresh or redone, never stale: what each pipeline stage was made from.

A stage's record (``W/.records/<stage>.json``) stores the stage's inputs as json: the image list with
sizes and modification times, the config, the arguments, and the identity of upstream outputs. A rerun
skips a stage whose record matches and whose outputs exist; otherwise it says which inputs changed and
redoes it. Downstream stages hold their upstream's identity among their inputs, so they follow.
"""
import hashlib
import json
import os
import os.path as osp
import shutil
from typing import Dict, List, Optional, Sequence

from freesolo_mmdet.free_mask.coco_writer import dump_json_atomic

__all__ = ['image_fingerprint', 'file_identity', 'StageRecord']


def image_fingerprint(images: Sequence[dict]) -> List[list]:
    """``[file_name, size, mtime_ns]`` of each image (``path`` is stat-ed; a missing file has -1s)."""
    rows = []
    for image in images:
        try:
            stat = os.stat(image['path'])
            rows.append([image['file_name'], stat.st_size, stat.st_mtime_ns])
        except OSError:
            rows.append([image['file_name'], -1, -1])
    return rows


def file_identity(path: str) -> Optional[list]:
    """``[absolute path, size, mtime_ns]`` of an output file (None if it does not exist): what a
    downstream stage records of it."""
    if not osp.exists(path):
        return None
    stat = os.stat(path)
    return [osp.abspath(path), stat.st_size, stat.st_mtime_ns]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _describe_images(old: list, new: list) -> str:
    old_map, new_map = {row[0]: row[1:] for row in old}, {row[0]: row[1:] for row in new}
    added = len(new_map.keys() - old_map.keys())
    removed = len(old_map.keys() - new_map.keys())
    modified = sum(old_map[name] != new_map[name] for name in old_map.keys() & new_map.keys())
    return f'{added} added, {removed} removed, {modified} modified'


class StageRecord:
    """The record of one stage's inputs in ``record_dir/<name>.json``.

    Args:
        record_dir (str): the folder of the records (``W/.records``).
        name (str): the stage's name, as printed.
        inputs (dict): json-able inputs; ``images`` (an :func:`image_fingerprint`) is described by
            what was added, removed or modified when it changes.
        outputs (Sequence[str]): files or folders the stage makes; removed when it is redone, and a
            missing one makes it run again.
        scratch (Sequence[str]): what an unfinished run leaves to resume from (e.g. ``OUT.parts``);
            removed when the stage is redone from scratch, not required afterwards.
    """

    def __init__(self, record_dir: str, name: str, inputs: Dict, outputs: Sequence[str],
                 scratch: Sequence[str] = ()) -> None:
        self.path = osp.join(record_dir, name.replace(' ', '_') + '.json')
        self.name = name
        self.inputs = json.loads(json.dumps(inputs, sort_keys=True, default=str))  # as it reads back
        self.outputs = list(outputs)
        self.scratch = list(scratch)

    @property
    def identity(self) -> str:
        """Hash of the inputs and of the outputs' sizes and times: a downstream stage's input."""
        return _digest([self.inputs, [file_identity(path) for path in self.outputs]])

    def _stored(self) -> Optional[dict]:
        if not osp.isfile(self.path):
            return None
        with open(self.path) as f:
            return json.load(f)

    def changes(self) -> Optional[str]:
        """None if the stage is done with these inputs; else why it must (re)run."""
        stored = self._stored()
        if stored is None:
            return 'not run yet' if not any(osp.exists(p) for p in self.outputs + self.scratch) else \
                'its outputs have no record of what they were made from'
        old = stored['inputs']
        changed = []
        for key in sorted(old.keys() | self.inputs.keys()):
            if old.get(key) == self.inputs.get(key):
                continue
            if key == 'images' and key in old and key in self.inputs:
                changed.append(f'images changed ({_describe_images(old[key], self.inputs[key])})')
            elif key == 'upstream' and all(isinstance(r.get(key) or {}, dict) for r in (old, self.inputs)):
                before, now = old.get(key) or {}, self.inputs.get(key) or {}
                names = sorted(name for name in before.keys() | now.keys() if before.get(name) != now.get(name))
                changed.append(f'{" and ".join(names)} changed')
            elif isinstance(old.get(key), (str, int, float, bool, type(None))) and \
                    isinstance(self.inputs.get(key), (str, int, float, bool, type(None))):
                changed.append(f'{key} {old.get(key)!r} -> {self.inputs.get(key)!r}')
            else:
                changed.append(f'{key} changed')
        if changed:
            return ', '.join(changed)
        if not stored.get('done'):
            return 'unfinished'
        missing = [p for p in self.outputs if not osp.exists(p)]
        if missing:
            return f'output missing: {missing[0]}'
        return None

    def upstream(self) -> Dict[str, str]:
        """``{name: identity}``: what a downstream stage puts under its ``upstream`` input."""
        return {self.name: self.identity}

    def is_started_with_same_inputs(self) -> bool:
        """Whether an unfinished run with these very inputs left its state behind (resume it)."""
        stored = self._stored()
        return stored is not None and stored['inputs'] == self.inputs

    def start(self, clear: bool) -> None:
        """Record the inputs (not done yet); with ``clear`` remove the outputs of an earlier run first."""
        if clear:
            for path in self.outputs + self.scratch:
                if osp.isdir(path) and not osp.islink(path):
                    shutil.rmtree(path)
                elif osp.lexists(path):
                    os.remove(path)
        dump_json_atomic(dict(name=self.name, done=False, inputs=self.inputs), self.path)

    def finish(self, **result) -> None:
        """Mark the stage done, with json-able results (e.g. the final checkpoint)."""
        dump_json_atomic(dict(name=self.name, done=True, inputs=self.inputs, result=result), self.path)

    def result(self) -> dict:
        """The results given to :meth:`finish`."""
        stored = self._stored()
        return (stored or {}).get('result', {})

    def invalidate(self) -> None:
        """Forget the record (the stage reruns next time)."""
        if osp.exists(self.path):
            os.remove(self.path)
