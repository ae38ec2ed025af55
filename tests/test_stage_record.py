"""StageRecord: a stage reruns exactly when its inputs changed, and says which."""
import json

from freesolo_mmdet.apis.stage_record import StageRecord


def finished(tmp_path, inputs: dict) -> StageRecord:
    out = tmp_path / 'out.json'
    out.write_text('{}')
    record = StageRecord(str(tmp_path / '.records'), 'labels_round2', inputs, [str(out)])
    record.finish()
    return record


def test_upstreams_name_the_one_that_changed(tmp_path):
    """A stage with two upstreams (the merge of pseudo labels and earlier labels) names the changed one."""
    inputs = dict(upstream=dict(pseudo_labels='aa', labels_round1='bb'), iou_thr=0.5)
    finished(tmp_path, inputs)
    out = [str(tmp_path / 'out.json')]
    assert StageRecord(str(tmp_path / '.records'), 'labels_round2', inputs, out).changes() is None
    changed = dict(inputs, upstream=dict(pseudo_labels='cc', labels_round1='bb'))
    assert StageRecord(str(tmp_path / '.records'), 'labels_round2', changed, out).changes() == \
        'pseudo_labels changed'
    also = dict(changed, iou_thr=0.4)
    assert StageRecord(str(tmp_path / '.records'), 'labels_round2', also, out).changes() == \
        'iou_thr 0.5 -> 0.4, pseudo_labels changed'


def test_a_record_of_another_shape_reruns_the_stage_without_failing(tmp_path):
    """Before 2026-12-01 the merge stage stored its upstreams as a list: a rerun with a changed round 1
    failed with AttributeError ('list' object has no attribute 'keys') instead of redoing the merge."""
    finished(tmp_path, dict(upstream=[dict(pseudo_labels='aa'), dict(labels_round1='bb')], iou_thr=0.5))
    stored = json.loads((tmp_path / '.records' / 'labels_round2.json').read_text())
    assert isinstance(stored['inputs']['upstream'], list)
    now = dict(upstream=dict(pseudo_labels='cc', labels_round1='bb'), iou_thr=0.5)
    record = StageRecord(str(tmp_path / '.records'), 'labels_round2', now, [str(tmp_path / 'out.json')])
    assert record.changes() == 'upstream changed'
