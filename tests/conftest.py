import itertools

import pytest
from mmengine.registry import DefaultScope

import freesolo_mmdet  # noqa: F401  (registers the plugin)

_scope_ids = itertools.count()


@pytest.fixture(autouse=True)
def mmdet_default_scope():
    """Build every test's registry lookups in the ``mmdet`` scope, as configs do with
    ``default_scope='mmdet'``; an earlier test's Runner otherwise leaves ``mmengine`` current."""
    DefaultScope.get_instance(f'test-{next(_scope_ids)}', scope_name='mmdet')
    yield
